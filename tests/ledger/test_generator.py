"""The generator keeps live balances consistent with its journal, the way Blnk does."""

from __future__ import annotations

import datetime as dt

import psycopg

from snapshot_pipeline.ledger import generator
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


def test_the_seeding_bar_is_drawn_on_a_terminal_only(make_database, capsys):
    """Asked for progress with stderr not a terminal (a log, CI), the seeding writes no bar lines."""
    with psycopg.connect(make_database(), autocommit=True) as conn:
        generator.generate(conn, generator.LedgerSpec(balances=generator.MIN_BALANCES, transactions=200, days=2,
                                                      seed=3, start_date=dt.date(2026, 10, 1)), progress=True)
    assert "seeding transactions" not in capsys.readouterr().err
