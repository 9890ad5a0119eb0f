"""``ledger_currency_totals``: per ledger and currency, how many balances and their sums, on day ``D``.

One row per (``ledger_id``, ``currency``) present in ``balance_snapshots`` ``D``:
``balances`` (count), ``balance_sum``, ``credit_sum``, ``debit_sum`` (exact
``decimal128(38, 0)`` minor units). Computed by streaming the snapshot file and
aggregating each batch in Arrow, then the per-batch partial sums.
"""

from __future__ import annotations

import datetime as dt
import time

import pyarrow as pa
import pyarrow.compute as pc

from snapshot_pipeline.reports.common import ReportResult, ReportWriter, SnapshotPartition, narrow, wide
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import parquet

REPORT = "ledger_currency_totals"
PARTITION_KEY = "snapshot_date"
KEYS = ["ledger_id", "currency"]
SUMS = {"balance": "balance_sum", "credit_balance": "credit_sum", "debit_balance": "debit_sum"}

SCHEMA = pa.schema(
    [
        pa.field("ledger_id", pa.string()),
        pa.field("currency", pa.string()),
        pa.field("balances", pa.int64(), nullable=False),
        *[pa.field(name, parquet.AMOUNT, nullable=False) for name in SUMS.values()],
    ]
)


def aggregate(tables: list[pa.Table]) -> pa.Table:
    """Per-batch partial aggregates -> one row per key, sorted by ledger and currency."""
    if not tables:
        return SCHEMA.empty_table()
    partial = pa.concat_tables(tables)
    total = partial.group_by(KEYS).aggregate(
        [("balances", "sum"), *[(name, "sum") for name in SUMS.values()]]
    )
    total = total.sort_by([(k, "ascending") for k in KEYS])  # nulls last
    labels = pc.binary_join_element_wise(pc.fill_null(total["ledger_id"], "∅"),
                                         pc.fill_null(total["currency"], "∅"), "/")
    return pa.table(
        {
            "ledger_id": total["ledger_id"],
            "currency": total["currency"],
            "balances": total["balances_sum"],
            **{name: narrow(wide(total[f"{name}_sum"]), labels, name) for name in SUMS.values()},
        },
        schema=SCHEMA,
    )


def partial_totals(batch: pa.Table) -> pa.Table:
    """One batch of snapshot rows -> (ledger, currency, count, sums) in decimal256."""
    table = pa.table({**{k: batch[k] for k in KEYS}, **{SUMS[a]: wide(batch[a]) for a in SUMS}})
    grouped = table.group_by(KEYS).aggregate(
        [(SUMS["balance"], "count"), *[(name, "sum") for name in SUMS.values()]]
    )
    return pa.table(
        {
            **{k: grouped[k] for k in KEYS},
            "balances": grouped[f"{SUMS['balance']}_count"],
            **{name: wide(grouped[f"{name}_sum"]) for name in SUMS.values()},
        }
    )


def ledger_currency_totals(settings: Settings, date: dt.date) -> ReportResult:
    """Compute and publish ``ledger_currency_totals`` for day ``date``."""
    started = time.monotonic()
    snapshot = SnapshotPartition.load(settings, date, f"ledger_currency_totals {date}")
    partials = [partial_totals(batch) for batch in snapshot.batches([*KEYS, *SUMS])]
    totals = aggregate(partials)
    with ReportWriter(settings, REPORT, PARTITION_KEY, date.isoformat(), SCHEMA, date,
                      {"source": f"balance_snapshots {date}"}) as writer:
        writer.write(totals)
        writer.publish()
    rows = [
        {**row, **{name: int(row[name]) for name in SUMS.values()}} for row in totals.to_pylist()
    ]
    return writer.result(
        date.isoformat(), started,
        metrics={"totals": rows, "balances": sum(r["balances"] for r in rows)},
    )
