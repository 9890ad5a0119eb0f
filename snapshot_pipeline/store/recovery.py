"""Crash recovery: holding a partition, and converging after runs that died (the other half of
:mod:`.publication`).

A run holding a partition's lock (:func:`claim`) first recovers it: the part files no recorded
generation names are deleted (orphans of a publish that never reached its index COMMIT), a
generation the index committed but the Delta log does not carry is committed there
(:func:`snapshot_pipeline.store.publication.sync_partition`, idempotent), and the leftovers of a dead
holder are removed. So do the ``crash_recovery_sensor`` tick and ``snapshot-pipeline doctor``
(:func:`recover_all`), for every pending partition whose lock is free.

Each run holding a partition lock leaves a **holder record**
``<root>/.publish/snapshot-<D>.holder.json`` (run id, pid, host, its work directory, its publish
token), removed when it ends. A holder record found by the next lock holder means that run died:
it is reported (the Dagster side marks the run failed) and its work directory and staging files
are removed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pyarrow.fs as pafs

from snapshot_pipeline.settings import DEFAULT_HISTORY_DAYS
from snapshot_pipeline.store import generations, index, parquet, records
from snapshot_pipeline.store.location import Store
from snapshot_pipeline.store.publication import ensure_table, sync_partition

logger = logging.getLogger(__name__)

RECORD_VERSION = 2  # 2: the holder names its publish token; no intent records
PUBLISH_TOKEN_CHARS = 16  # a run's files are part-0000k-<first 16 hex digits of its claim token>.parquet
_RECORD_NAME = re.compile(r"^snapshot-(\d{4}-\d{2}-\d{2})\.holder\.json$")
_STAGING_NAME = re.compile(r"^snapshot-(\d{4}-\d{2}-\d{2})-[0-9a-f]+\.parquet$")
_SHARDS_NAME = re.compile(r"^shards-(\d{4}-\d{2}-\d{2})-([0-9a-f]+)$")  # a sharded run's work prefix
# A sharded run holds no lock between its plan and its commit; its work prefix is swept once abandoned:
# without a plan (what a failed shard raced back after the discard) or with a plan older than this.
SHARD_WORK_MAX_AGE = dt.timedelta(hours=24)


# ------------------------------------------------------------------------------------------------ locations


def holder_path(store: Store, date: dt.date) -> str:
    """``<root>/.publish/snapshot-<D>.holder.json``: the record of the run holding ``date``'s lock."""
    return f"{store.control_dir}/snapshot-{date.isoformat()}.holder.json"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------- sweeps


def sweep_unnamed(store: Store, date: dt.date, conn: psycopg.Connection,
                  entry: index.ManifestEntry | None) -> list[str]:
    """Delete the part files of ``date``'s directory that no recorded generation names (the caller holds
    the lock): orphans of runs that died before their index COMMIT. Files of earlier generations stay."""
    keep = set(store.partition_paths(date, list(entry.files))) if entry is not None else set()
    for version in generations.versions(conn, date):
        keep.update(store.partition_paths(date, list(version.files)))
    return delete_unnamed(store, date, keep)


def delete_unnamed(store: Store, date: dt.date, keep: set[str]) -> list[str]:
    """Delete the part files of ``date``'s directory not in ``keep``; returns their paths."""
    removed = [p for p in parquet.list_partition(store, date) if p not in keep]
    for path in removed:
        store.fs.delete_file(path)
    return removed


# ------------------------------------------------------------------------------------------ dead runs, sweep


@dataclasses.dataclass(frozen=True)
class DeadRun:
    """A run that held a partition's lock and died without releasing its holder record."""

    snapshot_date: str
    run_id: str | None
    pid: int
    host: str
    started_at: str
    work_dir: str | None

    def reason(self) -> str:
        return (f"the process running this materialization of partition {self.snapshot_date} (pid {self.pid} on"
                f" {self.host}, lock taken at {self.started_at}) died without finishing; found by the next"
                f" holder of the partition's lock at {_now()}, which cleaned up after it")


@dataclasses.dataclass
class Recovery:
    """What :func:`recover` found and did for one partition."""

    snapshot_date: dt.date
    dead_run: DeadRun | None = None
    publish: str = "none"  # none | completed (the Delta commit replayed) | rolled_back (orphans removed)
    removed: list[str] = dataclasses.field(default_factory=list)
    delta_version: int | None = None  # the Delta commit replayed for the committed generation, if any

    @property
    def acted(self) -> bool:
        return (self.dead_run is not None or self.publish != "none" or bool(self.removed)
                or self.delta_version is not None)

    def as_dict(self) -> dict:
        return {
            "snapshot_date": self.snapshot_date.isoformat(),
            "dead_run": dataclasses.asdict(self.dead_run) if self.dead_run else None,
            "publish": self.publish,
            "removed": self.removed,
            "delta_version": self.delta_version,
        }


def recover(store: Store, conn: psycopg.Connection, date: dt.date, *,
            log: Callable[[str], None] | None = None,
            on_dead_run: Callable[[DeadRun], None] | None = None, keep_token: str | None = None,
            history_days: int = DEFAULT_HISTORY_DAYS) -> Recovery:
    """Under ``date``'s partition lock: finish an interrupted publish, report a dead holder, sweep leftovers.

    Everything under the lock's name is dead: a live run of ``date`` would hold the lock. Removed:
    the part files no recorded generation names (orphans of a publish that never reached its index
    COMMIT), the dead holder's work directory, every ``snapshot-<date>-*`` staging file, abandoned
    sharded-run work prefixes of ``date`` (but ``keep_token``'s, the committing run's own), and
    temporary record files of ``date``. A generation committed in the index but not in the Delta log
    is committed there (:func:`sync_partition`).
    """
    log = log or logger.info
    fs = store.fs
    result = Recovery(date)
    entry = index.manifest(conn, date)
    unnamed = sweep_unnamed(store, date, conn, entry)
    holder_file = holder_path(store, date)
    holder = records.read_json(fs, holder_file)
    latest = generations.latest_version(conn, date)
    if holder is not None:
        result.dead_run = DeadRun(
            snapshot_date=date.isoformat(), run_id=holder.get("run_id"), pid=int(holder.get("pid", 0)),
            host=str(holder.get("host", "")), started_at=str(holder.get("started_at", "")),
            work_dir=holder.get("work_dir"),
        )
        log(f"partition {date}: run {result.dead_run.run_id} (pid {result.dead_run.pid}) died holding its lock")
        if on_dead_run is not None:
            try:
                on_dead_run(result.dead_run)
            except Exception as exc:  # noqa: BLE001 - reporting must not stop the recovery
                log(f"partition {date}: could not report dead run {result.dead_run.run_id}: {exc}")
        token = str(holder.get("publish_token") or str(holder.get("token", ""))[:PUBLISH_TOKEN_CHARS])
        committed = latest is not None and bool(token) and bool(latest.files) and all(
            token in name for name in latest.files)
        if committed and latest is not None and latest.delta_version is None:
            result.publish = "completed"
        elif unnamed and not committed:
            result.publish = "rolled_back"
        if result.publish != "none":
            log(f"partition {date}: interrupted publish of run {result.dead_run.run_id} {result.publish}"
                f" ({len(unnamed)} file(s) no generation names removed)")
        work_dir = result.dead_run.work_dir
        if work_dir and os.path.isdir(work_dir) and _is_work_dir(Path(work_dir), date):
            shutil.rmtree(work_dir, ignore_errors=True)
            result.removed.append(work_dir)
    result.delta_version = sync_partition(store, conn, date, history_days, log=log)
    if result.delta_version is not None and result.publish == "none":
        result.publish = "completed"
    result.removed.extend(unnamed)
    result.removed.extend(_sweep_store(store, date, keep_token))
    records.delete_if_file(fs, holder_file)
    if result.removed:
        log(f"partition {date}: removed {len(result.removed)} leftover(s) of dead runs: {', '.join(result.removed)}")
    return result


def _is_work_dir(path: Path, date: dt.date) -> bool:
    """Only directories this module names (never a path a corrupted record could point anywhere)."""
    return path.name.startswith(f"snapshot-{date.isoformat()}-") and path.parent == Path(tempfile.gettempdir())


def abandoned_shard_work(store: Store, date: dt.date | None = None,
                         keep_token: str | None = None) -> list[tuple[dt.date, str]]:
    """(date, path) of sharded runs' work prefixes that are abandoned (see ``SHARD_WORK_MAX_AGE``)."""
    found = []
    now = dt.datetime.now(dt.UTC)
    fs = store.fs
    for info in fs.get_file_info(pafs.FileSelector(store.staging_dir, allow_not_found=True)):
        match = _SHARDS_NAME.match(info.base_name)
        if info.type != pafs.FileType.Directory or not match or match.group(2) == keep_token:
            continue
        day = dt.date.fromisoformat(match.group(1))
        if date is not None and day != date:
            continue
        plan = fs.get_file_info(f"{info.path}/plan.json")
        mtime = plan.mtime if plan.type == pafs.FileType.File else None
        if mtime is None or now - mtime.astimezone(dt.UTC) > SHARD_WORK_MAX_AGE:
            found.append((day, info.path))
    return found


def _sweep_store(store: Store, date: dt.date, keep_token: str | None = None) -> list[str]:
    removed = []
    fs = store.fs
    for _, path in abandoned_shard_work(store, date, keep_token):
        fs.delete_dir(path)
        removed.append(path)
    prefix = f"snapshot-{date.isoformat()}"
    for directory, pattern in ((store.staging_dir, _STAGING_NAME), (store.control_dir, None)):
        for info in fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True)):
            if info.type != pafs.FileType.File:
                continue
            name = info.base_name
            stale = (pattern.match(name) and name.startswith(prefix + "-")) if pattern else (
                name.startswith(prefix + ".") and ".json.tmp-" in name)
            if stale:
                fs.delete_file(info.path)
                removed.append(info.path)
    return removed


def pending_dates(store: Store, conn: psycopg.Connection | None = None) -> list[dt.date]:
    """Partitions with a holder record, a snapshot staging file or abandoned sharded-run work, and (with
    ``conn``) those whose latest generation is not in the Delta log yet."""
    found = set(generations.unsynced_dates(conn)) if conn is not None else set()
    for directory, pattern in ((store.control_dir, _RECORD_NAME), (store.staging_dir, _STAGING_NAME)):
        for info in store.fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True)):
            match = pattern.match(info.base_name)
            if match:
                found.add(dt.date.fromisoformat(match.group(1)))
    found.update(day for day, _ in abandoned_shard_work(store))
    return sorted(found)


def recover_all(store: Store, conn: psycopg.Connection, *, skip: dt.date | None = None,
                log: Callable[[str], None] | None = None,
                on_dead_run: Callable[[DeadRun], None] | None = None,
                history_days: int = DEFAULT_HISTORY_DAYS) -> list[Recovery]:
    """:func:`recover` every pending partition whose lock is free (a held lock means a live run)."""
    results = []
    for date in pending_dates(store, conn):
        if date == skip or not index.try_lock_partition(conn, date):
            continue
        try:
            results.append(recover(store, conn, date, log=log, on_dead_run=on_dead_run,
                                   history_days=history_days))
        except Exception as exc:  # noqa: BLE001 - one partition that cannot be recovered must not stop the others
            (log or logger.warning)(f"partition {date}: recovery failed ({type(exc).__name__}: {exc});"
                                    " left for the next holder of its lock")
        finally:
            index.unlock_partition(conn, date)
    return results


@dataclasses.dataclass
class Claim:
    """A run's hold on a partition: its work directory and holder record (see :func:`claim`)."""

    store: Store
    snapshot_date: dt.date
    run_id: str | None
    token: str
    work_dir: Path
    recovery: Recovery
    publish_token: str  # the token in this run's file names (part-0000k-<publish_token>.parquet)

    def release(self) -> None:
        """At the run's end, before the lock is released: remove the work directory and the holder record."""
        shutil.rmtree(self.work_dir, ignore_errors=True)
        path = holder_path(self.store, self.snapshot_date)
        record = records.read_json(self.store.fs, path)
        if record is not None and record.get("token") == self.token:
            self.store.fs.delete_file(path)


def claim(store: Store, conn: psycopg.Connection, date: dt.date, *, run_id: str | None = None,
          log: Callable[[str], None] | None = None,
          on_dead_run: Callable[[DeadRun], None] | None = None, publish_token: str | None = None,
          history_days: int = DEFAULT_HISTORY_DAYS) -> Claim:
    """Right after taking ``date``'s partition lock: recover, then record this run as the holder.

    Also recovers every other partition left pending by a dead run (their locks free), so that this
    run never reads a base partition whose publish was interrupted. Returns the run's work directory
    (created here, named in the holder record so the next holder can remove it if this run dies).
    """
    ensure_table(store, conn, history_days)
    for other in recover_all(store, conn, skip=date, log=log, on_dead_run=on_dead_run,
                             history_days=history_days):
        logger.debug("recovered %s", other.as_dict())
    recovery = recover(store, conn, date, log=log, on_dead_run=on_dead_run, keep_token=publish_token,
                       history_days=history_days)
    token = uuid.uuid4().hex
    publish_token = publish_token or token[:PUBLISH_TOKEN_CHARS]
    work_dir = Path(tempfile.gettempdir()) / f"snapshot-{date.isoformat()}-{token[:12]}"
    records.write_json(store.fs, holder_path(store, date), {
        "version": RECORD_VERSION,
        "snapshot_date": date.isoformat(),
        "run_id": run_id,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": _now(),
        "work_dir": str(work_dir),
        "token": token,
        "publish_token": publish_token,
    })
    work_dir.mkdir()
    return Claim(store, date, run_id, token, work_dir, recovery, publish_token)
