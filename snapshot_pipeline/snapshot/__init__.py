"""Materialize one daily snapshot partition by rolling the previous one forward (DESIGN §3, roll-forward).

This is the plain-Python core the Dagster asset calls (it never imports dagster).
For partition ``D`` with cutoff ``C_D``:

1. lock the partition (a second concurrent run waits, then recomputes);
2. choose the base: the nearest earlier published partition P computed by this
   roll-forward format whose Parquet file exists (none, or ``full_refresh``: genesis);
3. open one REPEATABLE READ view of the ledger; read the legs in ``S_D \\ S_P`` by
   key only (:mod:`snapshot_pipeline.ledger.journal`);
4. walk P's Parquet and the per-balance delta together in ``balance_id`` order
   (:mod:`snapshot_pipeline.snapshot.merge`), writing Parquet row groups to a new
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

import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from snapshot_pipeline import amounts, calendar, db, faults, names, progress
from snapshot_pipeline.ledger import asof, journal
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.snapshot import merge
from snapshot_pipeline.store import align, index, publish, published
from snapshot_pipeline.store import parquet as store
from snapshot_pipeline.store.spool import IndexSpool

logger = logging.getLogger(__name__)

WIDE = amounts.WIDE
AmountOverflow = amounts.AmountOverflow
ROLL_VERSION = 1
PROGRESS_SECONDS = 2.0  # the default progress line's interval (the Dagster asset logs one a second)
BASE_READ_ROWS = 65_536
BASE_COLUMNS = merge.BASE_COLUMNS

__all__ = ["AmountOverflow", "SnapshotError", "SnapshotResult", "staleness",
           "take_snapshot", "validate_batch_size"]


class SnapshotError(RuntimeError):
    """A snapshot cannot be taken; nothing was published."""


@dataclasses.dataclass
class SnapshotResult:
    """What one materialization did; becomes Dagster metadata and the CLI's JSON."""

    snapshot_date: dt.date
    cutoff: dt.datetime
    watermark: dict
    rows: int
    balances_changed: int
    index_rows_written: int
    batches: int
    batch_size: int
    duration_ms: int
    snapshots_per_second: float
    bytes_written: int
    path: str  # the partition's file (its directory when it has several shard files)
    checksum: str
    mode: str
    base_date: dt.date | None
    currency_totals: list[dict]
    journal_rows: int = 0
    pending: dict = dataclasses.field(default_factory=dict)
    phases_ms: dict = dataclasses.field(default_factory=dict)
    files: list[str] = dataclasses.field(default_factory=list)  # every file of the partition, in shard order
    delta_version: int | None = None  # the version of the Delta table balance_snapshots that carries it
    generation: int | None = None  # the how-many-th publish of this partition (snapshot-pipeline history)

    @property
    def balanced(self) -> bool:
        """Double entry: per currency, Σ balance = 0 and Σ credit = Σ debit."""
        return all(row["balance"] == 0 and row["credit"] == row["debit"] for row in self.currency_totals)

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["snapshot_date"] = self.snapshot_date.isoformat()
        out["cutoff"] = self.cutoff.replace(tzinfo=dt.UTC).isoformat()
        out["base_date"] = self.base_date.isoformat() if self.base_date else None
        out["balanced"] = self.balanced
        return out


def validate_batch_size(batch_size: int) -> int:
    problem = names.batch_size_problem(batch_size)
    if problem:
        raise SnapshotError(problem)
    return batch_size


class CurrencyTotals:
    """Per-currency row count and sums, aggregated in large chunks (no per-row Python objects)."""

    CHUNK_ROWS = 131_072

    def __init__(self) -> None:
        self.totals: dict[str, list[int]] = {}
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def add(self, table: pa.Table) -> None:
        self._pending.append(table.select(["currency", "balance_id", "balance", "credit_balance", "debit_balance"]))
        self._pending_rows += table.num_rows
        if self._pending_rows >= self.CHUNK_ROWS:
            self._aggregate()

    def _aggregate(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        table = pa.table({
            "currency": table["currency"],
            "balance_id": table["balance_id"],
            **{name: pc.cast(table[name], WIDE) for name in ("balance", "credit_balance", "debit_balance")},
        })
        grouped = table.group_by("currency").aggregate(
            [("balance_id", "count"), ("balance", "sum"), ("credit_balance", "sum"), ("debit_balance", "sum")]
        )
        for row in grouped.to_pylist():
            entry = self.totals.setdefault(row["currency"], [0, 0, 0, 0])
            entry[0] += row["balance_id_count"]
            entry[1] += int(row["balance_sum"])
            entry[2] += int(row["credit_balance_sum"])
            entry[3] += int(row["debit_balance_sum"])

    def as_rows(self) -> list[dict]:
        self._aggregate()
        return [
            {"currency": c, "balances": v[0], "balance": v[1], "credit": v[2], "debit": v[3]}
            for c, v in sorted(self.totals.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
        ]


class ChangedRows(Protocol):
    """Where a merge puts the changed balances: the index spool, or a shard's table list."""

    def write(self, table: pa.Table) -> None: ...


@dataclasses.dataclass
class Pass:
    """Outputs of one pass over the ledger, handed to the commit: the staged shard files and the rest."""

    storage_uri: str
    files: list[store.StagedFile]  # in shard order
    spool: IndexSpool
    totals: CurrencyTotals
    batches: int
    step: journal.Step
    base: index.ManifestEntry | None
    mode: str
    phases_ms: dict

    @property
    def fs(self):
        return store.resolve(self.storage_uri)[0]

    @property
    def staging_paths(self) -> list[str]:
        return [f.staging_path for f in self.files]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def checksum(self) -> str:
        return store.partition_checksum([f.checksum for f in self.files])


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
    on_dead_run: Callable[[publish.DeadRun], None] | None = None,
    shards: int = 1,
    reason: str = "manual",
) -> SnapshotResult:
    """Compute and publish the snapshot partition ``snapshot_date``. Nothing is visible unless all of it is.

    ``full_refresh`` computes it from genesis (a full read of the ledger) instead of rolling forward.
    Right after taking the partition's lock, :func:`publish.claim` resolves a publish a dead run
    interrupted, reports that run through ``on_dead_run`` (the Dagster asset marks it failed) and
    removes its leftovers; the work directory is the claim's (named in its holder record). Only then
    is a base partition chosen, so an uncommitted file is never rolled forward.

    ``shards`` > 1 merges the partition as that many ``balance_id`` ranges, one after the other in
    this process (:mod:`snapshot_pipeline.snapshot.shards`; the sharded Dagster job runs them in parallel).
    ``reason`` (schedule, repair, backfill, manual, ...) is recorded with the partition's version.
    ``on_batch(batches)`` is called after each merged chunk; ``on_progress(rows, total, final=False)`` with
    the rows written out of the partition's expected row count, and once more at the end with the exact
    count (default: a :class:`snapshot_pipeline.progress.Reporter` logging a progress line every 2 s).
    """
    if shards != 1:
        from snapshot_pipeline.snapshot import shards as sharding  # noqa: PLC0415 - imports this module

        return sharding.take_sharded(settings, snapshot_date, shards, batch_size, run_id=run_id,
                                     full_refresh=full_refresh, log=log, on_batch=on_batch,
                                     on_progress=on_progress, on_dead_run=on_dead_run,
                                     reason=reason)
    from snapshot_pipeline.snapshot import commit  # noqa: PLC0415 - commit imports this module's types

    validate_batch_size(batch_size)
    log = log or logger.info
    started = time.monotonic()
    tracker = RunProgress(on_batch, on_progress or progress.Reporter(log, snapshot_date.isoformat(),
                                                                    PROGRESS_SECONDS))
    cutoff = calendar.cutoff(snapshot_date, settings.timezone)
    with holding_partition(settings, snapshot_date, run_id=run_id, log=log, on_dead_run=on_dead_run) as (
            index_conn, claim):
        base = None if full_refresh else usable_base(settings, index_conn, snapshot_date, log)
        result_pass = _stream(settings, index_conn, snapshot_date, cutoff, batch_size, base, claim, log,
                              tracker, started)
        return commit.commit(settings, index_conn, snapshot_date, cutoff, batch_size, run_id, result_pass,
                             claim.work_dir, log, started, reason)


@contextlib.contextmanager
def holding_partition(settings: Settings, snapshot_date: dt.date, *, run_id: str | None, log,
                      on_dead_run: Callable[[publish.DeadRun], None] | None, publish_token: str | None = None
                      ) -> Iterator[tuple]:
    """An index connection holding ``snapshot_date``'s lock and this run's claim (recovery done, holder
    record written); both released at the end, the claim before the lock goes with the connection."""
    index_conn = db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database")
    claim = None
    try:
        index.migrate(index_conn)
        index.lock_partition(index_conn, snapshot_date)
        claim = publish.claim(settings.storage_uri, index_conn, snapshot_date, run_id=run_id, log=log,
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
    fs, _ = store.resolve(settings.storage_uri)
    if published.present_paths(fs, settings.storage_uri, entry) is None:
        log(f"partition {entry.snapshot_date} is in the index but its Parquet files are missing from"
            f" {settings.storage_uri}; computing from genesis")
        return None
    return entry


def origin_of(conn, base: index.ManifestEntry | None) -> journal.Origin:
    if base is None:
        return journal.Origin.genesis()
    if base.reread_transaction_id is None or base.reread_balance_id is None:  # only roll-forward partitions are bases
        raise SnapshotError(f"partition {base.snapshot_date} has no re-read point: it cannot be rolled forward")
    return journal.Origin(base.cutoff_at, base.max_transaction_id, base.transaction_count, base.max_balance_id,
                          base.reread_transaction_id, base.reread_balance_id,
                          index.roll_state(conn, base.snapshot_date))


def _stream(settings, index_conn, snapshot_date, cutoff, batch_size, base, claim, log, tracker: RunProgress,
            started) -> Pass:
    ledger = db.connect_arrow(db.ledger_url(settings))
    try:
        try:
            return _stream_once(settings, index_conn, ledger, snapshot_date, cutoff, batch_size, base, claim,
                                log, tracker, started)
        except align.NotSorted as exc:
            if base is None:
                raise SnapshotError(f"the journal delta is not in balance_id order: {exc}") from exc
            log(f"base partition {base.snapshot_date} cannot be rolled forward ({exc}); computing from genesis")
            return _stream_once(settings, index_conn, ledger, snapshot_date, cutoff, batch_size, None, claim,
                                log, tracker, started)
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


def begin(cur, index_conn, snapshot_date: dt.date, cutoff: dt.datetime, base, phases: dict, log) -> journal.Step:
    """Open the consistent view and stage the step's journal rows (the one read of the ledger)."""
    mark = time.monotonic()
    view = journal.open_view(cur)
    step = journal.begin_step(cur, view, cutoff, origin_of(index_conn, base))
    phases["journal_ms"] = int((time.monotonic() - mark) * 1000)
    log(
        f"operation=balance_snapshot snapshot_date={snapshot_date}"
        f" mode={'incremental' if base is not None else 'genesis'}"
        f" base={base.snapshot_date if base else None}"
        f" watermark_transaction_id={step.view.max_transaction_id} journal_rows={step.counted_rows}"
        f" entering_balances={step.entering_balances} journal_ms={phases['journal_ms']} status=writing"
    )
    return step


def base_batches(settings: Settings, base: index.ManifestEntry | None, batch_size: int):
    """The base partition's rows in ``balance_id`` order, read in large batches (none at genesis)."""
    if base is None:
        return iter([])
    fs, _ = store.resolve(settings.storage_uri)
    # read in large batches; the merge cuts chunks at the delta's batch_size boundaries
    return store.iter_files(fs, published.entry_paths(settings.storage_uri, base), merge.BASE_COLUMNS,
                            max(batch_size, BASE_READ_ROWS))


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


def merge_into(writer: store.PartitionWriter, spool: ChangedRows, totals: CurrencyTotals, base_rows, delta,
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


def _stream_once(settings, index_conn, ledger, snapshot_date, cutoff, batch_size, base, claim, log,
                 tracker: RunProgress, started) -> Pass:
    mode = "incremental" if base is not None else "genesis"
    phases: dict[str, int] = {}
    cur = ledger.cursor()
    writer: store.PartitionWriter | None = None
    spool: IndexSpool | None = None
    try:
        step = begin(cur, index_conn, snapshot_date, cutoff, base, phases, log)
        writer = store.PartitionWriter(settings.storage_uri, snapshot_date,
                                       file_metadata(settings, snapshot_date, cutoff, step.view),
                                       token=claim.publish_token)
        spool = IndexSpool(claim.work_dir, snapshot_date)
        totals = CurrencyTotals()
        mark = time.monotonic()
        tracker.total = expected_rows(base, step)
        batches = merge_into(writer, spool, totals, base_batches(settings, base, batch_size),
                             journal.delta_reader(cur, cutoff), cutoff, batch_size, tracker)
        tracker.finish(writer.rows)
        cur.execute("COMMIT")
        phases["merge_ms"] = int((time.monotonic() - mark) * 1000)
        faults.pause_point("read")
        staged = writer.finish({"mode": mode})
        faults.pause_point("staged")
        return Pass(settings.storage_uri, [staged], spool, totals, batches, step, base, mode, phases)
    except BaseException:
        if writer is not None:
            writer.abort()
        if spool is not None:
            spool.reset()
        asof.rollback_quietly(cur)
        raise
    finally:
        cur.close()
