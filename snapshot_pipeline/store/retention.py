"""Tiered retention of snapshot partitions that keeps every retained answer exact.

Policy, with ``R`` the reference day (the last closed day in the business time zone):

* **daily tier**: every partition of the last ``days`` days (``R - days < D``) is kept;
* **monthly tier**: an older partition is kept when it is the last day of its month and that
  month is one of the last ``months`` months (``R``'s month counting as the first);
* every other published partition is removed: its index rows and its manifest row, and it is
  retired from the Delta table by one Delta commit (its files stay readable by time travel for
  the history window, ``SNAPSHOT_HISTORY_DAYS``, until :func:`apply_retention`'s vacuum).

Why removing is not just deleting: index rows are written only where a balance changed since
the previous published partition, so the only row that anchors an unchanged balance may belong
to a partition being removed. Removed partitions therefore come in *groups*, each the run of
published partitions strictly between two retained ones ``previous < removed... < anchor``.
For each group, in ONE index transaction under the global commit lock (so a snapshot commit
never interleaves):

1. the index rows of ``anchor`` are re-diffed against ``previous`` (against nothing, i.e. a full
   anchor of all rows, when ``anchor`` becomes the oldest partition);
2. the index rows of the removed partitions are deleted (a monthly index partition holding no
   retained partition is dropped whole);
3. their manifest rows are deleted.

4. a retired generation of each removed partition is recorded (``partition_versions``, no files).

Readers see the index before or after the transaction, both exact. Each removed partition is then
retired from the Delta table (one commit each, replayable like a publish: a crash in between
leaves it to the next lock holder, the recovery sensor or the next retention run). Then the Delta
tables are vacuumed: files no version of the history window names are deleted, and generations
older than the window are forgotten. Every step is idempotent, and partitions being materialized
right now (their advisory lock is held) are skipped and reported, never waited for.

This module never imports dagster; ``defs/maintenance/`` wraps it in a job and schedule.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

from snapshot_pipeline import calendar, db
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import catalog, delta, generations, index, parquet, publication, recovery
from snapshot_pipeline.store.diff import diff_files
from snapshot_pipeline.store.location import REPORTS_DIR, Store
from snapshot_pipeline.store.spool import IndexSpool

logger = logging.getLogger(__name__)


class RetentionError(RuntimeError):
    """Retention cannot run as asked (bad policy or reference date); nothing was changed."""


@dataclasses.dataclass(frozen=True)
class Policy:
    """Keep daily partitions for ``days`` days, then month-end partitions for ``months`` months."""

    days: int
    months: int

    def __post_init__(self) -> None:
        if isinstance(self.days, bool) or not isinstance(self.days, int) or self.days < 1:
            raise RetentionError(f"retention days must be an integer >= 1, got {self.days!r}")
        if isinstance(self.months, bool) or not isinstance(self.months, int) or self.months < 0:
            raise RetentionError(f"retention months must be an integer >= 0, got {self.months!r}")

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(settings.retention_days, settings.retention_months)

    def keeps(self, date: dt.date, reference: dt.date) -> bool:
        if (reference - date).days < self.days:
            return True
        return calendar.is_month_end(date) and calendar.months_back(date, reference) < self.months

    def as_dict(self) -> dict:
        return {"retention_days": self.days, "retention_months": self.months}


@dataclasses.dataclass(frozen=True)
class Group:
    """Published partitions to remove that lie strictly between two retained ones.

    ``anchor`` is the retained partition right after them (None when none follows); its index
    rows are re-diffed against ``previous``, the retained partition right before them (None when
    ``anchor`` becomes the oldest partition: a full anchor of all its rows).
    """

    previous: dt.date | None
    anchor: dt.date | None
    remove: tuple[dt.date, ...]

    def as_dict(self) -> dict:
        return {
            "previous": _iso(self.previous),
            "anchor": _iso(self.anchor),
            "anchor_kind": None if self.anchor is None else ("full" if self.previous is None else "re-diff"),
            "remove": [d.isoformat() for d in self.remove],
        }


@dataclasses.dataclass
class Plan:
    """What a retention run would do, computed from the manifest and the Parquet listing."""

    reference: dt.date
    policy: Policy
    kept: list[dt.date]
    groups: list[Group]
    orphan_dirs: list[dt.date]
    remove_bytes: int
    remove_index_rows: int

    @property
    def remove(self) -> list[dt.date]:
        return sorted(d for g in self.groups for d in g.remove)

    def as_dict(self) -> dict:
        return {
            "reference_date": self.reference.isoformat(),
            **self.policy.as_dict(),
            "partitions_kept": len(self.kept),
            "oldest_kept": _iso(self.kept[0] if self.kept else None),
            "partitions_to_remove": [d.isoformat() for d in self.remove],
            "orphan_parquet_dirs": [d.isoformat() for d in self.orphan_dirs],
            "bytes_to_free": self.remove_bytes,
            "index_rows_to_delete": self.remove_index_rows,
            "groups": [g.as_dict() for g in self.groups],
        }


def _iso(date: dt.date | None) -> str | None:
    return date.isoformat() if date else None


def make_plan(conn: psycopg.Connection, store: Store, policy: Policy, reference: dt.date) -> Plan:
    """The groups of partitions to remove, oldest first, and the orphan Parquet directories."""
    entries = index.all_partitions(conn)
    by_date = {e.snapshot_date: e for e in entries}
    kept: list[dt.date] = []
    groups: list[Group] = []
    previous: dt.date | None = None
    pending: list[dt.date] = []
    for entry in entries:
        date = entry.snapshot_date
        if policy.keeps(date, reference):
            if pending:
                groups.append(Group(previous, date, tuple(pending)))
                pending = []
            kept.append(date)
            previous = date
        else:
            pending.append(date)
    if pending:
        groups.append(Group(previous, None, tuple(pending)))
    versioned = {row[0] for row in conn.execute("SELECT DISTINCT snapshot_date FROM snapshot_index.partition_versions")}
    orphans = [d for d in parquet.partition_dates(store)
               if d not in by_date and d not in versioned and not policy.keeps(d, reference)]
    removed = [by_date[d] for g in groups for d in g.remove]
    return Plan(
        reference=reference,
        policy=policy,
        kept=kept,
        groups=groups,
        orphan_dirs=orphans,
        remove_bytes=sum(e.bytes for e in removed),
        remove_index_rows=sum(e.index_rows for e in removed),
    )


# ----------------------------------------------------------------------------------------------- applying


def _months(dates) -> list[dt.date]:
    return sorted({d.replace(day=1) for d in dates})


def _delete_index_rows(conn: psycopg.Connection, remove: list[dt.date]) -> int:
    """Delete the index rows of ``remove`` (the monthly partitions left empty are dropped after the transaction,
    outside the commit lock: :func:`index.drop_empty_months`)."""
    deleted = 0
    for month in _months(remove):
        name = index.month_partition_name(month)
        if not index.partition_exists(conn, name):
            continue
        in_month = [d for d in remove if d.replace(day=1) == month]
        cur = conn.execute(sql.SQL("DELETE FROM {} WHERE snapshot_date = ANY(%s)").format(
            sql.Identifier(index.SCHEMA, name)), (in_month,))
        deleted += cur.rowcount
    return deleted


def _apply_group(settings: Settings, conn: psycopg.Connection, group: Group, work_dir: Path, log) -> dict:
    """Re-anchor, delete index and manifest rows in one transaction, then delete the Parquet directories."""
    store = Store.at(settings.storage_uri)
    out = {**group.as_dict(), "status": "done", "index_rows_deleted": 0, "index_partitions_dropped": [],
           "manifest_rows_deleted": 0, "parquet_dirs_deleted": 0, "bytes_freed": 0, "anchor_index_rows": None,
           "anchor_index_rows_before": None}
    locked: list[dt.date] = []
    try:
        for date in [*group.remove, *([group.anchor] if group.anchor else [])]:
            if not index.try_lock_partition(conn, date):
                out["status"] = f"skipped: partition {date} is being materialized; retried on the next run"
                return out
            locked.append(date)
        for date in locked:  # a generation the log does not carry yet is committed there before it is retired
            publication.sync_partition(store, conn, date, settings.history_days, log=log)
        with conn.transaction():
            index.lock_commits(conn)
            current = {e.snapshot_date: e for e in index.all_partitions(conn)}
            remove = [d for d in group.remove if d in current]
            remaining = set(current) - set(remove)
            if group.anchor is not None:
                if group.anchor not in current:
                    out["status"] = f"skipped: anchor {group.anchor} is no longer published; retried on the next run"
                    return out
                before = [d for d in remaining if d < group.anchor]
                previous = max(before) if before else None
                if previous != group.previous:
                    out["status"] = "skipped: the partitions changed since planning; retried on the next run"
                    return out
                out["anchor_index_rows_before"] = current[group.anchor].index_rows
                out["anchor_index_rows"] = _reanchor(store, conn, current[group.anchor],
                                                     current[previous] if previous is not None else None,
                                                     work_dir, log)
            deleted = _delete_index_rows(conn, remove)
            if remove:
                out["manifest_rows_deleted"] = index.delete_manifests(conn, remove)
            for date in remove:
                generations.record_version(conn, publication.retirement(date, generations.next_generation(conn, date)))
            out["index_rows_deleted"] = deleted
            out["bytes_freed"] = sum(current[d].bytes for d in remove)
        for date in group.remove:  # the Delta commits retiring them (their files stay for the history window)
            if publication.sync_partition(store, conn, date, settings.history_days, log=log) is not None:
                out["parquet_dirs_deleted"] += 1
        dropped = _drop_empty_months(conn, log)
        out["index_partitions_dropped"] = dropped
        log(f"operation=retention removed={len(remove)} from={group.remove[0]} to={group.remove[-1]}"
            f" index_rows_deleted={out['index_rows_deleted']} dropped={','.join(dropped) or 'none'}")
        return out
    finally:
        for date in locked:
            index.unlock_partition(conn, date)


def _drop_empty_months(conn: psycopg.Connection, log) -> list[str]:
    """The index months left with no row and no published day, dropped when no run uses them (else on a later
    run); best effort: the retention's work is done and recorded whatever this meets."""
    try:
        return index.drop_empty_months(conn)
    except psycopg.Error as exc:
        log(f"operation=retention empty index months not dropped ({exc}); a later run drops them")
        return []


def _reanchor(store: Store, conn: psycopg.Connection, anchor: index.ManifestEntry,
              previous: index.ManifestEntry | None, work_dir: Path, log) -> int:
    """Re-diff the index rows of ``anchor`` against ``previous`` (all its rows when None); returns their count."""
    anchor_file = catalog.present_paths(store, anchor)
    if anchor_file is None:
        raise RetentionError(
            f"partition {anchor.snapshot_date} is published but its Parquet files"
            f" {catalog.entry_paths(store, anchor)} are missing; re-materialize it before running retention"
        )
    previous_file = catalog.present_paths(store, previous) if previous is not None else None
    spool = IndexSpool(work_dir, anchor.snapshot_date)
    diff_files(store.fs, previous_file, anchor_file, spool)
    rows = index.replace_rows(conn, anchor.snapshot_date, spool.close())
    index.set_index_rows(conn, anchor.snapshot_date, rows)
    log(f"operation=retention anchor={anchor.snapshot_date}"
        f" previous={previous.snapshot_date if previous is not None else None} index_rows={rows}"
        f" kind={'full' if previous_file is None else 're-diff'}")
    return rows


def _delete_orphans(settings: Settings, conn: psycopg.Connection, dates: list[dt.date], log) -> int:
    """Remove partition directories that no manifest row nor recorded generation names (left by a crash)
    and are outside the policy."""
    removed = 0
    store = Store.at(settings.storage_uri)
    for date in dates:
        if not index.try_lock_partition(conn, date):
            continue
        try:
            if index.manifest(conn, date) is None and not generations.versions(conn, date):
                recovery.sweep_unnamed(store, date, conn, None)
                parquet.delete_partition(store, date)
                removed += 1
                log(f"operation=retention orphan_parquet_dir={date} deleted")
        finally:
            index.unlock_partition(conn, date)
    return removed


def vacuum_history(settings: Settings, conn: psycopg.Connection, log, dry_run: bool = False) -> dict:
    """Vacuum the Delta tables (files no version of the history window names) and forget generations
    superseded before the window; a checkpoint keeps opening the table cheap."""
    hours = settings.history_days
    out: dict[str, object] = {"history_days": hours, "generations_forgotten": 0}
    # A generation the index committed but the log does not carry yet names files no Delta version names:
    # commit it first; while one stays unsynced (its partition is being materialized), vacuum only files
    # the log removed, never the files it never named (a full vacuum would delete them once old enough).
    unsynced = _sync_unsynced(settings, conn, log)
    out["unsynced_partitions"] = [d.isoformat() for d in unsynced]
    snapshots_full = not unsynced and not generations.has_unsynced_manifest(conn)
    vacuumed = 0
    store = Store.at(settings.storage_uri)
    # Report tables: only files the log removed (a report partition written before its table existed is
    # named by no version; a full vacuum would delete it)
    for spec in [delta.SNAPSHOTS, *delta.tables_in(store, REPORTS_DIR)]:
        removed = delta.vacuum(store, spec, settings.history_days, dry_run=dry_run,
                               full=snapshots_full and spec is delta.SNAPSHOTS)
        vacuumed += len(removed)
        if not dry_run and delta.exists(store, spec):
            delta.checkpoint(store, spec)
    out["vacuumed_files"] = vacuumed
    forgotten = 0
    if not dry_run:
        before = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=settings.history_days)
        forgotten = out["generations_forgotten"] = generations.prune_versions(conn, before)
    log(f"operation=retention vacuum history_days={hours} files={vacuumed} generations_forgotten={forgotten}")
    return out


def _sync_unsynced(settings: Settings, conn: psycopg.Connection, log) -> list[dt.date]:
    """Replay the Delta commit of every generation the log does not carry yet (under each partition's lock);
    returns the partitions left unsynced (their lock is held by a live run)."""
    left = []
    for date in generations.unsynced_dates(conn):
        if not index.try_lock_partition(conn, date):
            left.append(date)
            continue
        try:
            publication.sync_partition(Store.at(settings.storage_uri), conn, date, settings.history_days, log=log)
        finally:
            index.unlock_partition(conn, date)
    return left


def apply_retention(
    settings: Settings,
    *,
    reference: dt.date | None = None,
    dry_run: bool = False,
    policy: Policy | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Plan and (unless ``dry_run``) apply the retention policy; returns a JSON-able report.

    ``reference`` defaults to the last closed day in the settings' time zone.
    """
    log = log or logger.info
    policy = policy or Policy.from_settings(settings)
    reference = reference or calendar.last_closed_day(settings.timezone)
    started = time.monotonic()
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        index.migrate(conn)
        if not dry_run:
            publication.ensure_table(Store.at(settings.storage_uri), conn, settings.history_days)
        plan = make_plan(conn, Store.at(settings.storage_uri), policy, reference)
        report = {"dry_run": dry_run, **plan.as_dict()}
        log(f"operation=retention dry_run={dry_run} reference_date={reference} kept={len(plan.kept)}"
            f" to_remove={len(plan.remove)} orphan_dirs={len(plan.orphan_dirs)}")
        if dry_run:
            report["duration_ms"] = int((time.monotonic() - started) * 1000)
            return report
        work_dir = Path(tempfile.mkdtemp(prefix="snapshot-retention-"))
        try:
            results = [_apply_group(settings, conn, g, work_dir, log) for g in plan.groups]
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
        orphans = _delete_orphans(settings, conn, plan.orphan_dirs, log)
        report["history"] = vacuum_history(settings, conn, log)
    done = [r for r in results if r["status"] == "done"]
    report.update(
        groups=results,
        partitions_removed=sorted(d for r in done for d in r["remove"]),
        partitions_skipped=sorted(d for r in results if r["status"] != "done" for d in r["remove"]),
        manifest_rows_deleted=sum(r["manifest_rows_deleted"] for r in done),
        index_rows_deleted=sum(r["index_rows_deleted"] for r in done),
        index_partitions_dropped=sorted(n for r in done for n in r["index_partitions_dropped"]),
        parquet_dirs_deleted=sum(r["parquet_dirs_deleted"] for r in done) + orphans,
        orphan_parquet_dirs_deleted=orphans,
        bytes_freed=sum(r["bytes_freed"] for r in done),
        anchors_rewritten=[{"date": r["anchor"], "previous": r["previous"], "index_rows": r["anchor_index_rows"],
                            "index_rows_before": r["anchor_index_rows_before"]} for r in done if r["anchor"]],
        duration_ms=int((time.monotonic() - started) * 1000),
    )
    return report
