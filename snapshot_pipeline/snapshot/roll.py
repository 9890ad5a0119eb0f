"""The roll-forward step (DESIGN §3): a base partition and the journal rows since, merged into the next.

One step serves the daily snapshot (:mod:`snapshot_pipeline.snapshot.take`), its shards
(:mod:`snapshot_pipeline.snapshot.shards`) and the set queries (``balances_at``): hold the partition,
choose the base, open one REPEATABLE READ view, read the delta by key only
(:mod:`snapshot_pipeline.ledger.journal`), and merge the base's Parquet with it in ``balance_id`` order
(:mod:`snapshot_pipeline.snapshot.merge`), reporting progress as it goes.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator

import pyarrow as pa

from snapshot_pipeline import db, faults
from snapshot_pipeline.ledger import asof, journal
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.snapshot import live, merge
from snapshot_pipeline.snapshot.results import (
    ROLL_VERSION,
    ChangedRows,
    CurrencyTotals,
    Pass,
    RunFacts,
    SnapshotError,
)
from snapshot_pipeline.store import align, catalog, index, parquet, recovery, roll_state
from snapshot_pipeline.store.index_stream import IndexStream, streams
from snapshot_pipeline.store.location import Store
from snapshot_pipeline.store.spool import IndexSpool

logger = logging.getLogger(__name__)

PROGRESS_SECONDS = 2.0  # the default progress line's interval (the Dagster asset logs one a second)
BASE_READ_ROWS = parquet.READ_BATCH_ROWS  # rows per batch read from the base (the merge cuts at batch_size)
BASE_COLUMNS = merge.BASE_COLUMNS


@contextlib.contextmanager
def holding_partition(settings: Settings, snapshot_date: dt.date, *, run_id: str | None, log,
                      on_dead_run: Callable[[recovery.DeadRun], None] | None, publish_token: str | None = None
                      ) -> Iterator[tuple]:
    """An index connection holding ``snapshot_date``'s lock and this run's claim (recovery done, holder
    record written); both released at the end, the claim before the lock goes with the connection."""
    index_conn = db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database")
    claim = None
    try:
        index.migrate(index_conn)
        index.lock_partition(index_conn, snapshot_date)
        claim = recovery.claim(Store.at(settings.storage_uri), index_conn, snapshot_date, run_id=run_id, log=log,
                               on_dead_run=on_dead_run, publish_token=publish_token,
                               history_days=settings.history_days)
        yield index_conn, claim
    finally:
        if claim is not None:
            claim.release()
        index_conn.close()


def usable_base(settings: Settings, conn, snapshot_date: dt.date, log) -> index.ManifestEntry | None:
    """The nearest earlier partition to roll forward from: roll-forward format, Parquet file present."""
    entry = index.nearest_before(conn, snapshot_date)
    if entry is None:
        return None
    if entry.roll_version != ROLL_VERSION:
        log(f"partition {entry.snapshot_date} predates roll-forward (format {entry.roll_version});"
            " computing from genesis")
        return None
    if catalog.present_paths(Store.at(settings.storage_uri), entry) is None:
        log(f"partition {entry.snapshot_date} is in the index but its Parquet files are missing from"
            f" {settings.storage_uri}; computing from genesis")
        return None
    return entry


def origin_of(conn, base: index.ManifestEntry | None, *, state_in_view: bool = False) -> journal.Origin:
    """Where a step from ``base`` starts: its cutoff, watermarks and roll-forward state (genesis: zeros).

    The state is stored by date: when the partition is published again (or retired) between reading its
    manifest row and its state, the two would be of different generations, so that is an error (run again).
    ``state_in_view``: the step runs in a REPEATABLE READ view of the index's own database; the state is left
    where it is, for the step to stage in that view, which checks it holds ``base``'s generation
    (:class:`roll_state.Stored`: :class:`roll_state.StateChanged` otherwise)."""
    if base is None:
        return journal.Origin.genesis()
    if base.reread_transaction_id is None or base.reread_balance_id is None:  # only roll-forward partitions are bases
        raise SnapshotError(f"partition {base.snapshot_date} has no re-read point: it cannot be rolled forward")
    if state_in_view:
        return _origin(base, roll_state.Stored(base.snapshot_date, base.generation, base.checksum))
    state = roll_state.read(conn, base.snapshot_date, journal.STATE_SCHEMA)
    now = index.manifest(conn, base.snapshot_date)
    if now is None or (now.generation, now.checksum) != (base.generation, base.checksum):
        raise republished(base)
    return _origin(base, state)


def _origin(base: index.ManifestEntry, state: pa.Table | roll_state.Stored) -> journal.Origin:
    assert base.reread_transaction_id is not None and base.reread_balance_id is not None
    return journal.Origin(base.cutoff_at, base.max_transaction_id, base.transaction_count, base.max_balance_id,
                          base.reread_transaction_id, base.reread_balance_id, state)


def republished(base: index.ManifestEntry) -> SnapshotError:
    """The error of a roll-forward whose base was published again (or retired) while it was read."""
    return SnapshotError(f"partition {base.snapshot_date} was published again or retired while it was read as"
                         " the base of a roll-forward; nothing was published: run again")


def stream(facts: RunFacts, index_conn, base: index.ManifestEntry | None, claim: recovery.Claim,
           tracker: RunProgress) -> Pass:
    """The partition computed from ``base`` (None: genesis) into staged files; falls back to genesis when the
    base's rows are not in ``balance_id`` order."""
    ledger = db.connect_arrow(db.ledger_url(facts.settings))
    try:
        try:
            return _stream_once(facts, index_conn, ledger, base, claim, tracker)
        except align.NotSorted as exc:
            if base is None:
                raise SnapshotError(f"the journal delta is not in balance_id order: {exc}") from exc
            facts.log(f"base partition {base.snapshot_date} cannot be rolled forward ({exc}); computing from genesis")
            return _stream_once(facts, index_conn, ledger, None, claim, tracker)
    finally:
        ledger.close()


def file_metadata(settings: Settings, snapshot_date: dt.date, cutoff: dt.datetime, view: journal.View
                  ) -> dict[str, str]:
    """The run facts every file of the partition carries in its footer."""
    return {
        "snapshot_date": snapshot_date.isoformat(),
        "cutoff": cutoff.replace(tzinfo=dt.UTC).isoformat(),
        "timezone": settings.timezone,
        "roll_version": str(ROLL_VERSION),
        "watermark": str(view.max_transaction_id),
        "watermark_transaction_count": str(view.transaction_count),
        "watermark_max_balance_id": str(view.max_balance_id),
        "pg_snapshot": view.pg_snapshot,
    }


def begin(cur, index_conn, snapshot_date: dt.date, cutoff: dt.datetime, base, phases: dict, log, *,
          same_database: bool = False) -> journal.Step:
    """Open the consistent view and stage the step's journal rows (the one read of the ledger); with
    ``same_database`` (the index lives in the ledger's database) the base's state is staged in the view."""
    mark = time.monotonic()
    view = journal.open_view(cur)
    try:
        step = journal.begin_step(cur, view, cutoff, origin_of(index_conn, base, state_in_view=same_database))
    except roll_state.StateChanged as exc:
        raise republished(base) from exc
    phases["journal_ms"] = int((time.monotonic() - mark) * 1000)
    log(
        f"operation=balance_snapshot snapshot_date={snapshot_date}"
        f" mode={'incremental' if base is not None else 'genesis'}"
        f" base={base.snapshot_date if base else None}"
        f" watermark_transaction_id={step.view.max_transaction_id} journal_rows={step.counted_rows}"
        f" entering_balances={step.entering_balances} journal_ms={phases['journal_ms']} status=writing"
    )
    return step


def clean_up(*steps: Callable[[], object] | None) -> None:
    """On a failing run's path: each clean-up step in order (None: nothing to clean), every one of them whatever
    an earlier one raised. A step's error is logged; the run's own failure is what the caller raises."""
    for step in steps:
        if step is None:
            continue
        try:
            step()
        except Exception:  # best effort on an already failing path: logged
            logger.exception("clean-up after a failed run: %s failed", getattr(step, "__qualname__", step))


class RunProgress:
    """What a merge reports as it goes: the chunk count to ``on_batch`` and the rows written out of the
    partition's expected row count (:attr:`total`) to ``on_progress``; :meth:`finish` reports the exact count."""

    def __init__(self, on_batch: Callable[[int], None] | None, on_progress: Callable[..., None] | None):
        self.on_batch, self.on_progress = on_batch, on_progress
        self.total: int | None = None
        self.batches = 0

    def chunk(self, rows_written: int) -> None:
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(self.batches)
        if self.on_progress is not None:
            self.on_progress(rows_written, self.total)

    def finish(self, rows: int) -> None:
        if self.on_progress is not None:
            self.on_progress(rows, rows, True)


def expected_rows(base: index.ManifestEntry | None, step: journal.Step) -> int:
    """The partition's row count as known after the ledger read: the base's rows plus the balances entering
    (balances touched before their creation come on top: the final progress report has the exact count)."""
    return (base.row_count if base is not None else 0) + step.entering_balances


def merge_into(writer: parquet.PartitionWriter, spool: ChangedRows, totals: CurrencyTotals, base_rows, delta,
               cutoff: dt.datetime, batch_size: int, tracker: RunProgress) -> int:
    """Walk the base rows and the delta together, writing the partition's rows; returns the batch count."""
    batches = 0
    for rows, changed in merge.roll(base_rows, delta, cutoff, batch_size):
        writer.write_table(rows)
        spool.write(changed)
        totals.add(rows)
        batches += 1
        tracker.chunk(writer.rows)
    return batches


def compares_live(facts: RunFacts, index_conn, base: index.ManifestEntry | None) -> bool:
    """Whether this run compares its changed balances with their live rows: when asked, only for the latest
    partition (the ``live_balances_match`` check compares no other), and only when the balances it merges
    as changed are the partition's index rows, i.e. it rolls forward the partition published just before.
    A genesis (the first day, a full refresh, a base of another format) leaves it to the check, after the
    publish: its changed balances are all of them, too many to hold beside the merge."""
    if not facts.compare_live or base is None:
        return False
    predecessor = index.nearest_before(index_conn, facts.snapshot_date)
    return (predecessor is not None and (predecessor.snapshot_date, predecessor.generation)
            == (base.snapshot_date, base.generation)
            and index.nearest_after(index_conn, facts.snapshot_date) is None)


def index_rows_beside_delta(settings: Settings, index_conn, claim: recovery.Claim, snapshot_date: dt.date,
                            step: journal.Step, cur, live_amounts: bool
                            ) -> tuple[IndexSpool | IndexStream, pa.RecordBatchReader]:
    """Where the merge puts the changed balances, and the delta's reader.

    A day never published streams its index rows (:mod:`snapshot_pipeline.store.index_stream`): the stream
    opens (its connection, its transaction, the roll-forward state's COPY) on a thread while PostgreSQL computes
    the delta's first batch (ADBC waits for it without the GIL). A re-run spools them to a file."""
    if not streams(index_conn, snapshot_date):
        return IndexSpool(claim.work_dir, snapshot_date), journal.delta_reader(cur, live_amounts=live_amounts)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="index-stream") as pool:
        opening = pool.submit(IndexStream, db.snapshot_url(settings), snapshot_date, step.state)
        try:
            delta = journal.delta_reader(cur, live_amounts=live_amounts)
            return opening.result(), delta
        except BaseException:  # a stream that opened all the same (the wait interrupted) is rolled back
            clean_up(lambda: _reset_if_opened(opening))
            raise


def _reset_if_opened(opening: concurrent.futures.Future) -> None:
    if opening.exception() is None:  # waits for the opening to end
        opening.result().reset()


def _stream_once(facts: RunFacts, index_conn, ledger, base: index.ManifestEntry | None, claim: recovery.Claim,
                 tracker: RunProgress) -> Pass:
    settings, snapshot_date, cutoff, batch_size = facts.settings, facts.snapshot_date, facts.cutoff, facts.batch_size
    mode = "incremental" if base is not None else "genesis"
    phases: dict[str, int] = {}
    cur = ledger.cursor()
    writer: parquet.PartitionWriter | None = None
    spool: IndexSpool | IndexStream | None = None
    comparison: live.InRunComparison | None = None
    base_rows: parquet.ReadAhead | None = None
    try:
        # read on a thread from now on: its first batches decode while PostgreSQL stages the journal. Batches of
        # BASE_READ_ROWS whatever the batch size: the merge cuts its chunks at the delta's batch_size boundaries
        base_rows = catalog.read_ahead(claim.store, base, merge.BASE_COLUMNS, BASE_READ_ROWS)
        if streams(index_conn, snapshot_date):  # a wait for its month's index partition, before any ledger view
            index.ensure_month_partition(index_conn, snapshot_date, facts.log)
        step = begin(cur, index_conn, snapshot_date, cutoff, base, phases, facts.log,
                     same_database=db.snapshot_url(settings) == db.ledger_url(settings))
        writer = parquet.PartitionWriter(claim.store, snapshot_date,
                                         file_metadata(settings, snapshot_date, cutoff, step.view),
                                         token=claim.publish_token)
        live_compared = compares_live(facts, index_conn, base)
        mark = time.monotonic()
        spool, delta = index_rows_beside_delta(settings, index_conn, claim, snapshot_date, step, cur, live_compared)
        comparison = live.InRunComparison(spool, step.view.read_at) if live_compared else None
        totals = CurrencyTotals()
        tracker.total = expected_rows(base, step)
        batches = merge_into(writer, comparison or spool, totals, base_rows,
                             comparison.delta(delta) if comparison is not None else delta, cutoff, batch_size,
                             tracker)
        tracker.finish(writer.rows)
        phases["merge_ms"] = int((time.monotonic() - mark) * 1000)
        if comparison is not None:  # its later legs staged by another session while the run commits
            comparison.stage_later(cur, db.ledger_url(settings), step.next_origin(cutoff))
        cur.execute("COMMIT")
        faults.pause_point("read")
        staged = writer.finish({"mode": mode})
        faults.pause_point("staged")
        return Pass(claim.store, [staged], spool, totals, batches, step, base, mode, phases, comparison)
    except BaseException:
        clean_up(base_rows.close if base_rows is not None else None,
                 comparison.wait if comparison is not None else None,
                 writer.abort if writer is not None else None,
                 spool.reset if spool is not None else None,
                 lambda: asof.rollback_quietly(cur))
        raise
    finally:
        cur.close()
