"""``month_end_balances``: every balance at the last cutoff of a month, in Parquet and CSV.

The month's last cutoff is the start of the next month in the business time
zone; the values are those of ``balance_snapshots`` for the month's last day
(the report needs that partition and fails clearly without it). Written as

* ``reports/month_end_balances/month=YYYY-MM/part-00000.parquet`` (the snapshot's
  columns plus ``snapshot_date``), and
* ``reports/month_end_balances_csv/month_end_balances_YYYY-MM.csv`` with a header
  row, exact integer minor units and UTC timestamps, for an auditor's spreadsheet.
"""

from __future__ import annotations

import datetime as dt
import time

import pyarrow as pa

from snapshot_pipeline import calendar
from snapshot_pipeline.reports.common import (
    CsvWriter,
    ReportResult,
    ReportWriter,
    SnapshotPartition,
    wide,
)
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import parquet
from snapshot_pipeline.store.location import Store

REPORT = "month_end_balances"
PARTITION_KEY = "month"
CSV_DIR = "month_end_balances_csv"

SCHEMA = pa.schema([pa.field("snapshot_date", pa.date32(), nullable=False), *parquet.SNAPSHOT_SCHEMA])


def month_start(month: dt.date) -> dt.date:
    return month.replace(day=1)


def csv_path(store: Store, month: dt.date) -> str:
    label = month.strftime("%Y-%m")
    return f"{store.report_dir(CSV_DIR)}/{REPORT}_{label}.csv"


def month_end_balances(settings: Settings, month: dt.date) -> ReportResult:
    """Compute and publish ``month_end_balances`` for the month holding ``month``."""
    started = time.monotonic()
    month = month_start(month)
    label = month.strftime("%Y-%m")
    day = calendar.last_day_of_month(month)
    snapshot = SnapshotPartition.load(settings, day, f"month_end_balances {label}")
    currency_totals: dict[str, int] = {}
    with ReportWriter(settings, REPORT, PARTITION_KEY, label, SCHEMA, month,
                      {"source": f"balance_snapshots {day}", "cutoff": snapshot.cutoff.isoformat() + "Z"}) as writer, \
            CsvWriter(settings, csv_path(Store.at(settings.storage_uri), month), SCHEMA) as csv:
        for batch in snapshot.batches(list(parquet.SNAPSHOT_SCHEMA.names)):
            rows = batch.add_column(0, "snapshot_date", pa.repeat(pa.scalar(day, pa.date32()), batch.num_rows))
            rows = rows.cast(SCHEMA)
            writer.write(rows)
            csv.write(rows)
            grouped = pa.table({"currency": rows["currency"], "balance": wide(rows["balance"])}) \
                .group_by("currency").aggregate([("balance", "sum")])
            sums = zip(grouped["currency"].to_pylist(), grouped["balance_sum"].to_pylist(), strict=True)
            for currency, total in sums:
                currency_totals[currency] = currency_totals.get(currency, 0) + int(total)
        csv_written = csv.publish()
        writer.publish()
    return writer.result(
        month.isoformat(), started,
        metrics={"snapshot_date": day.isoformat(), "cutoff": snapshot.cutoff.isoformat() + "Z",
                 "balance_by_currency": dict(sorted(currency_totals.items(), key=lambda kv: str(kv[0])))},
        csv_path=csv_written,
    )
