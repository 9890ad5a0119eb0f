"""An independent computation of snapshot values, straight from DESIGN §3, in one SQL query.

Deliberately written differently from the pipeline (no deltas, no paging, no
Arrow, no watermark): it sums the whole journal from genesis.
"""

from __future__ import annotations

import datetime as dt

import psycopg

ORACLE_SQL = """
WITH tx AS (
    SELECT * FROM blnk.transactions WHERE COALESCE(effective_date, created_at) < %(cutoff)s
),
settled AS (  -- what each INFLIGHT row's children (commits and voids) released before the cutoff
    SELECT parent_transaction, sum(precise_amount) AS released
      FROM tx WHERE status IN ('APPLIED', 'VOID') AND parent_transaction IS NOT NULL
     GROUP BY parent_transaction
),
open_holds AS (
    SELECT p.source, p.destination, p.precise_amount - COALESCE(s.released, 0) AS open_amount
      FROM tx p LEFT JOIN settled s ON s.parent_transaction = p.transaction_id
     WHERE p.status = 'INFLIGHT'
),
credits AS (SELECT destination AS id, sum(precise_amount) AS v FROM tx WHERE status = 'APPLIED' GROUP BY 1),
debits AS (SELECT source AS id, sum(precise_amount) AS v FROM tx WHERE status = 'APPLIED' GROUP BY 1),
held_in AS (SELECT destination AS id, sum(open_amount) AS v FROM open_holds GROUP BY 1),
held_out AS (SELECT source AS id, sum(open_amount) AS v FROM open_holds GROUP BY 1),
members AS (  -- balances that exist at the cutoff, and balances a counted leg touches (even before creation)
    SELECT balance_id AS id FROM blnk.balances WHERE created_at < %(cutoff)s
    UNION SELECT source FROM tx WHERE status IN ('APPLIED', 'INFLIGHT')
    UNION SELECT destination FROM tx WHERE status IN ('APPLIED', 'INFLIGHT')
)
SELECT m.id, COALESCE(c.v, 0), COALESCE(d.v, 0), COALESCE(hi.v, 0), COALESCE(ho.v, 0)
  FROM members m
  LEFT JOIN credits c ON c.id = m.id
  LEFT JOIN debits d ON d.id = m.id
  LEFT JOIN held_in hi ON hi.id = m.id
  LEFT JOIN held_out ho ON ho.id = m.id
"""


def expected_snapshot(url: str, cutoff: dt.datetime) -> dict[str, dict[str, int]]:
    """balance_id -> the six amounts, for every balance existing at ``cutoff`` (naive UTC) or touched before it."""
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


def existing_balances(url: str, at: dt.datetime) -> set[str]:
    """The balances whose row existed at ``at`` (created_at <= at, naive UTC): what ``existed`` says."""
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT balance_id FROM blnk.balances WHERE created_at <= %s", (at,))}
