"""Roll-forward exactness on the hard cases (DESIGN §3), and proof that it reads the ledger by key only."""

from __future__ import annotations

import datetime as dt
import random
import uuid

import psycopg
import pytest

from snapshot_pipeline import calendar, query, snapshot
from snapshot_pipeline.ledger import journal
from snapshot_pipeline.quality import lateness
from snapshot_pipeline.store import catalog
from tests.conftest import make_settings
from tests.helpers import assert_balanced, index_values, insert_transaction, two_balances
from tests.oracle import expected_snapshot, snapshot_values
from tests.plans import ExplainingCursor, assert_ledger_read_by_key

DAYS = [dt.date(2026, 10, 27) + dt.timedelta(days=i) for i in range(10)]


def assert_exact_and_balanced(settings, url: str, date: dt.date) -> None:
    table = catalog.read_partition(settings, date)
    expected = expected_snapshot(url, calendar.cutoff(date, settings.timezone))
    got = snapshot_values(table)
    assert set(got) == set(expected), f"{date}: balance sets differ: {len(set(expected) ^ set(got))} ids"
    wrong = {k: (expected[k], got[k]) for k in expected if expected[k] != got[k]}
    assert not wrong, f"{date}: {len(wrong)} balances differ, e.g. {next(iter(wrong.items()))}"
    assert_balanced(table, date)


def new_balance(url: str, created_at: dt.datetime, currency: str = "USD") -> str:
    balance_id = f"bln_new_{uuid.uuid4().hex}"
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO blnk.balances (balance_id, currency, ledger_id, created_at)"
            " VALUES (%s, %s, 'ldg_customers', %s)", (balance_id, currency, created_at))
    return balance_id


@pytest.mark.parametrize("timezone", ["UTC", "America/New_York"])
def test_hard_cases_are_exact_and_balanced_in_shuffled_order(fresh_ledger, make_database, tmp_path, timezone):
    url = fresh_ledger
    source, destination = two_balances(url)
    # legs dated before a balance's creation (history imported into a new balance)
    late_born = new_balance(url, dt.datetime(2026, 11, 3, 15, 30))
    insert_transaction(url, source, late_born, 5_000, created_at=dt.datetime(2026, 11, 3, 16),
                       effective_date=dt.datetime(2026, 10, 28, 9))
    insert_transaction(url, late_born, destination, 1_200, status="INFLIGHT",
                       created_at=dt.datetime(2026, 11, 3, 16), effective_date=dt.datetime(2026, 10, 29, 9))
    # far future-dated rows, pending across many partitions
    insert_transaction(url, source, destination, 10**30, created_at=dt.datetime(2026, 10, 27, 10),
                       effective_date=dt.datetime(2026, 11, 4, 12))
    # an inflight parent whose children are pending (dated days later)
    hold = insert_transaction(url, source, destination, 9_000, status="INFLIGHT",
                              created_at=dt.datetime(2026, 10, 28, 8))
    insert_transaction(url, source, destination, 4_000, parent=hold, created_at=dt.datetime(2026, 10, 28, 9),
                       effective_date=dt.datetime(2026, 11, 2, 1))
    insert_transaction(url, source, destination, 5_000, status="VOID", parent=hold,
                       created_at=dt.datetime(2026, 10, 28, 9), effective_date=dt.datetime(2026, 11, 5, 1))
    # a child that counts before its parent (an orphan until the parent's effective time)
    early = insert_transaction(url, destination, source, 3_000, status="INFLIGHT",
                               created_at=dt.datetime(2026, 10, 29, 8), effective_date=dt.datetime(2026, 11, 1, 8))
    insert_transaction(url, destination, source, 1_000, parent=early, created_at=dt.datetime(2026, 10, 29, 9),
                       effective_date=dt.datetime(2026, 10, 29, 9))
    # a balance created mid-day, after the 10-31 cutoff but before any read
    new_balance(url, dt.datetime(2026, 11, 1, 13, 45))

    settings = make_settings(url, tmp_path / "store", timezone, index_url=make_database())
    order = DAYS[:]
    random.Random(7).shuffle(order)
    for i, day in enumerate(order):
        snapshot.take_snapshot(settings, day, batch_size=[1, 50, 1000, 7][i % 4])
    for day in DAYS:
        assert_exact_and_balanced(settings, url, day)
    # the last day rolled forward from its predecessor, and its state carries the pending rows
    again = snapshot.take_snapshot(settings, DAYS[-1], 100)
    assert again.mode == "incremental" and again.base_date == DAYS[-2]
    assert again.pending["pending_transactions"] > 0
    assert again.balanced
    # before its creation, a balance answers the sum of its backdated legs, with existed false
    with query.QueryEngine(settings) as engine:
        for from_source in (False, True):
            answer = engine.balance_at(late_born, dt.datetime(2026, 10, 30, 12), from_source=from_source)
            assert not answer.existed
            assert (answer.credit_balance, answer.inflight_debit_balance) == (5_000, 1_200)


def test_row_committed_out_of_id_order_is_rolled_in_without_genesis(fresh_ledger, tmp_path):
    url = fresh_ledger
    settings = make_settings(url, tmp_path / "store")
    d1, d2 = dt.date(2026, 11, 3), dt.date(2026, 11, 4)
    snapshot.take_snapshot(settings, dt.date(2026, 11, 2), 500)
    source, destination = two_balances(url)
    slow = psycopg.connect(url)  # takes an id first, commits last
    slow.execute(
        "INSERT INTO blnk.transactions (transaction_id, source, destination, amount, precise_amount, precision,"
        " currency, status, created_at, effective_date)"
        " VALUES (%s, %s, %s, 1, 777, 100, 'USD', 'APPLIED', '2026-11-03 10:00', NULL)",
        (f"txn_slow_{uuid.uuid4().hex}", source, destination))
    insert_transaction(url, destination, source, 55, created_at=dt.datetime(2026, 11, 3, 11))  # commits first
    first = snapshot.take_snapshot(settings, d1, 500)
    assert first.pending["transaction_gaps"] >= 1
    slow.commit()
    slow.close()
    second = snapshot.take_snapshot(settings, d2, 500)
    assert second.mode == "incremental" and second.base_date == d1
    assert_exact_and_balanced(settings, url, d2)
    assert lateness.staleness(settings, d1).get("prefix_changed") == 1  # d1 itself is stale, and says so
    snapshot.take_snapshot(settings, d1, 500)
    assert_exact_and_balanced(settings, url, d1)


def test_pending_rows_carry_their_legs_and_an_ids_only_state_still_rolls_forward(fresh_ledger, tmp_path):
    """Pending (future-dated) rows are carried in the roll state with their legs, exactly (a text field that
    is empty stays empty, a NULL stays NULL, a 31-digit amount keeps every digit), and are not read again;
    a state written before legs were carried (ids only) is read by key and upgraded."""
    url = fresh_ledger
    source, destination = two_balances(url)
    with psycopg.connect(url) as conn:  # after every seeded row, so these rows are below d1's re-read point
        last = conn.execute("SELECT max(created_at) FROM blnk.transactions").fetchone()[0]
    d1 = last.date() + dt.timedelta(days=1)
    d2, d3, d4 = (d1 + dt.timedelta(days=i) for i in (1, 2, 3))

    def at(day: dt.date, hour: int) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(hour))

    huge = 10**30 + 7
    insert_transaction(url, source, destination, huge, created_at=at(d1, 10), effective_date=at(d3, 12))
    hold = insert_transaction(url, source, destination, 9_000, status="INFLIGHT", created_at=at(d1, 8),
                              effective_date=at(d4, 1))
    insert_transaction(url, source, destination, 4_000, parent=hold, created_at=at(d1, 9), effective_date=at(d4, 2))
    with psycopg.connect(url) as conn:  # an empty-string parent is not a parent (NULL is not '')
        conn.execute(
            "INSERT INTO blnk.transactions (transaction_id, parent_transaction, source, destination, amount,"
            " precise_amount, precision, currency, status, created_at, effective_date)"
            " VALUES (%s, '', %s, %s, 1, 321, 100, 'USD', 'APPLIED', %s, %s)",
            (f"txn_empty_parent_{uuid.uuid4().hex}", source, destination, at(d1, 11), at(d3, 13)))
    # a row recorded after d1's cutoff: d1's re-read point stays below it, so the rows above are d1's pending
    insert_transaction(url, destination, source, 1, created_at=at(d2, 1))
    settings = make_settings(url, tmp_path / "store", start=d1.isoformat())
    snapshot.take_snapshot(settings, d1, 500)
    with psycopg.connect(url) as conn:
        carried = conn.execute(
            "SELECT count(*), count(transaction_id), count(*) FILTER (WHERE parent_transaction = ''),"
            " count(*) FILTER (WHERE amount = %s) FROM snapshot_index.roll_state WHERE snapshot_date = %s"
            " AND kind = %s", (huge, d1, journal.PENDING_TRANSACTION)).fetchone()
        assert carried[0] >= 4 and carried[0] == carried[1], carried  # every pending row with its leg
        assert carried[2] == 1 and carried[3] == 1, carried
        # the state as written before legs were carried: ids and effective times only
        conn.execute("UPDATE snapshot_index.roll_state SET transaction_id = NULL, source = NULL,"
                     " destination = NULL, status = NULL, parent_transaction = NULL, amount = NULL,"
                     " currency = NULL WHERE snapshot_date = %s", (d1,))
    second = snapshot.take_snapshot(settings, d2, 500)
    assert second.mode == "incremental" and second.base_date == d1
    with psycopg.connect(url) as conn:
        upgraded = conn.execute(
            "SELECT count(*), count(transaction_id) FROM snapshot_index.roll_state WHERE snapshot_date = %s"
            " AND kind = %s", (d2, journal.PENDING_TRANSACTION)).fetchone()
    assert upgraded[0] >= 4 and upgraded[0] == upgraded[1], upgraded
    for day in (d3, d4):
        result = snapshot.take_snapshot(settings, day, 500)
        assert result.mode == "incremental"
    for day in (d1, d2, d3, d4):
        assert_exact_and_balanced(settings, url, day)


def test_future_dated_row_committed_late_below_the_reread_point_is_counted_when_due(fresh_ledger, tmp_path):
    """A transaction still in flight at a partition's read (a gap below its re-read point) that commits later
    dated after the next cutoff stays pending until its effective time, then counts (it was lost before)."""
    url = fresh_ledger
    source, destination = two_balances(url)
    with psycopg.connect(url) as conn:  # after every seeded row, so the test's ids sit around d1's re-read point
        last = conn.execute("SELECT max(created_at) FROM blnk.transactions").fetchone()[0]
    d1 = last.date() + dt.timedelta(days=1)
    d2, d3, d4 = (d1 + dt.timedelta(days=i) for i in (1, 2, 3))
    slow = psycopg.connect(url)  # takes an id first (recorded before d1's cutoff), commits after d1's read
    slow.execute(
        "INSERT INTO blnk.transactions (transaction_id, source, destination, amount, precise_amount, precision,"
        " currency, status, created_at, effective_date)"
        " VALUES (%s, %s, %s, 1, 424242, 100, 'USD', 'APPLIED', %s, %s)",
        (f"txn_slow_future_{uuid.uuid4().hex}", source, destination, dt.datetime.combine(d1, dt.time(10)),
         dt.datetime.combine(d3, dt.time(12))))
    insert_transaction(url, destination, source, 55, created_at=dt.datetime.combine(d1, dt.time(11)))
    insert_transaction(url, destination, source, 66, created_at=dt.datetime.combine(d2, dt.time(1)))  # after C_d1
    settings = make_settings(url, tmp_path / "store", start=d1.isoformat())
    first = snapshot.take_snapshot(settings, d1, 500)
    assert first.pending["transaction_gaps"] >= 1
    slow.commit()
    slow.close()
    for day in (d2, d3, d4):  # d2: visible, dated after its cutoff; d3: still after; d4: counted
        assert snapshot.take_snapshot(settings, day, 500).mode == "incremental"
    for day in (d1, d2, d3, d4):
        assert_exact_and_balanced(settings, url, day)


@pytest.mark.parametrize("same_database", [False, True], ids=["index-apart", "index-in-ledger"])
def test_a_base_published_again_while_it_is_read_stops_the_roll_forward(fresh_ledger, make_database, tmp_path,
                                                                        monkeypatch, same_database):
    """The base's manifest row and its roll-forward state are read one after the other: a new generation of the
    base committed in between (a real run of it) is an error, not a state of the wrong generation. With the
    index in the ledger's database the state is staged in the run's own view, which checks the generation it
    holds: one committed after the manifest row was read and before the view opened is caught the same way."""
    from snapshot_pipeline.snapshot import roll
    from snapshot_pipeline.store import roll_state

    url = fresh_ledger
    settings = make_settings(url, tmp_path / "store", index_url=None if same_database else make_database())
    d1, d2, d3 = DAYS[4], DAYS[5], DAYS[6]
    for day in (d1, d2):
        snapshot.take_snapshot(settings, day, 500)
    read, open_view = roll_state.read, roll.journal.open_view

    def republish_then_read(conn, date, schema):
        monkeypatch.setattr(roll.roll_state, "read", read)
        snapshot.take_snapshot(settings, date, 500, reason="repair")  # the base, published again meanwhile
        return read(conn, date, schema)

    def republish_then_open(cur):
        monkeypatch.setattr(roll.journal, "open_view", open_view)
        snapshot.take_snapshot(settings, d2, 500, reason="repair")  # after the base's manifest row was read
        return open_view(cur)

    if same_database:
        monkeypatch.setattr(roll.journal, "open_view", republish_then_open)
        monkeypatch.setattr(roll.roll_state, "read", None)  # not read into the client at all
    else:
        monkeypatch.setattr(roll.roll_state, "read", republish_then_read)
    with pytest.raises(snapshot.SnapshotError, match="published again or retired"):
        snapshot.take_snapshot(settings, d3, 500)
    monkeypatch.undo()
    again = snapshot.take_snapshot(settings, d3, 500)
    assert again.mode == "incremental" and again.base_date == d2
    assert_exact_and_balanced(settings, url, d3)


def test_a_base_published_again_after_the_runs_view_opened_is_staged_as_that_view_saw_it(fresh_ledger, tmp_path,
                                                                                       monkeypatch):
    """Index in the ledger's database: a new generation of the base committed after the check, before the state is
    staged in the run's view, is not what the view sees: the run rolls forward the generation it checked, exactly,
    and its index rows are re-diffed against the new one at the commit."""
    from snapshot_pipeline.store import roll_state

    url = fresh_ledger
    settings = make_settings(url, tmp_path / "store")
    d2, d3 = DAYS[5], DAYS[6]
    snapshot.take_snapshot(settings, d2, 500)
    stage = roll_state.Stored.stage

    def republish_then_stage(self, cur, table, schema):
        monkeypatch.setattr(roll_state.Stored, "stage", stage)
        snapshot.take_snapshot(settings, d2, 500, reason="repair")
        return stage(self, cur, table, schema)

    monkeypatch.setattr(roll_state.Stored, "stage", republish_then_stage)
    result = snapshot.take_snapshot(settings, d3, 500)
    assert result.mode == "incremental" and result.base_date == d2
    assert roll_state.Stored.stage is stage  # the republish happened inside the run
    assert_exact_and_balanced(settings, url, d3)
    got = snapshot_values(catalog.read_partition(settings, d3))
    indexed = index_values(url, d3, got)
    assert not [k for k in got if indexed[k] != got[k]], "the index answers differ from the partition"


def test_roll_forward_state_reads_back_under_any_datestyle(fresh_ledger, make_database, tmp_path):
    """An index database whose DateStyle is not ISO (set by its owner) still hands the state back exactly."""
    url = fresh_ledger
    index_url = make_database()
    with psycopg.connect(index_url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute(f'ALTER DATABASE "{name}" SET DateStyle = \'SQL, DMY\'')
    settings = make_settings(url, tmp_path / "store", index_url=index_url)
    first = snapshot.take_snapshot(settings, DAYS[2], 500)
    assert first.pending["pending_transactions"] > 0  # the state holds timestamps to read back
    second = snapshot.take_snapshot(settings, DAYS[3], 500)
    assert second.mode == "incremental" and second.base_date == DAYS[2]
    assert_exact_and_balanced(settings, url, DAYS[3])


@pytest.mark.parametrize("live_amounts", [False, True])
def test_incremental_step_reads_the_ledger_by_key_only(adversarial_url, make_database, tmp_path, live_amounts):
    """Every statement of an incremental step touches blnk.* only through primary or unique keys (with the live
    amounts the run's own live-drift comparison reads in the same probes, too)."""
    settings = make_settings(adversarial_url, tmp_path / "store", index_url=make_database())
    base = snapshot.take_snapshot(settings, dt.date(2026, 11, 1), 1000)
    from snapshot_pipeline import db
    from snapshot_pipeline.store import index

    with db.connect(settings.snapshot_database_url, autocommit=True) as conn:
        origin = snapshot.origin_of(conn, index.manifest(conn, base.snapshot_date))
    ledger = db.connect_arrow(adversarial_url)
    try:
        cur = ExplainingCursor(ledger.cursor())
        view = journal.open_view(cur)
        # a small test ledger makes sequential scans cheap: forbid them, so only a key path can satisfy it
        cur.execute("SET LOCAL enable_seqscan = off")
        journal.begin_step(cur, view, calendar.cutoff(dt.date(2026, 11, 2), "UTC"), origin)
        reader = journal.delta_reader(cur, live_amounts=live_amounts)
        reader.read_all()
        cur.execute("ROLLBACK")
    finally:
        ledger.close()
    touched = assert_ledger_read_by_key(cur.plans, probes_only=True)
    assert touched >= 8, "the step must have read the journal and the balances"
    # the delta streams: no bound parameter (ADBC then runs it through COPY, batch by batch, instead of
    # holding the whole result), and its attribute probes take the sums in key order, so no sort follows them
    delta_sql = journal._DELTA_LIVE_SQL if live_amounts else journal._DELTA_SQL
    assert [parameters for sql, parameters in cur.executed if sql == delta_sql] == [None]
    delta_plan = cur.plan_of(delta_sql)
    assert delta_plan["Node Type"] == "Nested Loop", delta_plan["Node Type"]
    assert delta_plan["Plans"][0]["Node Type"] == "Sort", delta_plan["Plans"][0]["Node Type"]
