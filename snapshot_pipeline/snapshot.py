"""Materialize one daily snapshot partition: ledger -> Arrow batches -> Parquet + index.

This is the plain-Python core the Dagster asset calls (it never imports dagster).
Steps, for partition ``D`` with cutoff ``C_D``:

1. lock the partition (a second concurrent run waits, then recomputes);
2. open one REPEATABLE READ view of the ledger and read its watermark;
3. choose the base: the nearest earlier published partition, if its journal
   prefix is intact; otherwise compute from genesis;
4. stream keyset pages of balances joined with their delta sums, add the base's
   values, write Parquet row groups to a staging file and spool the changed
   balances for the index;
5. commit under the global commit lock: index rows of ``D`` (re-diffed if the
   predecessor changed meanwhile), re-diff of the next partition's index rows,
   the manifest row, then the atomic rename of the Parquet file, in one
   index transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.fs as pafs

from snapshot_pipeline import amounts, calendar, db, faults
from snapshot_pipeline.ledger import asof
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import index
from snapshot_pipeline.store import parquet as store
from snapshot_pipeline.store import publish

logger = logging.getLogger(__name__)

WIDE = amounts.WIDE
BASE_COLUMNS = ["balance_id", "credit_balance", "debit_balance", "inflight_credit_balance", "inflight_debit_balance"]
_DELTA_TO_FIELD = {
    "credit": "credit_balance",
    "debit": "debit_balance",
    "inflight_credit": "inflight_credit_balance",
    "inflight_debit": "inflight_debit_balance",
}
PROGRESS_SECONDS = 2.0
MIN_BATCH_SIZE = 1
MAX_BATCH_SIZE = 1_000_000


class SnapshotError(RuntimeError):
    """A snapshot cannot be taken; nothing was published."""


AmountOverflow = amounts.AmountOverflow


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
    path: str
    checksum: str
    mode: str
    base_date: dt.date | None
    currency_totals: list[dict]

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["snapshot_date"] = self.snapshot_date.isoformat()
        out["cutoff"] = self.cutoff.replace(tzinfo=dt.timezone.utc).isoformat()
        out["base_date"] = self.base_date.isoformat() if self.base_date else None
        return out


def validate_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not (
        MIN_BATCH_SIZE <= batch_size <= MAX_BATCH_SIZE
    ):
        raise SnapshotError(
            f"batch_size must be an integer from {MIN_BATCH_SIZE} to {MAX_BATCH_SIZE:,}, got {batch_size!r}"
        )
    return batch_size


# ---------------------------------------------------------------------------------------------- Arrow helpers


def _wide(column) -> pa.Array:
    return amounts.widen(column)


def _narrow(values: pa.Array, ids: pa.Array, name: str) -> pa.Array:
    return amounts.narrow(values, ids, name)


class IndexSpool:
    """Changed balances, spooled to a CSV file for one COPY into the index at commit time."""

    def __init__(self, directory: Path, date: dt.date):
        self.date = date
        self.path = directory / f"index-{date.isoformat()}.csv"
        self._writer: pcsv.CSVWriter | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        columns = {
            "balance_id": table["balance_id"],
            "snapshot_date": pa.repeat(pa.scalar(self.date, pa.date32()), table.num_rows),
            **{name: table[name] for name in store.AMOUNT_COLUMNS},
            "currency": table["currency"],
        }
        out = pa.table(columns)
        if self._writer is None:
            self._writer = pcsv.CSVWriter(str(self.path), out.schema)
        self._writer.write_table(out)
        self.rows += out.num_rows

    def close(self) -> Path | None:
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        return self.path

    def reset(self) -> None:
        """Forget everything spooled so far."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.path.unlink(missing_ok=True)
        self.rows = 0


class CurrencyTotals:
    """Per-currency row count and sums, aggregated in large chunks (no per-row Python objects)."""

    CHUNK_ROWS = 131_072

    def __init__(self) -> None:
        self.totals: dict[str, list[int]] = {}
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch.select(["currency", "balance_id", "balance", "credit_balance", "debit_balance"]))
        self._pending_rows += batch.num_rows
        if self._pending_rows >= self.CHUNK_ROWS:
            self._aggregate()

    def _aggregate(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending)
        self._pending, self._pending_rows = [], 0
        table = pa.table(
            {
                "currency": table["currency"],
                "balance_id": table["balance_id"],
                **{name: pc.cast(table[name], WIDE) for name in ("balance", "credit_balance", "debit_balance")},
            }
        )
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


# --------------------------------------------------------------------------------------------- page transform


def build_page(
    page: pa.Table,
    snapshot_date: dt.date,
    cutoff: dt.datetime,
    base_cutoff: dt.datetime | None,
    base_reader: store.SequentialReader | None,
) -> tuple[pa.RecordBatch, pa.Table]:
    """One page of (balance row + delta sums) -> (Parquet batch, changed rows for the index)."""
    n = page.num_rows
    ids = page["balance_id"].combine_chunks()
    deltas = {name: _wide(page[name]) for name in _DELTA_TO_FIELD}
    zeros = pa.repeat(pa.scalar(0, WIDE), n) if base_reader is not None else None

    if base_reader is None:
        held = None
        values = {field: deltas[name] for name, field in _DELTA_TO_FIELD.items()}
        changed = None
    else:
        created = page["balance_created_at"].combine_chunks()
        held = pc.fill_null(pc.less(created, pa.scalar(base_cutoff, created.type)), False)
        base = base_reader.take_matching(ids, held)
        count = len(base)
        values = {}
        changed = pc.invert(held)
        for name, field in _DELTA_TO_FIELD.items():
            if count:
                previous = pc.replace_with_mask(zeros, held, _wide(base[field]))
            else:
                previous = zeros
            values[field] = pc.cast(pc.add(previous, deltas[name]), WIDE)
            changed = pc.or_(changed, pc.not_equal(deltas[name], pa.scalar(0, WIDE)))

    values["balance"] = pc.subtract(values["credit_balance"], values["debit_balance"])
    values["inflight_balance"] = pc.subtract(values["inflight_credit_balance"], values["inflight_debit_balance"])
    amounts = {name: _narrow(values[name], ids, name) for name in store.AMOUNT_COLUMNS}

    created_utc = pc.cast(page["balance_created_at"].combine_chunks(), store.UTC_TS)
    batch = pa.RecordBatch.from_arrays(
        [
            ids,
            page["ledger_id"].combine_chunks(),
            page["identity_id"].combine_chunks(),
            page["indicator"].combine_chunks(),
            page["currency"].combine_chunks(),
            *[amounts[name] for name in store.AMOUNT_COLUMNS],
            created_utc,
            pa.repeat(pa.scalar(cutoff.replace(tzinfo=dt.timezone.utc), store.UTC_TS), n),
        ],
        schema=store.SNAPSHOT_SCHEMA,
    )
    table = pa.Table.from_batches([batch])
    changed_rows = table if changed is None else table.filter(changed)
    return batch, changed_rows


# ----------------------------------------------------------------------------------------------- re-diffing


def diff_files(
    fs: pafs.FileSystem,
    previous_path: str | None,
    previous_cutoff: dt.datetime | None,
    current_path: str,
    spool: IndexSpool,
) -> None:
    """Spool the rows of ``current_path`` that differ from ``previous_path`` (all rows when there is none).

    Both files are in the same ``balance_id`` order; rows of balances created
    before the previous cutoff are matched in sequence.
    """
    columns = ["balance_id", "currency", *store.AMOUNT_COLUMNS, "balance_created_at"]
    if previous_path is None:
        for batch in _iter_file(fs, current_path, columns):
            spool.write(pa.Table.from_batches([batch]))
        return
    previous = store.SequentialReader.from_file(fs, previous_path, ["balance_id", *store.AMOUNT_COLUMNS])
    cutoff_scalar = pa.scalar(previous_cutoff.replace(tzinfo=dt.timezone.utc), store.UTC_TS)
    for batch in _iter_file(fs, current_path, columns):
        table = pa.Table.from_batches([batch])
        held = pc.fill_null(pc.less(table["balance_created_at"], cutoff_scalar), False).combine_chunks()
        held_rows = table.filter(held)
        try:
            base = previous.take_matching(table["balance_id"].combine_chunks(), held)
        except store.BaseMisaligned:  # the files do not line up: every row becomes an anchor
            spool.reset()
            return diff_files(fs, None, None, current_path, spool)
        count = len(base)
        if count:
            differs = pa.repeat(pa.scalar(False), count)
            for name in store.AMOUNT_COLUMNS:
                differs = pc.or_(differs, pc.not_equal(held_rows[name], base[name]))
            spool.write(held_rows.filter(differs))
        spool.write(table.filter(pc.invert(held)))


def _iter_file(fs: pafs.FileSystem, path: str, columns: list[str]):
    return store.iter_file(fs, path, columns)


# --------------------------------------------------------------------------------------------- materialize


@dataclasses.dataclass
class _Pass:
    """Outputs of one streaming pass over the ledger."""

    writer: store.PartitionWriter
    spool: IndexSpool
    totals: CurrencyTotals
    batches: int
    watermark: asof.Watermark
    base: index.ManifestEntry | None
    mode: str


def take_snapshot(
    settings: Settings,
    snapshot_date: dt.date,
    batch_size: int = 1000,
    *,
    run_id: str | None = None,
    log: Callable[[str], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_dead_run: Callable[[publish.DeadRun], None] | None = None,
) -> SnapshotResult:
    """Compute and publish the snapshot partition ``snapshot_date``. Nothing is visible unless all of it is.

    Right after taking the partition's lock, :func:`publish.claim` resolves a publish a dead run
    interrupted, reports that run through ``on_dead_run`` (the Dagster asset marks it failed) and
    removes its leftovers; the work directory is the claim's (named in its holder record).
    """
    validate_batch_size(batch_size)
    log = log or logger.info
    started = time.monotonic()
    cutoff = calendar.cutoff(snapshot_date, settings.timezone)
    index_conn = db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database")
    claim = None
    try:
        index.migrate(index_conn)
        index.lock_partition(index_conn, snapshot_date)
        claim = publish.claim(settings.storage_uri, index_conn, snapshot_date, run_id=run_id, log=log,
                              on_dead_run=on_dead_run)
        work_dir = claim.work_dir
        result_pass = _stream(settings, index_conn, snapshot_date, cutoff, batch_size, work_dir, log, on_batch,
                              started)
        return _commit(settings, index_conn, snapshot_date, cutoff, batch_size, run_id, result_pass, work_dir,
                       log, started)
    finally:
        if claim is not None:
            claim.release()  # before the lock goes with the connection
        index_conn.close()


def _with_file(settings: Settings, entry: index.ManifestEntry | None, log) -> index.ManifestEntry | None:
    """The manifest entry if its Parquet file exists in this store, else None (logged)."""
    if entry is not None and not store.exists(settings.storage_uri, entry.snapshot_date):
        log(f"partition {entry.snapshot_date} is in the index but has no Parquet file in {settings.storage_uri};"
            " not using it")
        return None
    return entry


def _stream(settings, index_conn, snapshot_date, cutoff, batch_size, work_dir, log, on_batch, started) -> _Pass:
    base = _with_file(settings, index.nearest_before(index_conn, snapshot_date), log)
    ledger = db.connect_arrow(db.ledger_url(settings))
    try:
        try:
            return _stream_once(settings, ledger, snapshot_date, cutoff, batch_size, base, work_dir, log,
                                on_batch, started)
        except store.BaseMisaligned as exc:
            log(f"base partition {base.snapshot_date} does not line up ({exc}); recomputing from genesis")
            return _stream_once(settings, ledger, snapshot_date, cutoff, batch_size, None, work_dir, log,
                                on_batch, started)
    finally:
        ledger.close()


def _stream_once(settings, ledger, snapshot_date, cutoff, batch_size, base, work_dir, log, on_batch,
                 started) -> _Pass:
    cur = ledger.cursor()
    writer: store.PartitionWriter | None = None
    spool: IndexSpool | None = None
    try:
        watermark = asof.begin_consistent_read(cur)
        base_ref = None
        if base is not None:
            base_ref = asof.Base(base.cutoff_at, base.max_transaction_id, base.transaction_count)
            if not asof.base_is_intact(cur, base_ref):
                log(f"journal rows at or below the watermark of {base.snapshot_date} changed; computing from genesis")
                base, base_ref = None, None
        mode = "incremental" if base is not None else "genesis"
        log(
            f"operation=balance_snapshot snapshot_date={snapshot_date} mode={mode}"
            f" base={base.snapshot_date if base else None}"
            f" watermark_transaction_id={watermark.max_transaction_id} status=summing_journal"
        )
        summed = time.monotonic()
        delta_balances = asof.prepare_delta(cur, cutoff, base_ref)
        log(
            f"operation=balance_snapshot snapshot_date={snapshot_date} delta_balances={delta_balances}"
            f" journal_sum_ms={int((time.monotonic() - summed) * 1000)} status=writing"
        )
        writer = store.PartitionWriter(
            settings.storage_uri,
            snapshot_date,
            {
                "snapshot_date": snapshot_date.isoformat(),
                "cutoff": cutoff.replace(tzinfo=dt.timezone.utc).isoformat(),
                "timezone": settings.timezone,
                "watermark": str(watermark.max_transaction_id),
                "watermark_transaction_count": str(watermark.transaction_count),
                "watermark_max_balance_id": str(watermark.max_balance_id),
                "pg_snapshot": watermark.pg_snapshot,
            },
        )
        spool = IndexSpool(work_dir, snapshot_date)
        totals = CurrencyTotals()
        base_reader = (
            store.SequentialReader.from_file(writer.fs, store.partition_file(settings.storage_uri, base.snapshot_date),
                                             BASE_COLUMNS)
            if base is not None else None
        )
        batches = 0
        last_report = time.monotonic()
        for page in asof.iter_pages(cur, cutoff, batch_size):
            batch, changed = build_page(page, snapshot_date, cutoff, base.cutoff_at if base else None, base_reader)
            writer.write(batch)
            spool.write(changed)
            totals.add(batch)
            batches += 1
            if on_batch is not None:
                on_batch(batches)
            now = time.monotonic()
            if now - last_report >= PROGRESS_SECONDS:
                elapsed = now - started
                log(
                    f"operation=balance_snapshot status=progress rows={writer.rows} batches={batches}"
                    f" snapshots_per_second={writer.rows / elapsed:.0f}"
                )
                last_report = now
        if base_reader is not None and not base_reader.exhausted():
            raise store.BaseMisaligned("the base partition holds balances that no longer exist")
        cur.execute("COMMIT")
        return _Pass(writer, spool, totals, batches, watermark, base, mode)
    except BaseException:
        if writer is not None:
            writer.abort()
        if spool is not None:
            spool.reset()
        asof.rollback_quietly(cur)
        raise
    finally:
        cur.close()


def _commit(settings, index_conn, snapshot_date, cutoff, batch_size, run_id, p: _Pass, work_dir, log,
            started) -> SnapshotResult:
    faults.pause_point("read")
    writer = p.writer
    bytes_written, checksum = writer.close({"mode": p.mode})
    faults.pause_point("staged")
    spool_path = p.spool.close()
    fs = writer.fs
    publication = publish.Publication(writer, checksum, run_id=run_id, log=log)
    try:
        with index_conn.transaction():
            index.lock_commits(index_conn)
            predecessor = _with_file(settings, index.nearest_before(index_conn, snapshot_date), log)
            changed_count = p.spool.rows
            if (predecessor is None) != (p.base is None) or (
                predecessor is not None
                and (predecessor.snapshot_date != p.base.snapshot_date or predecessor.checksum != p.base.checksum)
            ):
                log("the previous partition changed while this one was computed; re-diffing its index rows")
                p.spool = IndexSpool(work_dir / "rediff", snapshot_date)
                (work_dir / "rediff").mkdir(exist_ok=True)
                diff_files(
                    fs,
                    store.partition_file(settings.storage_uri, predecessor.snapshot_date) if predecessor else None,
                    predecessor.cutoff_at if predecessor else None,
                    writer.staging_path,
                    p.spool,
                )
                spool_path = p.spool.close()
                changed_count = p.spool.rows
            index_rows = index.replace_rows(index_conn, snapshot_date, spool_path)
            successor = _with_file(settings, index.nearest_after(index_conn, snapshot_date), log)
            if successor is not None:
                succ_dir = work_dir / "successor"
                succ_dir.mkdir(exist_ok=True)
                succ_spool = IndexSpool(succ_dir, successor.snapshot_date)
                diff_files(fs, writer.staging_path, cutoff,
                           store.partition_file(settings.storage_uri, successor.snapshot_date), succ_spool)
                succ_rows = index.replace_rows(index_conn, successor.snapshot_date, succ_spool.close())
                index.set_index_rows(index_conn, successor.snapshot_date, succ_rows)
                log(f"re-diffed index rows of the next partition {successor.snapshot_date}: {succ_rows} rows")
            duration_ms = int((time.monotonic() - started) * 1000)
            path = store.display_uri(settings.storage_uri, writer.final_path)
            entry = index.ManifestEntry(
                snapshot_date=snapshot_date,
                cutoff_at=cutoff,
                timezone=settings.timezone,
                max_transaction_id=p.watermark.max_transaction_id,
                transaction_count=p.watermark.transaction_count,
                max_balance_id=p.watermark.max_balance_id,
                pg_snapshot=p.watermark.pg_snapshot,
                read_at=p.watermark.read_at,
                row_count=writer.rows,
                changed_count=changed_count,
                index_rows=index_rows,
                files=[path],
                bytes=bytes_written,
                checksum=checksum,
                mode=p.mode,
                base_date=p.base.snapshot_date if p.base else None,
                batch_size=batch_size,
                duration_ms=duration_ms,
                dagster_run_id=run_id,
            )
            index.upsert_manifest(index_conn, entry)
            publication.make_visible()  # intent record, backup, rename: the last step before COMMIT
            faults.pause_point("visible")
        faults.pause_point("committed")
    except BaseException:
        publication.abandon(index_conn)  # resolved against the manifest, or left to the next lock holder
        writer.abort()
        raise
    publication.finish()
    seconds = max(time.monotonic() - started, 1e-9)
    return SnapshotResult(
        snapshot_date=snapshot_date,
        cutoff=cutoff,
        watermark=p.watermark.as_dict(),
        rows=writer.rows,
        balances_changed=changed_count,
        index_rows_written=index_rows,
        batches=p.batches,
        batch_size=batch_size,
        duration_ms=int(seconds * 1000),
        snapshots_per_second=round(writer.rows / seconds, 1),
        bytes_written=bytes_written,
        path=path,
        checksum=checksum,
        mode=p.mode,
        base_date=p.base.snapshot_date if p.base else None,
        currency_totals=p.totals.as_rows(),
    )



def staleness(settings: Settings, snapshot_date: dt.date) -> dict | None:
    """Why a published partition no longer matches the journal (``{}`` when current; None when unpublished)."""
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        index.migrate(conn)
        entry = index.manifest(conn, snapshot_date)
    if entry is None:
        return None
    reasons = {}
    if not store.exists(settings.storage_uri, snapshot_date):
        reasons["parquet_missing"] = 1
    ledger = db.connect_arrow(db.ledger_url(settings))
    try:
        cur = ledger.cursor()
        late = asof.late_rows(cur, entry.cutoff_at, entry.max_transaction_id, entry.transaction_count,
                              entry.max_balance_id)
        cur.close()
    finally:
        ledger.close()
    reasons.update({k: v for k, v in late.items() if v})
    return reasons
