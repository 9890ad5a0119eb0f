"""Live drift: a snapshot plus the legs it does not include, against the live ``blnk.balances`` rows.

:func:`compare` is the one definition of drift, used by the ``live_balances_match`` check
(:func:`live_drift`, over the latest partition's changed balances) and by the reconciliation report
(:mod:`snapshot_pipeline.reports.reconciliation`, over every live balance). The two find the later legs
differently, each by the access path its scope needs: the check sums the legs of a few thousand
balances through Blnk's (source) and (destination) indexes (:data:`_LIVE_SQL`, legs dated at or after
the cutoff), the report sums ``S_now \\ S_D`` for the whole ledger in one effective-time pass
(:func:`snapshot_pipeline.ledger.asof.prepare_delta`, which also counts the rows the partition's read
could not see).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from snapshot_pipeline import amounts, db
from snapshot_pipeline.quality.outcome import SAMPLE_IDS, Outcome, published_entry
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import index
from snapshot_pipeline.store import parquet as store

AMOUNTS = store.AMOUNT_COLUMNS
# The columns a snapshot and the later legs add up; balance and inflight_balance follow from them.
SUMMED = ("credit_balance", "debit_balance", "inflight_credit_balance", "inflight_debit_balance")


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Live amounts against snapshot + later legs, row by row (wide decimals, by column name)."""

    live: dict[str, pa.Array]
    expected: dict[str, pa.Array]
    differs: dict[str, pa.Array]  # per amount column: live != expected
    drifting: pa.Array  # per row: any of the six differs

    def balance_drift(self) -> pa.Array:
        """live − expected ``balance``, per row."""
        return pc.subtract(self.live["balance"], self.expected["balance"])


def compare(snapshot: Mapping[str, pa.Array], later: Mapping[str, pa.Array],
            live: Mapping[str, pa.Array]) -> Comparison:
    """The one definition of live drift.

    ``snapshot`` and ``later`` hold the :data:`SUMMED` columns (the snapshot's values, zero where it has no
    row, and the sums of the legs it does not include), ``live`` the six :data:`AMOUNTS` of the live rows,
    all wide (:data:`snapshot_pipeline.amounts.WIDE`) and aligned by row. Expected = snapshot + later for
    the summed columns, ``balance = credit − debit`` and ``inflight_balance = inflight_credit −
    inflight_debit``; a row drifts when any of its six live amounts differs from the expected one.
    """
    expected = {name: pc.add(snapshot[name], later[name]) for name in SUMMED}
    expected["balance"] = pc.subtract(expected["credit_balance"], expected["debit_balance"])
    expected["inflight_balance"] = pc.subtract(expected["inflight_credit_balance"], expected["inflight_debit_balance"])
    live = {name: live[name] for name in AMOUNTS}
    differs = {name: pc.not_equal(live[name], expected[name]) for name in AMOUNTS}
    return Comparison(live, expected, differs, functools.reduce(pc.or_, differs.values()))

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
     CROSS JOIN LATERAL (VALUES (p.destination, -c.amount, 0), (p.source, 0, -c.amount))
           AS x(balance_id, held_in, held_out)
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
            rows = ledger.execute(_LIVE_SQL, {"ids": chunk, "cutoff": entry.cutoff_at}).fetchall()
            chunk_drifting, chunk_total = _chunk_drift(rows, snap)
            drifting += chunk_drifting
            total += chunk_total
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


def _chunk_drift(rows: list[tuple], snap: dict[str, tuple[int, ...]]) -> tuple[list[str], int]:
    """One chunk of :data:`_LIVE_SQL` rows -> its drifting balance ids and their Σ |balance drift|."""
    drifting = [row[0] for row in rows if not row[1]]  # in the snapshot, not in blnk.balances
    present = [row for row in rows if row[1]]
    if not present:
        return drifting, 0

    def column(values) -> pa.Array:
        return pa.array([int(v) for v in values], amounts.WIDE)

    live = {name: column(row[2 + i] for row in present) for i, name in enumerate(AMOUNTS)}
    later = {name: column(row[8 + i] for row in present) for i, name in enumerate(SUMMED)}
    base = {name: column(snap[row[0]][AMOUNTS.index(name)] for row in present) for name in SUMMED}
    found = compare(base, later, live)
    drifting += pa.array([row[0] for row in present], pa.string()).filter(found.drifting).to_pylist()
    total = pc.sum(pc.abs(found.balance_drift())).as_py()
    return drifting, int(total or 0)
