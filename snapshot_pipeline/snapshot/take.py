"""Materialize one daily snapshot partition by rolling the previous one forward (DESIGN §3, roll-forward).

This is the plain-Python entry point the Dagster asset and the CLI call (it never imports dagster).
For partition ``D`` with cutoff ``C_D``:

1. lock the partition (a second concurrent run waits, then recomputes);
2. choose the base: the nearest earlier published partition P computed by this
   roll-forward format whose Parquet files exist (none, or ``full_refresh``: genesis);
3. open one REPEATABLE READ view of the ledger; read the legs in ``S_D \\ S_P`` by
   key only (:mod:`snapshot_pipeline.ledger.journal`);
4. walk P's Parquet and the per-balance delta together in ``balance_id`` order
   (:mod:`snapshot_pipeline.snapshot.roll`), writing Parquet row groups to a new
   file at a run-unique name (no Delta version names it yet) and spooling the
   changed balances for the index;
5. commit (:mod:`snapshot_pipeline.snapshot.commit`): index rows, the next
   partition's re-diff, the roll-forward state, the manifest and
   ``partition_versions`` rows in one index transaction (the commit point), then
   one Delta commit replacing the partition in ``balance_snapshots``.

Cost: one sequential read of P's Parquet and one write of D's, plus the day's
journal rows and P's pending set: flat in the journal's length.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

from snapshot_pipeline import calendar, names, progress
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.snapshot import commit, roll
from snapshot_pipeline.snapshot import shards as sharding
from snapshot_pipeline.snapshot.results import RunFacts, SnapshotResult, validate_batch_size
from snapshot_pipeline.store import recovery

logger = logging.getLogger(__name__)


def take_snapshot(
    settings: Settings,
    snapshot_date: dt.date,
    batch_size: int = names.BATCH_SIZE_DEFAULT,
    *,
    run_id: str | None = None,
    log: Callable[[str], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_progress: Callable[..., None] | None = None,
    full_refresh: bool = False,
    on_dead_run: Callable[[recovery.DeadRun], None] | None = None,
    shards: int = 1,
    reason: str = "manual",
    compare_live: bool = False,
) -> SnapshotResult:
    """Compute and publish the snapshot partition ``snapshot_date``. Nothing is visible unless all of it is.

    ``full_refresh`` computes it from genesis (a full read of the ledger) instead of rolling forward.
    Right after taking the partition's lock, :func:`recovery.claim` resolves a publish a dead run
    interrupted, reports that run through ``on_dead_run`` (the Dagster asset marks it failed) and
    removes its leftovers; the work directory is the claim's (named in its holder record). Only then
    is a base partition chosen, so an uncommitted file is never rolled forward.

    ``shards`` > 1 merges the partition as that many ``balance_id`` ranges, one after the other in
    this process (:mod:`snapshot_pipeline.snapshot.shards`; the sharded Dagster job runs them in parallel).
    ``reason`` (schedule, repair, backfill, manual, ...) is recorded with the partition's version.
    ``compare_live`` compares the changed balances with their live rows in the run's own view when the
    partition is the latest (the result's ``live_drift``; the ``live_balances_match`` check reports it).
    ``on_batch(batches)`` is called after each merged chunk; ``on_progress(rows, total, final=False)`` with
    the rows written out of the partition's expected row count, and once more at the end with the exact
    count (default: a :class:`snapshot_pipeline.progress.Reporter` logging a progress line every 2 s).
    """
    if shards != 1:
        return sharding.take_sharded(settings, snapshot_date, shards, batch_size, run_id=run_id,
                                     full_refresh=full_refresh, log=log, on_batch=on_batch,
                                     on_progress=on_progress, on_dead_run=on_dead_run,
                                     reason=reason)
    validate_batch_size(batch_size)
    log = log or logger.info
    facts = RunFacts(settings, snapshot_date, calendar.cutoff(snapshot_date, settings.timezone), batch_size, log,
                     time.monotonic(), run_id, reason, compare_live)
    tracker = roll.RunProgress(on_batch, on_progress or progress.Reporter(log, snapshot_date.isoformat(),
                                                                         roll.PROGRESS_SECONDS))
    with roll.holding_partition(settings, snapshot_date, run_id=run_id, log=log, on_dead_run=on_dead_run) as (
            index_conn, claim):
        base = None if full_refresh else roll.usable_base(settings, index_conn, snapshot_date, log)
        result_pass = roll.stream(facts, index_conn, base, claim, tracker)
        return commit.commit(facts, index_conn, result_pass, claim.work_dir)
