"""The ``live_balances_match`` check: the latest partition plus the legs it does not include equals the live
``blnk.balances`` rows of its changed balances (the definition and the comparison:
:mod:`snapshot_pipeline.snapshot.live`).

A snapshot run compares in its own view and records the outcome with its materialization; the check
reports that outcome while it belongs to the partition's current generation (:func:`live_drift` with
``recorded``), and otherwise compares on its own, in a new view (:func:`compare_now`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import pyarrow as pa

from snapshot_pipeline import db, snapshot
from snapshot_pipeline.ledger import asof, journal
from snapshot_pipeline.quality.outcome import SAMPLE_IDS, Outcome, published_entry
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.snapshot import live
from snapshot_pipeline.store import index

# The partition's changed balances (its index rows) with the four summed amounts, as exact text.
_CHANGED_SQL = """
SELECT balance_id, credit_balance::text AS credit_balance, debit_balance::text AS debit_balance,
       inflight_credit_balance::text AS inflight_credit_balance, inflight_debit_balance::text AS inflight_debit_balance
  FROM snapshot_index.balance_snapshots WHERE snapshot_date = $1::date ORDER BY balance_id COLLATE "C" """


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
    return live.widened(table, live.SUMMED)


def compare_now(settings: Settings, date: dt.date, origin) -> live.LiveDrift:
    """In a new REPEATABLE READ view of the ledger: partition ``date``'s changed balances (its index rows) plus
    the legs of ``S_now \\ S_D`` against their live rows."""
    snap = _changed(settings, date)
    with asof.ledger_cursor(db.ledger_url(settings)) as cur:
        view = journal.open_view(cur)
        later, now = live.later_and_live(cur, origin, snap["balance_id"])
        cur.execute("COMMIT")
    return live.drift_of(snap, later, now, view.read_at)


def _not_evaluated(reason: str) -> Outcome:
    return Outcome(True, f"not evaluated: {reason}", {"balances_compared": 0}, {"evaluated": False})


def live_drift(settings: Settings, date: dt.date, recorded: Mapping | None = None) -> Outcome:
    """For the latest partition: snapshot + the legs it does not include = live ``blnk.balances``, over the
    partition's changed balances only (its index rows).

    ``recorded`` is what the run that published the partition compared in its own view
    (:meth:`snapshot_pipeline.snapshot.live.LiveDrift.as_dict` plus that publication's ``generation``): it is
    reported as it is while the partition is still that generation. Otherwise the check compares now.

    A balance that did not change in the partition had the same values in the previous one, where it was
    compared when that one was the latest; the cost follows the day's activity: the index rows, the journal
    rows recorded since the partition's read (by key), and one probe per changed balance.
    """
    entry = published_entry(settings, date)
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        later_partition = index.nearest_after(conn, date)
        if later_partition is not None:
            return _not_evaluated(f"{later_partition.snapshot_date} is a later published partition (live drift is"
                                  " checked on the latest partition only)")
        if recorded is not None and recorded.get("generation") == entry.generation:
            return _outcome(live.LiveDrift.from_dict(recorded), "run")
        try:
            origin = snapshot.origin_of(conn, entry)
        except snapshot.SnapshotError:  # published again (or retired) meanwhile: that run's own check compares it
            return _not_evaluated(f"partition {date} was published again while it was checked")
    return _outcome(compare_now(settings, date, origin), "check")


def _outcome(found: live.LiveDrift, compared_in: str) -> Outcome:
    count = found.drifting_balances
    where = "the run's own view of the ledger" if compared_in == "run" else "a view of the ledger"
    return Outcome(
        count == 0,
        (f"snapshot + later legs equals the live row of every one of the {found.balances_compared:,} balances"
         f" changed in the partition (compared in {where} read at {found.compared_at})" if not count else
         f"{count} balance(s) drift from snapshot + later legs: {', '.join(found.drifting_balance_ids[:SAMPLE_IDS])}"
         f" (compared in {where} read at {found.compared_at})"),
        {"balances_compared": found.balances_compared, "drifting_balances": count,
         "total_absolute_balance_drift": found.total_absolute_balance_drift},
        {"evaluated": True, "compared_in": compared_in, "compared_at": found.compared_at,
         "drifting_balance_ids": found.drifting_balance_ids},
    )
