"""The in-run live-drift comparison (``snapshot.live.InRunComparison``): the run compares its changed balances
with their live rows in its own view, and finds exactly what the check alone finds in a new view."""

from __future__ import annotations

import datetime as dt
import time

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from snapshot_pipeline import db, quality, snapshot
from snapshot_pipeline.amounts import AmountOverflow
from snapshot_pipeline.ledger import journal
from snapshot_pipeline.snapshot import live
from snapshot_pipeline.store import index
from tests.conftest import make_settings
from tests.helpers import apply_live, insert_transaction, two_balances
from tests.plans import ExplainingCursor, assert_ledger_read_by_key

DAY = dt.date(2026, 10, 31)
KEYS = ("balances_compared", "drifting_balances", "total_absolute_balance_drift")


def _later_legs(url: str) -> None:
    """Legs the partition does not include, applied to the live rows as Blnk would: a future-dated row recorded
    before the cutoff (pending in the state), a row recorded after it, and a hold open at the cutoff whose
    commit comes after it (the snapshot counts the hold as inflight, the live row has it applied)."""
    source, destination = two_balances(url)
    future = 10**25 + 3
    insert_transaction(url, source, destination, future, created_at=dt.datetime(2026, 10, 31, 10),
                       effective_date=dt.datetime(2026, 11, 5))
    later = 1_234_567
    insert_transaction(url, destination, source, later, created_at=dt.datetime(2026, 12, 1, 9))
    held = 98_765
    hold = insert_transaction(url, source, destination, held, status="INFLIGHT",
                              created_at=dt.datetime(2026, 10, 30, 12))
    insert_transaction(url, source, destination, held, parent=hold, created_at=dt.datetime(2026, 12, 1, 10))
    apply_live(url, source, destination, future)
    apply_live(url, destination, source, later)
    apply_live(url, source, destination, held)


def _fields(found) -> dict:
    return {key: found[key] for key in KEYS} | {"ids": found["drifting_balance_ids"]}


def _check_alone(settings) -> dict:
    outcome = quality.live_drift(settings, DAY)
    assert outcome.details["compared_in"] == "check"
    return {key: outcome.metrics[key] for key in KEYS} | {"ids": outcome.details["drifting_balance_ids"]}


def test_the_run_compares_in_its_own_view_and_finds_what_the_check_finds(fresh_ledger, tmp_path):
    url = fresh_ledger
    settings = make_settings(url, tmp_path / "store", timezone="America/New_York")
    snapshot.take_snapshot(settings, DAY - dt.timedelta(days=1), 500)
    _later_legs(url)
    result = snapshot.take_snapshot(settings, DAY, 500, compare_live=True)
    assert result.mode == "incremental" and result.live_drift is not None
    assert _fields(result.live_drift) == {"balances_compared": result.balances_changed, "drifting_balances": 0,
                                          "total_absolute_balance_drift": 0, "ids": []}
    assert _fields(result.live_drift) == _check_alone(settings)
    assert "live_drift_ms" in result.phases_ms

    # a live row that no journal row explains: named by the run, with its exact drift, as by the check
    with psycopg.connect(url) as conn:
        third = conn.execute("SELECT balance_id FROM snapshot_index.balance_snapshots WHERE snapshot_date = %s"
                             " ORDER BY balance_id OFFSET 2 LIMIT 1", (DAY,)).fetchone()[0]
        conn.execute("UPDATE blnk.balances SET debit_balance = debit_balance + 11, balance = balance - 11"
                     " WHERE balance_id = %s", (third,))
    again = snapshot.take_snapshot(settings, DAY, 500, compare_live=True)
    assert _fields(again.live_drift) == {"balances_compared": again.balances_changed, "drifting_balances": 1,
                                         "total_absolute_balance_drift": 11, "ids": [third]}
    assert _fields(again.live_drift) == _check_alone(settings)


def test_only_the_latest_partition_is_compared(fresh_ledger, tmp_path):
    settings = make_settings(fresh_ledger, tmp_path / "store")
    snapshot.take_snapshot(settings, DAY, 500)
    earlier = snapshot.take_snapshot(settings, DAY - dt.timedelta(days=1), 500, compare_live=True)
    assert earlier.live_drift is None and "live_drift_ms" not in earlier.phases_ms
    unasked = snapshot.take_snapshot(settings, DAY, 500)
    assert unasked.live_drift is None


def test_a_comparison_that_cannot_be_made_is_reported_and_the_partition_still_published(fresh_ledger, tmp_path):
    settings = make_settings(fresh_ledger, tmp_path / "store")
    snapshot.take_snapshot(settings, DAY - dt.timedelta(days=1), 500)
    with psycopg.connect(fresh_ledger) as conn:  # a live row wider than any amount the comparison holds
        conn.execute("UPDATE blnk.balances SET balance = %s WHERE balance_id = ("
                     " SELECT source FROM blnk.transactions WHERE created_at >= %s AND created_at < %s"
                     " ORDER BY id LIMIT 1)", (10**70, dt.datetime(2026, 10, 31), dt.datetime(2026, 11, 1)))
    lines: list[str] = []
    result = snapshot.take_snapshot(settings, DAY, 500, compare_live=True, log=lines.append)
    assert result.live_drift is None and result.mode == "incremental"
    assert any("live_drift=not_compared" in line and "AmountOverflow" in line for line in lines), lines
    with pytest.raises(AmountOverflow, match="more than 60 digits"):  # the check alone says so, as before
        quality.live_drift(settings, DAY)


def test_a_view_that_cannot_be_shared_leaves_the_comparison_to_the_check(fresh_ledger, tmp_path, monkeypatch):
    """The later legs are staged by a second session joined to the run's exported view; when the view cannot be
    exported, the run still publishes, says why, and the check compares on its own."""
    settings = make_settings(fresh_ledger, tmp_path / "store")
    snapshot.take_snapshot(settings, DAY - dt.timedelta(days=1), 500)

    def refused(cur):
        cur.execute("SELECT pg_export_snapshot() FROM no_such_table")  # fails inside the run's view

    monkeypatch.setattr(live.sessions, "export_snapshot", refused)
    lines: list[str] = []
    result = snapshot.take_snapshot(settings, DAY, 500, compare_live=True, log=lines.append)
    assert result.live_drift is None and result.mode == "incremental" and result.rows > 0
    assert any("live_drift=not_compared" in line for line in lines), lines
    monkeypatch.undo()
    assert quality.live_drift(settings, DAY).details["compared_in"] == "check"


def test_a_later_legs_session_that_fails_or_does_not_join_leaves_the_comparison_to_the_check(
        fresh_ledger, tmp_path, monkeypatch):
    """The second session fails after joining the run's view, or does not join in time: the run publishes all
    the same, says why, and does not wait for a join that will not come."""
    settings = make_settings(fresh_ledger, tmp_path / "store")
    snapshot.take_snapshot(settings, DAY - dt.timedelta(days=1), 500)
    monkeypatch.setattr(live, "_ALL_LATER_SQL", "SELECT * FROM no_such_table")
    lines: list[str] = []
    failed = snapshot.take_snapshot(settings, DAY, 500, compare_live=True, log=lines.append)
    assert failed.live_drift is None and failed.rows > 0
    assert any("live_drift=not_compared" in line and "no_such_table" in line for line in lines), lines
    monkeypatch.undo()

    real_join = live.sessions.join_view

    def late_join(cur, snapshot_id):
        time.sleep(1.5)
        real_join(cur, snapshot_id)

    monkeypatch.setattr(live, "JOIN_TIMEOUT_SECONDS", 0.2)
    monkeypatch.setattr(live.sessions, "join_view", late_join)
    lines.clear()
    late = snapshot.take_snapshot(settings, DAY, 500, compare_live=True, log=lines.append)
    assert late.live_drift is None and late.rows == failed.rows
    assert any("live_drift=not_compared" in line and "did not join" in line for line in lines), lines


def test_a_genesis_leaves_the_comparison_to_the_check(fresh_ledger, tmp_path):
    """A full refresh merges every balance as changed, while the partition's changes (its index rows) are against
    the day before: the run does not compare, the check compares the index rows on its own."""
    url = fresh_ledger
    settings = make_settings(url, tmp_path / "store")
    snapshot.take_snapshot(settings, DAY - dt.timedelta(days=1), 500)
    refreshed = snapshot.take_snapshot(settings, DAY, 500, compare_live=True, full_refresh=True)
    assert refreshed.mode == "genesis" and refreshed.live_drift is None
    check = quality.live_drift(settings, DAY)
    assert check.details["compared_in"] == "check"
    assert check.metrics["balances_compared"] == refreshed.balances_changed < refreshed.rows


@pytest.mark.parametrize(("batch_size", "compared_rows"), [(7, 10), (100_000, live.COMPARED_ROWS)])
def test_the_comparison_follows_the_merge_chunk_by_chunk(fresh_ledger, tmp_path, monkeypatch, batch_size,
                                                         compared_rows):
    """The run compares as it merges (live amounts from the delta's own probe, kept until their changed rows are
    written): in chunks of 7 rows compared 10 at a time, or in one, drifting balances spread over the day are
    found, each once, with their exact drift, as the check finds them in a view of its own."""
    monkeypatch.setattr(live, "COMPARED_ROWS", compared_rows)
    url = fresh_ledger
    settings = make_settings(url, tmp_path / "store")
    snapshot.take_snapshot(settings, DAY - dt.timedelta(days=1), 500)
    _later_legs(url)
    first = snapshot.take_snapshot(settings, DAY, 500)
    with psycopg.connect(url) as conn:
        spread = [row[0] for row in conn.execute(
            "SELECT balance_id FROM snapshot_index.balance_snapshots WHERE snapshot_date = %s"
            " ORDER BY balance_id COLLATE \"C\"", (DAY,)).fetchall()[::97]]
        for n, balance_id in enumerate(spread):  # credit and balance moved together, by 1..k
            conn.execute("UPDATE blnk.balances SET credit_balance = credit_balance + %s, balance = balance + %s"
                         " WHERE balance_id = %s", (n + 1, n + 1, balance_id))
    result = snapshot.take_snapshot(settings, DAY, batch_size, compare_live=True)
    assert result.batches > (10 if batch_size == 7 else 0) and result.balances_changed == first.balances_changed
    expected_total = sum(range(1, len(spread) + 1))
    assert _fields(result.live_drift) == {"balances_compared": first.balances_changed,
                                          "drifting_balances": len(spread),
                                          "total_absolute_balance_drift": expected_total,
                                          "ids": sorted(spread)}
    assert _fields(result.live_drift) == _check_alone(settings)


def test_a_null_live_amount_drifts_in_the_run_as_in_the_check(fresh_ledger, tmp_path):
    """A live row with a NULL amount (a schema without NOT NULL, as a hand-made ledger may have) matches no
    snapshot value: the run and the check both name it."""
    url = fresh_ledger
    settings = make_settings(url, tmp_path / "store")
    snapshot.take_snapshot(settings, DAY - dt.timedelta(days=1), 500)
    snapshot.take_snapshot(settings, DAY, 500)
    with psycopg.connect(url) as conn:
        changed = conn.execute("SELECT balance_id FROM snapshot_index.balance_snapshots WHERE snapshot_date = %s"
                               " ORDER BY balance_id OFFSET 5 LIMIT 1", (DAY,)).fetchone()[0]
        conn.execute("ALTER TABLE blnk.balances ALTER COLUMN inflight_debit_balance DROP NOT NULL")
        conn.execute("UPDATE blnk.balances SET inflight_debit_balance = NULL WHERE balance_id = %s", (changed,))
    result = snapshot.take_snapshot(settings, DAY, 500, compare_live=True)
    assert result.live_drift is not None
    assert _fields(result.live_drift)["ids"] == [changed]
    assert _fields(result.live_drift) == _check_alone(settings)


def test_the_comparison_probes_the_ledger_by_key_in_key_order(fresh_ledger, tmp_path):
    """The live rows and the later legs are read by key only: one probe per compared balance through the unique
    ``balance_id`` index, taken in key order (so no sort follows the probes), never a walk of blnk.balances."""
    url = fresh_ledger
    settings = make_settings(url, tmp_path / "store")
    snapshot.take_snapshot(settings, DAY - dt.timedelta(days=1), 500)
    _later_legs(url)
    snapshot.take_snapshot(settings, DAY, 500)
    with db.connect(settings.snapshot_database_url, autocommit=True) as conn:
        origin = snapshot.origin_of(conn, index.manifest(conn, DAY))
        ids = pa.array([row[0] for row in conn.execute(
            "SELECT balance_id FROM snapshot_index.balance_snapshots WHERE snapshot_date = %s", (DAY,))])
    ledger = db.connect_arrow(url)
    try:
        cur = ExplainingCursor(ledger.cursor())
        journal.open_view(cur)
        cur.execute("SET LOCAL enable_seqscan = off")  # a small ledger makes whole scans cheap: only keys remain
        later, now = live.later_and_live(cur, origin, ids)
        cur.execute("ROLLBACK")
    finally:
        ledger.close()
    assert now.num_rows == later.num_rows == len(ids) > 2
    assert now["balance_id"].to_pylist() == sorted(ids.to_pylist())  # byte order, as the snapshot is sorted
    assert pc.sum(pc.not_equal(later["credit_balance"], pa.scalar(0, later["credit_balance"].type))).as_py() >= 1
    assert assert_ledger_read_by_key(cur.plans, probes_only=True, bitmap_scans=False) >= 4
    probes = cur.plan_of(live._LIVE_SQL)
    assert probes["Node Type"] == "Nested Loop", probes["Node Type"]  # no sort after the probes
    assert probes["Plans"][0]["Node Type"] == "Sort", probes["Plans"][0]["Node Type"]  # the ids, in key order
