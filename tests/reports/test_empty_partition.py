"""Every report on an empty snapshot partition (0 balances: a day before the ledger's first row)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow.parquet as pq

from snapshot_pipeline import snapshot
from snapshot_pipeline.reports import month_end, movements, reconciliation, totals
from tests.conftest import make_settings

# The adversarial ledger starts on 2026-10-25 (its oldest rows 60 days before): July 2026 holds no balance.
EMPTY_DAYS = [dt.date(2026, 7, 30), dt.date(2026, 7, 31)]


def test_every_report_handles_an_empty_partition(adversarial_url, make_database, tmp_path):
    settings = make_settings(adversarial_url, tmp_path / "store", start="2026-07-01", index_url=make_database())
    for day in EMPTY_DAYS:
        assert snapshot.take_snapshot(settings, day, 100).rows == 0
    day = EMPTY_DAYS[-1]
    results = [
        movements.balance_movements(settings, day),
        totals.ledger_currency_totals(settings, day),
        reconciliation.reconciliation_report(settings, day),
        month_end.month_end_balances(settings, day),
    ]
    for result in results:
        assert result.rows == 0, result
        table = pq.read_table(result.path)
        assert table.num_rows == 0 and len(table.schema) > 0  # a valid, typed, empty partition
    assert pd.read_csv(results[-1].csv_path).empty
