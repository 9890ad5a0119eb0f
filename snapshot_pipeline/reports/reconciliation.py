"""``reconciliation_report``: live ``blnk.balances`` rows that drift from snapshot + later legs.

For snapshot ``D`` (the set ``S_D`` = journal rows with ``id <= W_D`` and
effective time ``< C_D``), the live row of a balance should equal the snapshot's
values plus every journal row not in ``S_D``: Blnk's live row counts each APPLIED
leg as soon as it is recorded, whatever its effective date, and holds open
INFLIGHT amounts. The later legs are summed with the same SQL as an incremental
snapshot (:func:`snapshot_pipeline.ledger.asof.prepare_delta`, from ``S_D`` to
the whole journal), in the same REPEATABLE READ view as the live rows, so a
transaction committing meanwhile cannot show up as drift.

Output: one row per drifting balance (none on a consistent ledger) with the live
and expected values of the six amounts, ``balance_drift`` = live − expected
balance, and which columns differ. What counts as drift is :func:`snapshot_pipeline.snapshot.live.compare`, the
definition the ``live_balances_match`` check uses too.
"""

from __future__ import annotations

import datetime as dt
import time

import pyarrow as pa
import pyarrow.compute as pc

from snapshot_pipeline import db
from snapshot_pipeline.ledger import asof, journal
from snapshot_pipeline.reports.common import (
    ReportError,
    ReportResult,
    ReportWriter,
    SnapshotPartition,
    narrow,
    wide,
    zeros,
)
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.snapshot import live
from snapshot_pipeline.store import align, parquet

REPORT = "reconciliation_report"
PARTITION_KEY = "snapshot_date"
PAGE_ROWS = 10_000
SAMPLE_ROWS = 20  # drifting rows also returned to the caller (Dagster shows them as a table)
FAR_FUTURE = dt.datetime(9999, 12, 31)
AMOUNTS = live.AMOUNTS
BASE = live.SUMMED
LATER = {"credit_balance": "credit", "debit_balance": "debit", "inflight_credit_balance": "inflight_credit",
         "inflight_debit_balance": "inflight_debit"}

SCHEMA = pa.schema(
    [
        pa.field("balance_id", pa.string(), nullable=False),
        pa.field("ledger_id", pa.string()),
        pa.field("currency", pa.string()),
        pa.field("drifting_columns", pa.string(), nullable=False),
        pa.field("balance_drift", parquet.AMOUNT, nullable=False),
        *[pa.field(f"live_{name}", parquet.AMOUNT, nullable=False) for name in AMOUNTS],
        *[pa.field(f"expected_{name}", parquet.AMOUNT, nullable=False) for name in AMOUNTS],
    ]
)

_LIVE_SQL = """
    SELECT b.balance_id, b.ledger_id, b.currency,
           {live},
           COALESCE(d.credit, 0)::text AS credit, COALESCE(d.debit, 0)::text AS debit,
           COALESCE(d.inflight_credit, 0)::text AS inflight_credit,
           COALESCE(d.inflight_debit, 0)::text AS inflight_debit
      FROM blnk.balances b
      LEFT JOIN snapshot_delta d ON d.balance_id = b.balance_id
     ORDER BY b.balance_id COLLATE "C" """
_LIVE = ", ".join(f"COALESCE(b.{name}, 0)::text AS live_{name}" for name in AMOUNTS)


def _live_pages(cur, page_rows: int):
    """Every live balance joined with its later legs, in ``balance_id`` byte order (the snapshot's), streamed."""
    cur.execute(_LIVE_SQL.format(live=_LIVE))
    yield from align.rechunk(cur.fetch_record_batch(), page_rows)


def drift_page(page: pa.Table, snapshot: SnapshotPartition, base_page: pa.Table | None) -> pa.Table:
    """One page of live rows (and the snapshot's rows of the same key range) -> the drifting ones."""
    n = page.num_rows
    ids = page["balance_id"].combine_chunks()
    base_ids = base_page["balance_id"].combine_chunks() if base_page is not None else pa.array([], pa.string())
    if len(base_ids) and not pc.all(pc.is_in(base_ids, value_set=ids)).as_py():
        raise _stale(snapshot, "it holds balances that are no longer live")
    positions = pc.index_in(ids, value_set=base_ids)
    held = pc.is_valid(positions)
    base = base_page.take(positions) if base_page is not None and len(base_ids) else None
    found = live.compare(
        {name: pc.if_else(held, wide(base[name]), zeros(n)) if base is not None else zeros(n) for name in BASE},
        {name: wide(page[LATER[name]]) for name in BASE},
        {name: wide(page[f"live_{name}"]) for name in AMOUNTS},
    )
    if not pc.any(found.drifting).as_py():
        return SCHEMA.empty_table()
    labels = pa.repeat(pa.scalar(""), n)
    for name in AMOUNTS:
        labels = pc.if_else(found.differs[name], pc.binary_join_element_wise(labels, pa.scalar(name), ","), labels)
    labels = pc.utf8_ltrim(labels, ",")
    table = pa.table(
        {
            "balance_id": ids,
            "ledger_id": page["ledger_id"],
            "currency": page["currency"],
            "drifting_columns": labels,
            "balance_drift": narrow(found.balance_drift(), ids, "balance_drift"),
            **{f"live_{name}": narrow(found.live[name], ids, f"live_{name}") for name in AMOUNTS},
            **{f"expected_{name}": narrow(found.expected[name], ids, f"expected_{name}") for name in AMOUNTS},
        },
        schema=SCHEMA,
    )
    return table.filter(found.drifting)


def _stale(snapshot: SnapshotPartition, why: str) -> ReportError:
    return ReportError(
        f"reconciliation_report {snapshot.snapshot_date}: balance_snapshots {snapshot.snapshot_date} is stale"
        f" ({why}): re-materialize it first"
    )


def reconciliation_report(settings: Settings, date: dt.date, page_rows: int = PAGE_ROWS) -> ReportResult:
    """Compare every live balance with snapshot ``date`` plus the journal rows it does not include."""
    started = time.monotonic()
    snapshot = SnapshotPartition.load(settings, date, f"reconciliation_report {date}")
    checked = 0
    sample: list[dict] = []
    with ReportWriter(settings, REPORT, PARTITION_KEY, date.isoformat(), SCHEMA, date,
                      {"source": f"balance_snapshots {date}"}) as writer:
        with asof.ledger_cursor(db.ledger_url(settings)) as cur:
            watermark = journal.open_view(cur)
            base = asof.Base(snapshot.cutoff, snapshot.watermark, snapshot.transaction_count)
            if not asof.base_is_intact(cur, base):
                raise _stale(snapshot, "journal rows at or below its watermark changed")
            later_balances = asof.prepare_delta(cur, FAR_FUTURE, base, new_balance_legs=False)
            snapshot_rows = align.SortedStream(snapshot.batches(["balance_id", *BASE]))
            live_rows = align.SortedStream(_live_pages(cur, page_rows))
            for base_page, page in align.aligned(snapshot_rows, live_rows):
                if page is None or page.num_rows == 0:
                    if base_page is not None and base_page.num_rows:
                        raise _stale(snapshot, "it holds balances that are no longer live")
                    continue
                drifting = drift_page(page, snapshot, base_page)
                writer.write(drifting)
                if len(sample) < SAMPLE_ROWS and drifting.num_rows:
                    sample += drifting.slice(0, SAMPLE_ROWS - len(sample)).to_pylist()
                checked += page.num_rows
            cur.execute("COMMIT")
        writer.publish()
    return writer.result(
        date.isoformat(), started,
        metrics={"balances_checked": checked, "drifting_balances": writer.rows,
                 "balances_with_later_legs": later_balances,
                 "live_read_transaction_id": watermark.max_transaction_id, "sample": sample},
    )
