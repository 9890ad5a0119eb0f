"""A partition merged as K shards: one consistent read, K merges of ``balance_id`` ranges, one commit.

The three phases run in one process (:func:`take_sharded`) or as separate Dagster steps in
separate processes or pods (``defs/snapshots/jobs.py``); they share nothing but the store:

1. :func:`plan` — under the partition's lock: choose the base, open the one REPEATABLE READ view of
   the ledger, stage the step, write the per-balance delta (in ``balance_id`` order) and the
   roll-forward state to the run's work prefix ``<root>/.staging/shards-<D>-<token>/``, and choose
   K-1 boundaries from the base partition's ``balance_id`` distribution (its row-group statistics;
   the delta's at genesis). Shard k covers ``[boundary[k-1], boundary[k])``.
2. :func:`merge_shard` — shard k reads only the base row groups and delta rows of its range,
   merges them like the unsharded core, and stages ``part-0000k-<token>.parquet`` with its
   changed rows and currency totals beside it.
3. :func:`commit_shards` — under the partition's lock: every shard's staged file published in one
   index transaction (:func:`snapshot_pipeline.snapshot.commit.commit`): all K files or none.

A shard that fails leaves its range unstaged, so the commit (which checks all K) never runs or
refuses; the work prefix is removed by the commit, by :func:`discard`, or with the run's
leftovers by ``snapshot-pipeline doctor``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from snapshot_pipeline import calendar, db, faults, names, progress
from snapshot_pipeline.ledger import asof, journal
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.snapshot import commit, merge
from snapshot_pipeline.snapshot.results import CurrencyTotals, Pass, SnapshotError, SnapshotResult, validate_batch_size
from snapshot_pipeline.snapshot.roll import (
    BASE_READ_ROWS,
    PROGRESS_SECONDS,
    RunProgress,
    begin,
    file_metadata,
    holding_partition,
    merge_into,
    usable_base,
)
from snapshot_pipeline.store import index, published, ranges, records, recovery
from snapshot_pipeline.store import parquet as store
from snapshot_pipeline.store.spool import IndexSpool

logger = logging.getLogger(__name__)

MAX_SHARDS = names.SHARDS_MAX
PLAN_VERSION = 1


def validate_shards(shards: int) -> int:
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise SnapshotError(f"shards must be an integer from 1 to {MAX_SHARDS}, got {shards!r}")
    return shards


@dataclasses.dataclass(frozen=True)
class Plan:
    """What every shard and the commit need, written as ``plan.json`` in the work prefix."""

    storage_uri: str
    snapshot_date: dt.date
    cutoff: dt.datetime
    shards: int
    boundaries: list[str]  # K-1 balance ids, increasing
    batch_size: int
    token: str  # the publish token: files are part-0000k-<token>.parquet
    work_prefix: str
    base_date: dt.date | None
    base_checksum: str | None
    base_files: list[str]  # the base's files as planned: shards read exactly these (the delta is against them)
    view: journal.View
    counts: dict  # the step's counted/released/resolved/entering numbers
    phases_ms: dict
    replaces_checksum: str | None = None  # D's manifest checksum at the plan: the commit refuses if it changed

    def bounds(self, shard: int) -> tuple[str | None, str | None]:
        """``[low, high)`` of shard ``shard`` (None: unbounded)."""
        edges: list[str | None] = [None, *self.boundaries, None]
        return edges[shard], edges[shard + 1]

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(version=PLAN_VERSION, snapshot_date=self.snapshot_date.isoformat(),
                   cutoff=self.cutoff.isoformat(), base_date=self.base_date.isoformat() if self.base_date else None,
                   view={**self.view.as_dict()})
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> Plan:
        if raw.get("version") != PLAN_VERSION:
            raise SnapshotError(f"shard plan format {raw.get('version')!r} is not {PLAN_VERSION}: re-run the partition")
        view = dict(raw["view"], read_at=dt.datetime.fromisoformat(raw["view"]["read_at"]))
        fields = {k: v for k, v in raw.items() if k != "version"}
        return cls(**{**fields, "snapshot_date": dt.date.fromisoformat(raw["snapshot_date"]),
                      "cutoff": dt.datetime.fromisoformat(raw["cutoff"]),
                      "base_date": dt.date.fromisoformat(raw["base_date"]) if raw["base_date"] else None,
                      "view": journal.View(**view)})

    # locations in the work prefix
    @property
    def delta_path(self) -> str:
        return f"{self.work_prefix}/delta.parquet"

    @property
    def state_path(self) -> str:
        return f"{self.work_prefix}/state.parquet"

    def shard_record_path(self, shard: int) -> str:
        return f"{self.work_prefix}/shard-{shard:05d}.json"

    def changed_path(self, shard: int) -> str:
        return f"{self.work_prefix}/shard-{shard:05d}.changed.parquet"


def work_prefix(storage_uri: str, date: dt.date, token: str) -> str:
    return f"{recovery.staging_dir(storage_uri)}/shards-{date.isoformat()}-{token}"


def load_plan(storage_uri: str, prefix: str) -> Plan:
    fs, _ = store.resolve(storage_uri)
    raw = records.read_json(fs, f"{prefix}/plan.json")
    if raw is None:
        raise SnapshotError(f"no shard plan at {prefix}: the run's work was removed; re-run the partition")
    return Plan.from_dict(raw)


# ------------------------------------------------------------------------------------------------ 1. plan


def plan(settings: Settings, snapshot_date: dt.date, shards: int, batch_size: int = names.BATCH_SIZE_DEFAULT, *,
         run_id: str | None = None, full_refresh: bool = False, log: Callable[[str], None] | None = None,
         on_dead_run: Callable[[recovery.DeadRun], None] | None = None,
         boundaries: list[str] | None = None) -> Plan:
    """The consistent read and the delta, once, under one cut; written to the run's work prefix.

    ``boundaries`` (K-1 increasing balance ids) overrides the cut points chosen from the base.
    """
    validate_batch_size(batch_size)
    validate_shards(shards)
    log = log or logger.info
    cutoff = calendar.cutoff(snapshot_date, settings.timezone)
    fs, _ = store.resolve(settings.storage_uri)
    with holding_partition(settings, snapshot_date, run_id=run_id, log=log, on_dead_run=on_dead_run) as (
            index_conn, claim):
        base = None if full_refresh else usable_base(settings, index_conn, snapshot_date, log)
        prefix = work_prefix(settings.storage_uri, snapshot_date, claim.publish_token)
        fs.create_dir(prefix, recursive=True)
        phases: dict[str, int] = {}
        view, counts = _read_delta(settings, index_conn, snapshot_date, cutoff, base, prefix, phases, log)
        boundary_source = (published.entry_paths(settings.storage_uri, base) if base is not None
                           else [f"{prefix}/delta.parquet"])
        cuts = _cut_points(fs, boundary_source, shards, boundaries)
        if len(cuts) + 1 < shards:
            log(f"partition {snapshot_date}: {len(cuts) + 1} shards instead of {shards} (too few distinct ids)")
        current = index.manifest(index_conn, snapshot_date)
        result = Plan(settings.storage_uri, snapshot_date, cutoff, len(cuts) + 1,
                      cuts, batch_size, claim.publish_token, prefix,
                      base.snapshot_date if base else None, base.checksum if base else None,
                      published.entry_paths(settings.storage_uri, base) if base else [], view, counts, phases,
                      current.checksum if current else None)
        records.write_json(fs, f"{prefix}/plan.json", result.as_dict())
        log(f"operation=balance_snapshot snapshot_date={snapshot_date} status=planned shards={shards}"
            f" boundaries={len(result.boundaries)} work_prefix={store.display_uri(settings.storage_uri, prefix)}")
        return result


def _cut_points(fs, paths: list[str], shards: int, explicit: list[str] | None) -> list[str]:
    if explicit is None:
        return ranges.choose_boundaries(fs, paths, shards)
    if len(explicit) != shards - 1 or explicit != sorted(set(explicit)):
        raise SnapshotError(f"boundaries must be {shards - 1} strictly increasing balance ids, got {explicit!r}")
    return list(explicit)


def _read_delta(settings, index_conn, snapshot_date, cutoff, base, prefix: str, phases: dict, log
                ) -> tuple[journal.View, dict]:
    """Inside one REPEATABLE READ view: stage the step, write the delta and the roll-forward state."""
    fs, _ = store.resolve(settings.storage_uri)
    ledger = db.connect_arrow(db.ledger_url(settings))
    cur = ledger.cursor()
    try:
        step = begin(cur, index_conn, snapshot_date, cutoff, base, phases, log)
        mark = time.monotonic()
        reader = journal.delta_reader(cur, cutoff)
        with fs.open_output_stream(f"{prefix}/delta.parquet") as sink, \
                pq.ParquetWriter(sink, reader.schema, compression="zstd") as writer:
            for batch in reader:
                writer.write_batch(batch, row_group_size=store.ROW_GROUP_ROWS)
        cur.execute("COMMIT")
        with fs.open_output_stream(f"{prefix}/state.parquet") as sink:
            pq.write_table(step.state, sink)
        phases["delta_ms"] = int((time.monotonic() - mark) * 1000)
        return step.view, {"counted_rows": step.counted_rows, "released_rows": step.released_rows,
                           "resolved_gaps": step.resolved_gaps, "entering_balances": step.entering_balances}
    except BaseException:
        asof.rollback_quietly(cur)
        raise
    finally:
        cur.close()
        ledger.close()


# ------------------------------------------------------------------------------------------------ 2. shards


def merge_shard(settings: Settings, plan_: Plan, shard: int, *, log: Callable[[str], None] | None = None,
                on_batch: Callable[[int], None] | None = None,
                on_progress: Callable[..., None] | None = None) -> dict:
    """Merge shard ``shard`` of the plan into a staged file; returns (and records) what it staged.

    ``on_progress(rows, total)`` gets the shard's rows written (total unknown: the commit reports the
    partition's); default: a progress line in ``log`` every 2 s."""
    log = log or logger.info
    faults.fail_point("shard", shard)
    started = time.monotonic()
    fs, _ = store.resolve(plan_.storage_uri)
    low, high = plan_.bounds(shard)
    base_paths = plan_.base_files
    if base_paths and not store.all_present(fs, base_paths):
        raise SnapshotError(f"the files of base partition {plan_.base_date} were replaced while the shards ran;"
                            " re-run the partition")
    writer = store.PartitionWriter(plan_.storage_uri, plan_.snapshot_date,
                                   file_metadata(settings, plan_.snapshot_date, plan_.cutoff, plan_.view),
                                   shard=shard, token=plan_.token, staging_dir=plan_.work_prefix)
    changed = _ChangedRowsFile(fs, plan_.changed_path(shard))
    try:
        totals = CurrencyTotals()
        batches = merge_into(
            writer, changed, totals,
            ranges.iter_range(fs, base_paths, merge.BASE_COLUMNS, low, high, max(plan_.batch_size, BASE_READ_ROWS)),
            ranges.iter_range(fs, [plan_.delta_path], None, low, high, plan_.batch_size),
            plan_.cutoff, plan_.batch_size,
            RunProgress(on_batch, on_progress or progress.Reporter(log, plan_.snapshot_date.isoformat(),
                                                                   PROGRESS_SECONDS)))
        staged = writer.finish({"mode": "incremental" if plan_.base_date else "genesis",
                                "shard": str(shard), "shards": str(plan_.shards)})
        changed.close()
    except BaseException:
        writer.abort()
        changed.close()
        raise
    record = {"shard": shard, "batches": batches, "totals": totals.as_rows(), "staged": staged.as_dict(),
              "merge_ms": int((time.monotonic() - started) * 1000)}
    if not plan_exists(plan_):  # another shard failed and the run's work was removed meanwhile
        discard(plan_)
        raise SnapshotError(f"shard {shard} stopped: another shard of this run failed first and its work was"
                            " removed; nothing is published")
    records.write_json(fs, plan_.shard_record_path(shard), record)
    log(f"operation=balance_snapshot snapshot_date={plan_.snapshot_date} shard={shard}/{plan_.shards}"
        f" range=[{low}, {high}) rows={staged.rows} changed={changed.rows} status=staged")
    return record


class _ChangedRowsFile:
    """A shard's changed rows, streamed to Parquet beside its file as the merge yields them (memory stays
    flat); the commit streams them into the index spool."""

    def __init__(self, fs: pafs.FileSystem, path: str):
        self.fs, self.path, self.rows = fs, path, 0
        self._sink = fs.open_output_stream(path)
        self._writer = pq.ParquetWriter(self._sink, store.SNAPSHOT_SCHEMA, compression="zstd")

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table.cast(store.SNAPSHOT_SCHEMA))
            self.rows += table.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = None


# ------------------------------------------------------------------------------------------------ 3. commit


def commit_shards(settings: Settings, plan_: Plan, *, run_id: str | None = None,
                  log: Callable[[str], None] | None = None,
                  on_dead_run: Callable[[recovery.DeadRun], None] | None = None,
                  reason: str = "manual") -> SnapshotResult:
    """Publish every shard's staged file as the partition, in one index transaction; all or none."""

    log = log or logger.info
    started = time.monotonic()
    fs, _ = store.resolve(plan_.storage_uri)
    staged = [records.read_json(fs, plan_.shard_record_path(k)) for k in range(plan_.shards)]
    missing = [k for k, r in enumerate(staged) if r is None]
    if missing:
        raise SnapshotError(f"partition {plan_.snapshot_date}: shard(s) {missing} of {plan_.shards} staged nothing;"
                            " nothing is published")
    shard_records = [r for r in staged if r is not None]
    files = [store.StagedFile(**r["staged"]) for r in shard_records]
    try:
        return _commit_held(settings, plan_, shard_records, files, run_id, log, on_dead_run, started, reason)
    finally:
        discard(plan_)  # published or refused: the run's work is done either way (a failed run is re-run whole)


def _commit_held(settings, plan_: Plan, shard_records, files, run_id, log, on_dead_run, started,
                 reason: str) -> SnapshotResult:
    with holding_partition(settings, plan_.snapshot_date, run_id=run_id, log=log, on_dead_run=on_dead_run,
                           publish_token=plan_.token) as (index_conn, claim):
        current = index.manifest(index_conn, plan_.snapshot_date)
        if (current.checksum if current else None) != plan_.replaces_checksum:
            raise SnapshotError(f"partition {plan_.snapshot_date} was published by another run after this sharded"
                                " run read the ledger; nothing is published (re-run it for a newer cut)")
        the_pass = _pass(settings, index_conn, plan_, shard_records, files, claim.work_dir)
        result = commit.commit(settings, index_conn, plan_.snapshot_date, plan_.cutoff, plan_.batch_size, run_id,
                               the_pass, claim.work_dir, log, started, reason)
    return result


def _pass(settings, index_conn, plan_: Plan, shard_records: list[dict], files: list[store.StagedFile],
          work_dir) -> Pass:
    """The commit's input, rebuilt from the store: the shards' files, changed rows and totals."""
    fs, _ = store.resolve(plan_.storage_uri)
    base = None
    if plan_.base_date is not None:
        base = index.manifest(index_conn, plan_.base_date)
        if base is None:
            raise SnapshotError(f"base partition {plan_.base_date} was removed while the shards ran;"
                                " re-run the partition")
        # the changes were computed against the base as planned: compare the predecessor with that one
        base = dataclasses.replace(base, checksum=plan_.base_checksum or "")
    spool = IndexSpool(work_dir, plan_.snapshot_date)
    totals = CurrencyTotals()
    for shard in range(plan_.shards):
        with fs.open_input_file(plan_.changed_path(shard)) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=store.ROW_GROUP_ROWS):
                spool.write(pa.Table.from_batches([batch]))
        for row in shard_records[shard]["totals"]:
            entry = totals.totals.setdefault(row["currency"], [0, 0, 0, 0])
            for i, key in enumerate(("balances", "balance", "credit", "debit")):
                entry[i] += int(row[key])
    with fs.open_input_file(plan_.state_path) as f:
        state = pq.read_table(f)
    step = journal.Step(plan_.view, state, **plan_.counts)
    phases = {**plan_.phases_ms, "merge_ms": max(r["merge_ms"] for r in shard_records)}
    return Pass(plan_.storage_uri, files, spool, totals, sum(r["batches"] for r in shard_records), step, base,
                "incremental" if base is not None else "genesis", phases)


def plan_exists(plan_: Plan) -> bool:
    fs, _ = store.resolve(plan_.storage_uri)
    return fs.get_file_info(f"{plan_.work_prefix}/plan.json").type == pafs.FileType.File


def discard(plan_: Plan) -> None:
    """Remove the run's work prefix (its plan, delta, records and any staged file not yet published)."""
    fs, _ = store.resolve(plan_.storage_uri)
    if fs.get_file_info(plan_.work_prefix).type != pafs.FileType.NotFound:
        fs.delete_dir(plan_.work_prefix)


def _after(reporter: Callable[..., None], before: int) -> Callable[..., None]:
    """A shard's progress as the partition's: ``before`` rows were written by the shards before it."""
    def report(rows: int, total: int | None, final: bool = False) -> None:
        reporter(before + rows, None)

    return report


def take_sharded(settings: Settings, snapshot_date: dt.date, shards: int, batch_size: int = names.BATCH_SIZE_DEFAULT,
                 *, run_id: str | None = None, full_refresh: bool = False,
                 log: Callable[[str], None] | None = None, on_batch: Callable[[int], None] | None = None,
                 on_progress: Callable[..., None] | None = None,
                 on_dead_run: Callable[[recovery.DeadRun], None] | None = None,
                 boundaries: list[str] | None = None, reason: str = "manual") -> SnapshotResult:
    """All three phases in this process, shard after shard (the Dagster job runs them in parallel)."""
    the_plan = plan(settings, snapshot_date, shards, batch_size, run_id=run_id, full_refresh=full_refresh, log=log,
                    on_dead_run=on_dead_run, boundaries=boundaries)
    reporter = on_progress or progress.Reporter(log or logger.info, snapshot_date.isoformat(), PROGRESS_SECONDS)
    done = 0
    try:
        for shard in range(the_plan.shards):
            record = merge_shard(settings, the_plan, shard, log=log, on_batch=on_batch,
                                 on_progress=_after(reporter, done))
            done += int(record["staged"]["rows"])
        result = commit_shards(settings, the_plan, run_id=run_id, log=log, on_dead_run=on_dead_run, reason=reason)
        reporter(result.rows, result.rows, True)
        return result
    except BaseException:
        discard(the_plan)
        raise
