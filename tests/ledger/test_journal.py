"""The step's next state from genesis (:func:`snapshot_pipeline.ledger.journal.finish_step`), against an
independent computation: the ids the view cannot see, and the re-read points."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest

from snapshot_pipeline import db
from snapshot_pipeline.ledger import journal
from tests.helpers import insert_transaction, two_balances

CUTOFF = dt.datetime(2026, 11, 1)


def _invisible_ids(conn, table: str, watermark: int) -> set[int]:
    rows = conn.execute(f"SELECT g FROM generate_series(1, %s) g EXCEPT SELECT id FROM blnk.{table}",
                        (watermark,)).fetchall()
    return {row[0] for row in rows}


def _reread_point(conn, table: str, watermark: int) -> int:
    first = conn.execute(f"SELECT min(id) FROM blnk.{table} WHERE created_at >= %s", (CUTOFF,)).fetchone()[0]
    return watermark if first is None else first - 1


def _hold_ids(url: str) -> tuple[psycopg.Connection, int, int]:
    """A session that inserts a transaction and a balance without committing: their ids are taken, not visible."""
    source, destination = two_balances(url)
    slow = psycopg.connect(url)
    tx = slow.execute(
        "INSERT INTO blnk.transactions (transaction_id, source, destination, amount, precise_amount, precision,"
        " currency, status, created_at) VALUES (%s, %s, %s, 1, 100, 100, 'USD', 'APPLIED', %s) RETURNING id",
        (f"txn_held_{uuid.uuid4().hex}", source, destination, CUTOFF - dt.timedelta(days=3))).fetchone()[0]
    balance = slow.execute(
        "INSERT INTO blnk.balances (balance_id, currency, ledger_id, created_at)"
        " VALUES (%s, 'USD', 'ldg_customers', %s) RETURNING id",
        (f"bln_held_{uuid.uuid4().hex}", CUTOFF - dt.timedelta(days=3))).fetchone()[0]
    # committed rows above them, so that the held ids lie below the view's watermarks
    insert_transaction(url, destination, source, 55, created_at=CUTOFF - dt.timedelta(days=2))
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO blnk.balances (balance_id, currency, ledger_id, created_at)"
                     " VALUES (%s, 'USD', 'ldg_customers', %s)", (f"bln_after_{uuid.uuid4().hex}", CUTOFF))
    return slow, tx, balance


@pytest.mark.parametrize("holes", [False, True])
def test_genesis_state_lists_every_invisible_id_and_the_reread_points(fresh_ledger, holes):
    """Whether or not the ranges have holes (a range without one is not walked pair by pair), the state lists
    exactly the ids below the watermarks the view cannot see, and the re-read points are the first ids recorded
    at or after the cutoff, minus one (found from genesis without walking the primary key)."""
    url = fresh_ledger
    slow = None
    if holes:
        slow, held_tx, held_balance = _hold_ids(url)
    try:
        ledger = db.connect_arrow(url)
        try:
            cur = ledger.cursor()
            view = journal.open_view(cur)
            step = journal.begin_step(cur, view, CUTOFF, journal.Origin.genesis())
            cur.execute("ROLLBACK")
            cur.close()
        finally:
            ledger.close()
        state = step.state
        listed = {kind: {i for k, i in zip(state["kind"].to_pylist(), state["id"].to_pylist(), strict=True)
                         if k == kind}
                  for kind in (journal.TRANSACTION_GAP, journal.BALANCE_GAP)}
        with psycopg.connect(url) as conn:
            assert listed[journal.TRANSACTION_GAP] == _invisible_ids(conn, "transactions", view.max_transaction_id)
            assert listed[journal.BALANCE_GAP] == _invisible_ids(conn, "balances", view.max_balance_id)
            assert step.view.reread_transaction_id == _reread_point(conn, "transactions", view.max_transaction_id)
            assert step.view.reread_balance_id == _reread_point(conn, "balances", view.max_balance_id)
        if slow is not None:
            assert held_tx in listed[journal.TRANSACTION_GAP] and held_balance in listed[journal.BALANCE_GAP]
        assert 0 < step.view.reread_transaction_id < view.max_transaction_id
    finally:
        if slow is not None:
            slow.rollback()
            slow.close()
