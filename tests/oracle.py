"""An independent computation of snapshot values, straight from DESIGN §3, in one SQL query.

Deliberately written differently from the pipeline (no deltas, no paging, no
Arrow): it sums the journal from genesis with correlated subqueries.
"""

from __future__ import annotations

import datetime as dt

import psycopg

ORACLE_SQL = """
WITH tx AS (
    SELECT * FROM blnk.transactions WHERE COALESCE(effective_date, created_at) < %(cutoff)s
),
open_holds AS (
    SELECT p.source, p.destination,
           p.precise_amount - COALESCE((
               SELECT sum(c.precise_amount) FROM tx c
                WHERE c.parent_transaction = p.transaction_id AND c.status IN ('APPLIED', 'VOID')
           ), 0) AS open_amount
      FROM tx p WHERE p.status = 'INFLIGHT'
)
SELECT b.balance_id,
       COALESCE((SELECT sum(precise_amount) FROM tx WHERE status = 'APPLIED' AND destination = b.balance_id), 0),
       COALESCE((SELECT sum(precise_amount) FROM tx WHERE status = 'APPLIED' AND source = b.balance_id), 0),
       COALESCE((SELECT sum(open_amount) FROM open_holds WHERE destination = b.balance_id), 0),
       COALESCE((SELECT sum(open_amount) FROM open_holds WHERE source = b.balance_id), 0)
  FROM blnk.balances b
 WHERE b.created_at < %(cutoff)s
"""


def expected_snapshot(url: str, cutoff: dt.datetime) -> dict[str, dict[str, int]]:
    """balance_id -> the six amounts, for every balance existing at ``cutoff`` (naive UTC)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(ORACLE_SQL, {"cutoff": cutoff}).fetchall()
    out = {}
    for balance_id, credit, debit, inflight_credit, inflight_debit in rows:
        credit, debit, ic, idb = int(credit), int(debit), int(inflight_credit), int(inflight_debit)
        out[balance_id] = {
            "balance": credit - debit,
            "credit_balance": credit,
            "debit_balance": debit,
            "inflight_balance": ic - idb,
            "inflight_credit_balance": ic,
            "inflight_debit_balance": idb,
        }
    return out


AMOUNTS = ("balance", "credit_balance", "debit_balance", "inflight_balance", "inflight_credit_balance",
           "inflight_debit_balance")


def snapshot_values(table) -> dict[str, dict[str, int]]:
    """Parquet table -> the same shape as :func:`expected_snapshot` (Python ints, exact)."""
    rows = table.select(["balance_id", *AMOUNTS]).to_pylist()
    return {r["balance_id"]: {k: int(r[k]) for k in AMOUNTS} for r in rows}
