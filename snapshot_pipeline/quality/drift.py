"""Live drift: a snapshot plus the legs it does not include, against the live ``blnk.balances`` rows.

:func:`compare` is the one definition of drift, used by the ``live_balances_match`` check
(:func:`live_drift`, over the latest partition's changed balances) and by the reconciliation report
(:mod:`snapshot_pipeline.reports.reconciliation`, over every live balance). The later legs are
``S_now \\ S_D``: the check rolls the partition forward to the end of time with the snapshot core's own
key-only step (:func:`snapshot_pipeline.ledger.journal.begin_step`: the rows recorded since the
partition's read, its pending and gap rows, by primary key) and reads the live rows in the same
consistent view; the report sums ``S_now \\ S_D`` for the whole ledger in one effective-time pass
(:func:`snapshot_pipeline.ledger.asof.prepare_delta`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from snapshot_pipeline import amounts, db, snapshot
from snapshot_pipeline.ledger import asof, journal
from snapshot_pipeline.quality.outcome import SAMPLE_IDS, Outcome, published_entry
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.snapshot import merge
from snapshot_pipeline.store import index, parquet

AMOUNTS = parquet.AMOUNT_COLUMNS
# The columns a snapshot and the later legs add up; balance and inflight_balance follow from them.
SUMMED = merge.SUMMED


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

END_OF_TIME = dt.datetime(9999, 12, 31)  # the cutoff of "everything the journal holds now"

# The partition's changed balances (its index rows) with the four summed amounts, as exact text.
_CHANGED_SQL = """
SELECT balance_id, credit_balance::text AS credit_balance, debit_balance::text AS debit_balance,
       inflight_credit_balance::text AS inflight_credit_balance, inflight_debit_balance::text AS inflight_debit_balance
  FROM snapshot_index.balance_snapshots WHERE snapshot_date = $1::date"""

# For the balances in the temp table drift_ids: their live rows (by the unique balance_id index) and the sums
# of the staged legs on them (S_now \ S_D), in one statement: no other balance is summed or probed.
_LATER_AND_LIVE_SQL = f"""
WITH legs (balance_id, currency, kind, amount) AS ({journal.LEGS_SQL}
), later AS (
    SELECT balance_id,{journal.LEG_SUMS}
      FROM legs WHERE kind IS NOT NULL AND balance_id IN (SELECT balance_id FROM drift_ids) GROUP BY balance_id
)
SELECT i.balance_id, b.balance_id IS NOT NULL AS known, b.balance::text AS balance,
       b.credit_balance::text AS credit_balance, b.debit_balance::text AS debit_balance,
       b.inflight_balance::text AS inflight_balance, b.inflight_credit_balance::text AS inflight_credit_balance,
       b.inflight_debit_balance::text AS inflight_debit_balance,
       COALESCE(l.credit, 0)::text AS later_credit, COALESCE(l.debit, 0)::text AS later_debit,
       COALESCE(l.inflight_credit, 0)::text AS later_inflight_credit,
       COALESCE(l.inflight_debit, 0)::text AS later_inflight_debit
  FROM drift_ids i LEFT JOIN blnk.balances b ON b.balance_id = i.balance_id
  LEFT JOIN later l ON l.balance_id = i.balance_id"""


def _changed(settings: Settings, date: dt.date) -> pa.Table:
    """The partition's index rows (balance_id and the four summed amounts, wide)."""
    conn = db.connect_arrow(db.snapshot_url(settings), "snapshot index database")
    try:
        cur = conn.cursor()
        cur.execute(_CHANGED_SQL, parameters=(date.isoformat(),))
        table = cur.fetch_arrow_table()
        cur.close()
    finally:
        conn.close()
    return _widened(table, SUMMED)


def _widened(table: pa.Table, names) -> pa.Table:
    """``balance_id`` and the named amount columns as exact wide decimals."""
    ids = table["balance_id"]
    return pa.table({"balance_id": ids, **{name: amounts.widen(table[name], ids, name) for name in names}})


def _later_and_live(settings: Settings, entry: index.ManifestEntry, origin: journal.Origin, ids: pa.Array
                    ) -> tuple[pa.Table, pa.Table]:
    """In one REPEATABLE READ view of the ledger: the legs of ``S_now \\ S_D`` on the balances ``ids``, summed
    per balance (the partition's step to the end of time, staged by key only), and their live rows."""
    with asof.ledger_cursor(db.ledger_url(settings)) as cur:
        journal.open_view(cur)
        journal.stage_step(cur, END_OF_TIME, origin)
        cur.execute("DROP TABLE IF EXISTS drift_ids")
        cur.adbc_ingest("drift_ids", pa.table({"balance_id": ids}), mode="create", temporary=True)
        cur.execute("ANALYZE drift_ids")
        cur.execute(_LATER_AND_LIVE_SQL)
        both = cur.fetch_arrow_table()
        cur.execute("COMMIT")
    later = pa.table({"balance_id": both["balance_id"],
                      **{field: both[f"later_{name}"] for name, field in merge.DELTA_TO_FIELD.items()}})
    live = both.select(["balance_id", "known", *AMOUNTS])
    return _widened(later, SUMMED), live


def live_drift(settings: Settings, date: dt.date) -> Outcome:
    """For the latest partition: snapshot + the legs it does not include = live ``blnk.balances``, over the
    partition's changed balances only (its index rows).

    A balance that did not change in the partition had the same values in the previous one, where it was
    compared when that one was the latest; the cost follows the day's activity: the index rows, the journal
    rows recorded since the partition's read (by key), and one probe per changed balance.
    """
    entry = published_entry(settings, date)
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        later_partition = index.nearest_after(conn, date)
        try:
            origin = snapshot.origin_of(conn, entry) if later_partition is None else None
        except snapshot.SnapshotError:  # published again (or retired) meanwhile: that run's own check compares it
            return Outcome(True, f"not evaluated: partition {date} was published again while it was checked",
                           {"balances_compared": 0}, {"evaluated": False})
    if later_partition is not None or origin is None:
        return Outcome(True, f"not evaluated: {later_partition.snapshot_date if later_partition else 'a later'}"
                             " is a later published partition (live drift is checked on the latest partition only)",
                       {"balances_compared": 0}, {"evaluated": False})
    snap = _changed(settings, date)
    later, live = _later_and_live(settings, entry, origin, snap["balance_id"])
    drifting, total = _drift(snap, later, live)
    count = len(drifting)
    return Outcome(
        count == 0,
        (f"snapshot + later legs equals the live row of every one of the {snap.num_rows:,} balances changed in"
         " the partition" if not count else
         f"{count} balance(s) drift from snapshot + later legs: {', '.join(drifting[:SAMPLE_IDS])}"),
        {"balances_compared": snap.num_rows, "drifting_balances": count, "total_absolute_balance_drift": total},
        {"evaluated": True, "drifting_balance_ids": drifting[:100]},
    )


def _drift(snap: pa.Table, later: pa.Table, live: pa.Table) -> tuple[list[str], int]:
    """Sorted drifting balance ids (a snapshot row with no live row drifts too) and their Σ |balance drift|."""
    joined = snap.join(later, "balance_id", join_type="left outer", right_suffix="_later") \
        .join(live, "balance_id", join_type="left outer", right_suffix="_live")
    missing = pc.invert(pc.fill_null(joined["known"], False))
    drifting = joined.filter(missing)["balance_id"].to_pylist()
    present = joined.filter(pc.invert(missing))
    if present.num_rows:
        ids = present["balance_id"]
        zero = amounts.zeros(present.num_rows)
        base = {name: present[name].combine_chunks() for name in SUMMED}
        after = {name: pc.fill_null(present[f"{name}_later"], zero).combine_chunks() for name in SUMMED}
        now = {name: amounts.widen(present[name if name not in SUMMED else f"{name}_live"], ids, name)
               for name in AMOUNTS}
        found = compare(base, after, now)
        drifting += pc.filter(ids, found.drifting).to_pylist()
        total = int(pc.sum(pc.abs(pc.filter(found.balance_drift(), found.drifting))).as_py() or 0)
    else:
        total = 0
    return sorted(drifting), total
