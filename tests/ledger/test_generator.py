"""The generator keeps live balances consistent with its journal, the way Blnk does."""

from __future__ import annotations

import datetime as dt

import psycopg

from tests.oracle import expected_snapshot


def test_live_balances_equal_the_whole_journal(adversarial_url):
    # Blnk applies a leg when it is recorded, whatever its effective date: live = Σ over all time.
    expected = expected_snapshot(adversarial_url, dt.datetime(9999, 1, 1))
    with psycopg.connect(adversarial_url) as conn:
        rows = conn.execute(
            "SELECT balance_id, balance, credit_balance, debit_balance, inflight_balance,"
            " inflight_credit_balance, inflight_debit_balance FROM blnk.balances"
        ).fetchall()
    live = {r[0]: dict(zip(("balance", "credit_balance", "debit_balance", "inflight_balance",
                            "inflight_credit_balance", "inflight_debit_balance"), map(int, r[1:]), strict=True))
            for r in rows}
    assert live == expected


def test_no_self_transfers_and_currencies_match(adversarial_url):
    with psycopg.connect(adversarial_url) as conn:
        assert conn.execute("SELECT count(*) FROM blnk.transactions WHERE source = destination").fetchone()[0] == 0
        mismatched = conn.execute(
            "SELECT count(*) FROM blnk.transactions t JOIN blnk.balances s ON s.balance_id = t.source"
            " JOIN blnk.balances d ON d.balance_id = t.destination"
            " WHERE s.currency <> t.currency OR d.currency <> t.currency"
        ).fetchone()[0]
        assert mismatched == 0
