"""A partition merged as K shards: one consistent read, K merges of ``balance_id`` ranges, one commit.

The three phases run in one process (:func:`take_sharded`) or as separate Dagster steps in
separate processes or pods (``defs/snapshots/jobs.py``); they share nothing but the store:

1. :func:`plan` (:mod:`snapshot_pipeline.snapshot.shard_plan`) — under the partition's lock: the base,
   the K-1 boundaries and the one cut of the ledger; K per-shard deltas computed in K sessions sharing
   that cut, written with the roll-forward state to the run's work prefix
   ``<root>/.staging/shards-<D>-<token>/``. Shard k covers ``[boundary[k-1], boundary[k])``.
2. :func:`merge_shard` — shard k reads only the base row groups of its range and its own delta,
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

from snapshot_pipeline import faults, names, progress
from snapshot_pipeline.ledger import journal
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.snapshot import commit, merge
from snapshot_pipeline.snapshot.results import (
    CurrencyTotals,
    Pass,
    RunFacts,
    SnapshotError,
    SnapshotResult,
)
from snapshot_pipeline.snapshot.roll import (
    BASE_READ_ROWS,
    PROGRESS_SECONDS,
    RunProgress,
    clean_up,
    file_metadata,
    holding_partition,
    merge_into,
)
from snapshot_pipeline.snapshot.shard_plan import (
    MAX_SHARDS,
    PLAN_VERSION,
    Plan,
    load_plan,
    plan,
    validate_shards,
    work_prefix,
)
from snapshot_pipeline.store import index, parquet, ranges, records, recovery
from snapshot_pipeline.store.spool import IndexSpool

logger = logging.getLogger(__name__)

# the three phases' entry points; the plan's live in shard_plan and are named here, as callers know them
__all__ = ["MAX_SHARDS", "PLAN_VERSION", "Plan", "commit_shards", "discard", "load_plan", "merge_shard", "plan",
           "plan_exists", "take_sharded", "validate_shards", "work_prefix"]

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
    fs = plan_.store.fs
    low, high = plan_.bounds(shard)
    base_paths = plan_.base_files
    if base_paths and not parquet.all_present(fs, base_paths):
        raise SnapshotError(f"the files of base partition {plan_.base_date} were replaced while the shards ran;"
                            " re-run the partition")
    writer = parquet.PartitionWriter(plan_.store, plan_.snapshot_date,
                                     file_metadata(settings, plan_.snapshot_date, plan_.cutoff, plan_.view),
                                     shard=shard, token=plan_.token, staging_dir=plan_.work_prefix)
    changed = _ChangedRowsFile(fs, plan_.changed_path(shard))
    try:
        totals = CurrencyTotals()
        batches = merge_into(
            writer, changed, totals,
            ranges.iter_range(fs, base_paths, merge.BASE_COLUMNS, low, high, max(plan_.batch_size, BASE_READ_ROWS)),
            ranges.iter_range(fs, [plan_.delta_path(shard)], None, low, high, plan_.batch_size),
            plan_.cutoff, plan_.batch_size,
            RunProgress(on_batch, on_progress or progress.Reporter(log, plan_.snapshot_date.isoformat(),
                                                                   PROGRESS_SECONDS)))
        staged = writer.finish({"mode": "incremental" if plan_.base_date else "genesis",
                                "shard": str(shard), "shards": str(plan_.shards)})
        changed.close()
    except BaseException:
        clean_up(writer.abort, changed.close)
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
        self._writer = pq.ParquetWriter(self._sink, parquet.SNAPSHOT_SCHEMA, compression="zstd")

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table.cast(parquet.SNAPSHOT_SCHEMA))
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
    fs = plan_.store.fs
    staged = [records.read_json(fs, plan_.shard_record_path(k)) for k in range(plan_.shards)]
    missing = [k for k, r in enumerate(staged) if r is None]
    if missing:
        raise SnapshotError(f"partition {plan_.snapshot_date}: shard(s) {missing} of {plan_.shards} staged nothing;"
                            " nothing is published")
    shard_records = [r for r in staged if r is not None]
    files = [parquet.StagedFile(**r["staged"]) for r in shard_records]
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
        facts = RunFacts(settings, plan_.snapshot_date, plan_.cutoff, plan_.batch_size, log, started, run_id,
                         reason)
        result = commit.commit(facts, index_conn, the_pass, claim.work_dir)
    return result


def _pass(settings, index_conn, plan_: Plan, shard_records: list[dict], files: list[parquet.StagedFile],
          work_dir) -> Pass:
    """The commit's input, rebuilt from the store: the shards' files, changed rows and totals."""
    fs = plan_.store.fs
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
            for batch in pq.ParquetFile(f).iter_batches(batch_size=parquet.ROW_GROUP_ROWS):
                spool.write(pa.Table.from_batches([batch]))
        for row in shard_records[shard]["totals"]:
            entry = totals.totals.setdefault(row["currency"], [0, 0, 0, 0])
            for i, key in enumerate(("balances", "balance", "credit", "debit")):
                entry[i] += int(row[key])
    with fs.open_input_file(plan_.state_path) as f:
        state = pq.read_table(f)
    step = journal.Step(plan_.view, state, **plan_.counts)
    phases = {**plan_.phases_ms, "merge_ms": max(r["merge_ms"] for r in shard_records)}
    return Pass(plan_.store, files, spool, totals, sum(r["batches"] for r in shard_records), step, base,
                "incremental" if base is not None else "genesis", phases)


def plan_exists(plan_: Plan) -> bool:
    return records.is_file(plan_.store.fs, f"{plan_.work_prefix}/plan.json")


def discard(plan_: Plan) -> None:
    """Remove the run's work prefix (its plan, delta, records and any staged file not yet published), the plan
    first: a shard that writes after that finds no plan (:func:`plan_exists`) and removes what it wrote."""
    records.delete_if_file(plan_.store.fs, f"{plan_.work_prefix}/plan.json")
    plan_.store.remove_tree(plan_.work_prefix)


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
