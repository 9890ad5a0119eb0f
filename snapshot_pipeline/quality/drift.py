"""Live drift: the latest partition plus the legs dated after it against the live blnk.balances rows."""

from __future__ import annotations

import datetime as dt

from snapshot_pipeline import db
from snapshot_pipeline.quality.outcome import SAMPLE_IDS, Outcome, published_entry
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import index

_LIVE_SQL = """
WITH ids AS (SELECT unnest(%(ids)s::text[]) AS balance_id),
late AS (  -- legs of the given balances dated at or after the cutoff: Blnk's (source) and (destination) indexes
    SELECT t.transaction_id, t.parent_transaction, t.source, t.destination, t.status,
           COALESCE(t.precise_amount, 0) AS amount
      FROM blnk.transactions t
     WHERE (t.source = ANY(%(ids)s::text[]) OR t.destination = ANY(%(ids)s::text[]))
       AND COALESCE(t.effective_date, t.created_at) >= %(cutoff)s
       AND t.status IN ('APPLIED', 'INFLIGHT', 'VOID')
),
after AS (
    SELECT destination AS balance_id, amount AS credit, 0 AS debit, 0 AS held_in, 0 AS held_out
      FROM late WHERE status = 'APPLIED'
    UNION ALL SELECT source, 0, amount, 0, 0 FROM late WHERE status = 'APPLIED'
    UNION ALL SELECT destination, 0, 0, amount, 0 FROM late WHERE status = 'INFLIGHT'
    UNION ALL SELECT source, 0, 0, 0, amount FROM late WHERE status = 'INFLIGHT'
    -- releases the snapshot did not count: the commit/void is at or after the cutoff ... (unique transaction_id)
    UNION ALL SELECT x.balance_id, 0, 0, x.held_in, x.held_out
      FROM late c JOIN blnk.transactions p ON p.transaction_id = c.parent_transaction
     CROSS JOIN LATERAL (VALUES (p.destination, -c.amount, 0), (p.source, 0, -c.amount)) AS x(balance_id, held_in, held_out)
     WHERE c.status IN ('APPLIED', 'VOID') AND p.status = 'INFLIGHT'
    -- ... or it is before the cutoff but its hold is at or after it ((parent_transaction) index)
    UNION ALL SELECT x.balance_id, 0, 0, x.held_in, x.held_out
      FROM late p JOIN blnk.transactions c ON c.parent_transaction = p.transaction_id
     CROSS JOIN LATERAL (VALUES (p.destination, -COALESCE(c.precise_amount, 0), 0),
                                (p.source, 0, -COALESCE(c.precise_amount, 0))) AS x(balance_id, held_in, held_out)
     WHERE p.status = 'INFLIGHT' AND c.status IN ('APPLIED', 'VOID')
       AND COALESCE(c.effective_date, c.created_at) < %(cutoff)s
),
sums AS (
    SELECT balance_id, sum(credit) AS credit, sum(debit) AS debit, sum(held_in) AS held_in,
           sum(held_out) AS held_out
      FROM after GROUP BY balance_id
)
SELECT i.balance_id, b.balance_id IS NOT NULL,
       b.balance, b.credit_balance, b.debit_balance, b.inflight_balance, b.inflight_credit_balance,
       b.inflight_debit_balance,
       COALESCE(s.credit, 0), COALESCE(s.debit, 0), COALESCE(s.held_in, 0), COALESCE(s.held_out, 0)
  FROM ids i
  LEFT JOIN blnk.balances b ON b.balance_id = i.balance_id  -- unique (balance_id)
  LEFT JOIN sums s ON s.balance_id = i.balance_id
"""

LIVE_CHUNK = 10_000  # balance ids per ledger statement


def changed_balances(settings: Settings, date: dt.date) -> dict[str, tuple[int, ...]]:
    """The partition's index rows: exactly the balances that changed since the previous partition
    (all balances for a full anchor), with their six snapshot amounts."""
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        return index.changed_rows(conn, date)


def live_drift(settings: Settings, date: dt.date) -> Outcome:
    """For the latest partition: snapshot + legs dated at or after the cutoff = live ``blnk.balances``,
    over the partition's changed balances only (its index rows).

    A balance that did not change in the partition had the same values in the previous one, where
    it was compared when that one was the latest; the cost follows the day's activity.
    """
    entry = published_entry(settings, date)
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        later = index.nearest_after(conn, date)
    if later is not None:
        return Outcome(True, f"not evaluated: {later.snapshot_date} is a later published partition"
                             " (live drift is checked on the latest partition only)",
                       {"balances_compared": 0}, {"evaluated": False})
    snap = changed_balances(settings, date)
    ids = sorted(snap)
    drifting: list[str] = []
    total = 0
    with db.connect(db.ledger_url(settings), autocommit=True, what="ledger database") as ledger:
        for start in range(0, len(ids), LIVE_CHUNK):
            chunk = ids[start:start + LIVE_CHUNK]
            for row in ledger.execute(_LIVE_SQL, {"ids": chunk, "cutoff": entry.cutoff_at}):
                balance_id, present = row[0], row[1]
                if not present:  # in the snapshot, not in blnk.balances
                    drifting.append(balance_id)
                    continue
                live = tuple(int(v) for v in row[2:8])
                after_credit, after_debit, held_in, held_out = (int(v) for v in row[8:12])
                _, credit, debit, _, inflight_in, inflight_out = snap[balance_id]
                credit, debit = credit + after_credit, debit + after_debit
                inflight_in, inflight_out = inflight_in + held_in, inflight_out + held_out
                expected = (credit - debit, credit, debit, inflight_in - inflight_out, inflight_in, inflight_out)
                if expected != live:
                    drifting.append(balance_id)
                    total += abs(live[0] - expected[0])
    drifting.sort()
    count = len(drifting)
    return Outcome(
        count == 0,
        (f"snapshot + later legs equals the live row of every one of the {len(ids):,} balances changed in the"
         " partition" if not count else
         f"{count} balance(s) drift from snapshot + later legs: {', '.join(drifting[:SAMPLE_IDS])}"),
        {"balances_compared": len(ids), "drifting_balances": count, "total_absolute_balance_drift": total},
        {"evaluated": True, "drifting_balance_ids": drifting[:100]},
    )
