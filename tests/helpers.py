"""Small helpers shared by tests: reading the index, inserting journal rows, stopping a server process."""

from __future__ import annotations

import datetime as dt
import subprocess
import uuid

import psycopg

from tests.oracle import AMOUNTS


def index_values(url: str, date: dt.date, balance_ids) -> dict[str, dict[str, int] | None]:
    """The values the index answers for each balance at partition ``date`` (latest row at or before it)."""
    out = {}
    with psycopg.connect(url) as conn:
        for balance_id in balance_ids:
            row = conn.execute(
                "SELECT balance, credit_balance, debit_balance, inflight_balance, inflight_credit_balance,"
                " inflight_debit_balance FROM snapshot_index.balance_snapshots"
                " WHERE balance_id = %s AND snapshot_date <= %s ORDER BY snapshot_date DESC LIMIT 1",
                (balance_id, date),
            ).fetchone()
            out[balance_id] = None if row is None else dict(zip(AMOUNTS, (int(v) for v in row), strict=True))
    return out


def insert_transaction(url: str, source: str, destination: str, amount: int, *, status: str = "APPLIED",
                       created_at: dt.datetime, effective_date: dt.datetime | None = None,
                       parent: str | None = None, currency: str = "USD") -> str:
    transaction_id = f"txn_test_{uuid.uuid4().hex}"
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO blnk.transactions (transaction_id, parent_transaction, source, destination, amount,"
            " precise_amount, precision, currency, status, created_at, effective_date)"
            " VALUES (%s, %s, %s, %s, %s, %s, 100, %s, %s, %s, %s)",
            (transaction_id, parent, source, destination, amount / 100, amount, currency, status, created_at,
             effective_date),
        )
    return transaction_id


def apply_live(url: str, source: str, destination: str, amount: int) -> None:
    """What Blnk does to the live rows when it applies a transaction."""
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE blnk.balances SET credit_balance = credit_balance + %s, balance = balance + %s"
                     " WHERE balance_id = %s", (amount, amount, destination))
        conn.execute("UPDATE blnk.balances SET debit_balance = debit_balance + %s, balance = balance - %s"
                     " WHERE balance_id = %s", (amount, amount, source))


def two_balances(url: str, currency: str = "USD", before: dt.datetime | None = None) -> tuple[str, str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT balance_id FROM blnk.balances WHERE currency = %s AND created_at < %s"
            " ORDER BY balance_id LIMIT 2",
            (currency, before or dt.datetime(2026, 10, 1)),
        ).fetchall()
    return rows[0][0], rows[1][0]


def assert_balanced(table, date) -> None:
    """Double entry: per currency, Σ balance = 0 and Σ credit = Σ debit over a partition's rows."""
    sums: dict[str, list[int]] = {}
    for row in table.select(["currency", "balance", "credit_balance", "debit_balance"]).to_pylist():
        entry = sums.setdefault(row["currency"], [0, 0, 0])
        entry[0] += int(row["balance"])
        entry[1] += int(row["credit_balance"])
        entry[2] += int(row["debit_balance"])
    unbalanced = {c: v for c, v in sums.items() if v[0] != 0 or v[1] != v[2]}
    assert not unbalanced, f"{date}: partition does not balance: {unbalanced}"


def stop(process: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM a server the test started; SIGKILL it if it has not exited within ``grace`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
