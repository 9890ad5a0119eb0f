"""Live drift (the ``live_balances_match`` check): the latest partition plus the legs recorded since equals the
live ``blnk.balances`` rows of its changed balances, and a live row that differs is named, with its drift."""

from __future__ import annotations

import datetime as dt

import psycopg

from snapshot_pipeline import quality, snapshot
from tests.conftest import make_settings
from tests.helpers import apply_live, insert_transaction

DAY = dt.date(2026, 10, 31)


def _changed_balances(url: str, day: dt.date, count: int) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT balance_id FROM snapshot_index.balance_snapshots WHERE snapshot_date = %s"
            " AND currency = 'USD' ORDER BY balance_id LIMIT %s", (day, count))]


def test_live_drift_counts_later_legs_and_names_a_drifting_row(fresh_ledger, tmp_path):
    url = fresh_ledger
    settings = make_settings(url, tmp_path / "store")
    snapshot.take_snapshot(settings, DAY, 500)
    clean = quality.live_drift(settings, DAY)
    assert clean.passed and clean.details["evaluated"] is True and clean.metrics["balances_compared"] > 2
    source, destination, third = _changed_balances(url, DAY, 3)
    # a leg recorded after the partition, applied to the live rows as Blnk would: snapshot + later legs = live
    amount = 10**25 + 3
    insert_transaction(url, source, destination, amount, created_at=dt.datetime(2026, 12, 1, 9))
    apply_live(url, source, destination, amount)
    after = quality.live_drift(settings, DAY)
    assert after.passed, after.description
    # a live row that no journal row explains drifts, by exactly what differs
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE blnk.balances SET balance = balance + 7, credit_balance = credit_balance + 7"
                     " WHERE balance_id = %s", (third,))
    drifting = quality.live_drift(settings, DAY)
    assert not drifting.passed
    assert drifting.metrics["drifting_balances"] == 1 and drifting.metrics["total_absolute_balance_drift"] == 7
    assert drifting.details["drifting_balance_ids"] == [third]
