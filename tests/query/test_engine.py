"""balance_at / balances_at / balance_change against an independent SQL sum over the journal (tests/oracle.py)."""

from __future__ import annotations

import datetime as dt
import random
from zoneinfo import ZoneInfo

import psycopg
import pytest

from snapshot_pipeline import calendar, query, snapshot
from snapshot_pipeline.quality import lateness
from tests.conftest import make_settings
from tests.helpers import insert_transaction, two_balances
from tests.oracle import AMOUNTS, expected_snapshot, snapshot_values

TZ = "America/New_York"
DATES = [dt.date(2026, 10, 27), dt.date(2026, 10, 30), dt.date(2026, 11, 1), dt.date(2026, 11, 3)]
ZERO = dict.fromkeys(AMOUNTS, 0)
US = query.MICROSECOND
DAYS = [dt.date(2026, 10, 30), dt.date(2026, 10, 31), dt.date(2026, 11, 1)]  # the partitions on both backends


def expected_at(url: str, at: dt.datetime) -> dict[str, dict[str, int]]:
    """Σ over the journal for effective time <= at (microsecond timestamps: < at + 1µs), existing balances only."""
    return expected_snapshot(url, at + US)


def assert_matches(answer: query.BalanceAt, expected: dict[str, dict[str, int]]) -> None:
    """Amounts are Σ over the journal, before creation too; ``existed`` says whether the row existed yet."""
    want = expected.get(answer.balance_id, ZERO)
    assert answer.amounts() == want, (answer.balance_id, answer.at, answer.from_source, answer.anchor)
    assert answer.existed == (answer.created_at <= answer.at), (answer.balance_id, answer.at)


@pytest.fixture(scope="module")
def snapshotted(adversarial_url, make_database, tmp_path_factory):
    """Four New York partitions (cutoffs at 04:00/05:00 UTC, one across the DST change), index in its own database."""
    settings = make_settings(adversarial_url, tmp_path_factory.mktemp("query") / "store", TZ,
                             index_url=make_database())
    for day in DATES:
        snapshot.take_snapshot(settings, day, 500)
    with query.QueryEngine(settings) as engine:
        yield settings, engine


def ledger_facts(url: str):
    with psycopg.connect(url) as conn:
        balances = {b: created for b, created in conn.execute("SELECT balance_id, created_at FROM blnk.balances")}
        hot = conn.execute(
            "SELECT b FROM (SELECT source AS b FROM blnk.transactions UNION ALL SELECT destination"
            " FROM blnk.transactions) legs GROUP BY b ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
    return balances, hot


def test_random_balances_and_instants_match_the_journal(snapshotted, adversarial_url):
    settings, engine = snapshotted
    rng = random.Random(20261124)
    balances, hot = ledger_facts(adversarial_url)
    ids = sorted(balances)
    late_created = sorted(b for b, created in balances.items() if created > dt.datetime(2026, 10, 28))
    cutoffs = [calendar.cutoff(d, TZ) for d in DATES]
    instants = [*cutoffs, *(c - US for c in cutoffs), *(c + US for c in cutoffs),
                dt.datetime(2026, 10, 1), dt.datetime(2027, 3, 1, 12)]  # before the journal, in the future
    start = dt.datetime(2026, 10, 24)
    instants += [start + dt.timedelta(milliseconds=rng.randrange(14 * 86_400_000)) for _ in range(14)]
    offsets = [dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(dt.timedelta(hours=-4))]
    checked = anchored = not_yet = 0
    for i, at in enumerate(instants):
        expected = expected_at(adversarial_url, at)
        asked = at.replace(tzinfo=dt.UTC).astimezone(offsets[i % 3])  # the same instant, other offsets
        sample = rng.sample(ids, 6) + [hot] + rng.sample(late_created, 3)
        for balance_id in sample:
            for from_source in (False, True):
                answer = engine.balance_at(balance_id, asked, from_source=from_source)
                assert answer.at == at
                assert_matches(answer, expected)
                checked += 1
                not_yet += not answer.existed  # before the balance's creation: backdated legs count, existed false
                if answer.anchor is not None:
                    anchored += 1
                    assert answer.anchor.cutoff_at <= at and not from_source
    assert checked >= 500 and anchored >= 100 and not_yet >= 20
    # The anchor is used: the hot balance replays far fewer legs than from genesis.
    at = cutoffs[-1] + dt.timedelta(hours=3)
    fast, slow = engine.balance_at(hot, at), engine.balance_at(hot, at, from_source=True)
    assert fast.amounts() == slow.amounts()
    assert fast.anchor.snapshot_date == DATES[-1] and fast.replayed_transactions * 10 < slow.replayed_transactions


def test_instants_exactly_at_a_cutoff_use_that_partition(snapshotted, adversarial_url):
    settings, engine = snapshotted
    _, hot = ledger_facts(adversarial_url)
    for day in DATES:
        cut = calendar.cutoff(day, TZ)
        assert engine.balance_at(hot, cut).anchor.snapshot_date == day
        previous = engine.balance_at(hot, cut - US).anchor
        assert previous is None or previous.snapshot_date < day
    assert engine.balance_at(hot, calendar.cutoff(DATES[0], TZ) - US).anchor is None


def test_offsets_are_converted(snapshotted, adversarial_url):
    settings, engine = snapshotted
    balances, hot = ledger_facts(adversarial_url)
    utc = dt.datetime(2026, 11, 2, 4, 59, 59, 999000)
    texts = ["2026-11-02T04:59:59.999Z", "2026-11-02T10:29:59.999+05:30", "2026-11-02T00:59:59.999-04:00",
             "2026-11-01T23:59:59.999-05:00", "2026-11-02t04:59:59.999000000z"]
    expected = expected_at(adversarial_url, utc)
    for text in texts:
        at = query.parse_timestamp(text)
        assert at == utc
        assert_matches(engine.balance_at(hot, at), expected)
    aware = dt.datetime(2026, 11, 2, 10, 29, 59, 999000, tzinfo=ZoneInfo("Asia/Kolkata"))
    assert engine.balance_at(hot, aware).amounts() == expected[hot]


def test_unknown_and_malicious_balance_ids_are_data(snapshotted, adversarial_url):
    settings, engine = snapshotted
    for balance_id in ("bln_missing", "x' OR '1'='1", "'; DROP TABLE blnk.transactions; --", "bln_%", "ü\"\\"):
        with pytest.raises(query.BalanceNotFound):
            engine.balance_at(balance_id, dt.datetime(2026, 11, 2))
    for bad in ("", "a\x00b", "x" * 600):
        with pytest.raises(query.QueryError):
            engine.balance_at(bad, dt.datetime(2026, 11, 2))
    with psycopg.connect(adversarial_url) as conn:
        assert conn.execute("SELECT count(*) FROM blnk.transactions").fetchone()[0] > 30_000


def test_balances_at_equals_the_journal_with_filters(snapshotted, adversarial_url):
    settings, engine = snapshotted
    with psycopg.connect(adversarial_url) as conn:
        meta = {b: (ledger, currency) for b, ledger, currency in
                conn.execute("SELECT balance_id, ledger_id, currency FROM blnk.balances")}
    for at in (dt.datetime(2026, 10, 20), calendar.cutoff(DATES[1], TZ), dt.datetime(2026, 11, 2, 17, 45, 1, 5000),
               dt.datetime(2027, 1, 1)):
        expected = expected_at(adversarial_url, at)
        table = engine.balances_at(at)
        assert snapshot_values(table) == expected
        ids = table.column("balance_id").to_pylist()
        assert len(ids) == len(set(ids)) == len(expected)
        assert ids == sorted(ids, key=str.encode)  # one balance_id (byte) order, entering balances included
        counted = engine.balances_at(at, count_replayed=True).schema.metadata
        replayed_balances = int(counted[b"snapshot_pipeline.replayed_balances"])
        assert replayed_balances <= len(expected)
        if counted[b"snapshot_pipeline.anchor_date"]:  # rolled forward: the delta is what the journal touched
            assert int(counted[b"snapshot_pipeline.replayed_transactions"]) >= replayed_balances // 2
        assert table.schema.field("balance").type == query.OUTPUT_SCHEMA.field("balance").type
        metadata = table.schema.metadata
        assert metadata[b"snapshot_pipeline.anchor_date"] == (
            b"" if at < calendar.cutoff(DATES[0], TZ) else
            max(d for d in DATES if calendar.cutoff(d, TZ) <= at).isoformat().encode())
        usd = engine.balances_at(at, currency="USD", ledger_id="ldg_customers")
        want = {b: v for b, v in expected.items() if meta[b] == ("ldg_customers", "USD")}
        assert snapshot_values(usd) == want and want


def test_balance_change_over_an_interval(snapshotted, adversarial_url):
    settings, engine = snapshotted
    _, hot = ledger_facts(adversarial_url)
    start, end = dt.datetime(2026, 10, 29, 13, 30), calendar.cutoff(DATES[2], TZ)
    opening, closing = expected_snapshot(adversarial_url, start)[hot], expected_snapshot(adversarial_url, end)[hot]
    change = engine.balance_change(hot, start, end)
    assert change.opening.amounts() == opening and change.closing.amounts() == closing
    assert change.credits == closing["credit_balance"] - opening["credit_balance"] > 0
    assert change.debits == closing["debit_balance"] - opening["debit_balance"] > 0
    body = change.as_dict()
    assert body["net_change"] == closing["balance"] - opening["balance"]
    with pytest.raises(query.QueryError, match="before start"):
        engine.balance_change(hot, end, start)


def test_late_and_backdated_rows_count_at_once_before_any_repair(fresh_ledger, tmp_path):
    """Rows recorded after a snapshot but dated before its cutoff, holds and commits straddling it, a late balance."""
    settings = make_settings(fresh_ledger, tmp_path / "store")  # UTC, index in the ledger database
    d1, d2 = dt.date(2026, 10, 30), dt.date(2026, 10, 31)
    source, destination = two_balances(fresh_ledger)
    # A commit recorded before the snapshots whose hold arrives later ((b): old child of a new parent).
    future_parent = "txn_test_parent_recorded_late"
    insert_transaction(fresh_ledger, destination, source, 300, parent=future_parent,
                       created_at=dt.datetime(2026, 10, 29, 9), effective_date=dt.datetime(2026, 10, 29, 9))
    snapshot.take_snapshot(settings, d1, 400)
    snapshot.take_snapshot(settings, d2, 400)
    recorded = dt.datetime(2026, 11, 7, 10)
    insert_transaction(fresh_ledger, source, destination, 12345, created_at=recorded,
                       effective_date=dt.datetime(2026, 10, 30, 23, 59, 59, 999999))  # backdated into d1
    insert_transaction(fresh_ledger, destination, source, 10**25, created_at=dt.datetime(2026, 10, 30, 12))  # late
    hold = insert_transaction(fresh_ledger, source, destination, 999, status="INFLIGHT", created_at=recorded,
                              effective_date=dt.datetime(2026, 10, 30, 8))
    insert_transaction(fresh_ledger, source, destination, 400, parent=hold, created_at=recorded,
                       effective_date=dt.datetime(2026, 10, 31, 8))  # partial commit dated the next day
    insert_transaction(fresh_ledger, source, destination, 599, status="VOID", parent=hold, created_at=recorded,
                       effective_date=dt.datetime(2026, 11, 2, 8))  # void of the rest, two days later
    with psycopg.connect(fresh_ledger) as conn:
        conn.execute(
            "INSERT INTO blnk.transactions (transaction_id, source, destination, precise_amount, amount, precision,"
            " currency, status, created_at, effective_date) VALUES (%s, %s, %s, 1000, 10, 100, 'USD', 'INFLIGHT',"
            " %s, %s)", (future_parent, destination, source, recorded, dt.datetime(2026, 10, 31, 12)))
        conn.execute(
            "INSERT INTO blnk.balances (balance_id, currency, ledger_id, created_at) VALUES"
            " ('bln_test_recorded_late', 'USD', 'ldg_customers', '2026-10-29 10:00')")
    insert_transaction(fresh_ledger, source, "bln_test_recorded_late", 777, created_at=recorded,
                       effective_date=dt.datetime(2026, 10, 29, 11))
    insert_transaction(fresh_ledger, "bln_test_recorded_late", destination, 70, created_at=recorded,
                       effective_date=dt.datetime(2026, 11, 1, 11))
    # The snapshots are stale (nothing repaired them) ...
    assert lateness.staleness(settings, d1)["late_transactions"] >= 3
    assert lateness.staleness(settings, d2)["late_balances"] == 1
    # ... yet every answer includes the new rows at once.
    touched = [source, destination, "bln_test_recorded_late"]
    with query.QueryEngine(settings) as engine:
        for at in (dt.datetime(2026, 10, 30, 23, 59, 59, 999999), calendar.cutoff(d1, "UTC"),
                   dt.datetime(2026, 10, 31, 8), dt.datetime(2026, 10, 31, 13), calendar.cutoff(d2, "UTC"),
                   dt.datetime(2026, 11, 1, 11), dt.datetime(2026, 11, 2, 8), dt.datetime(2026, 12, 1)):
            expected = expected_at(fresh_ledger, at)
            for balance_id in touched:
                for from_source in (False, True):
                    assert_matches(engine.balance_at(balance_id, at, from_source), expected)
            assert snapshot_values(engine.balances_at(at)) == expected
        answer = engine.balance_at(destination, dt.datetime(2026, 10, 31, 13))
        assert answer.anchor.snapshot_date == d1
        assert answer.inflight_credit_balance == expected_at(fresh_ledger, answer.at)[destination][
            "inflight_credit_balance"]
        late_balance = engine.balance_at("bln_test_recorded_late", dt.datetime(2026, 11, 1, 12))
        assert late_balance.anchor is None and late_balance.balance == 777 - 70  # no index row: from zero
        assert not engine.balance_at("bln_test_recorded_late", dt.datetime(2026, 10, 29, 9, 59)).existed


def test_without_any_snapshot_answers_from_genesis(adversarial_url, make_database, tmp_path):
    settings = make_settings(adversarial_url, tmp_path / "store", index_url=make_database())  # empty index db
    _, hot = ledger_facts(adversarial_url)
    at = dt.datetime(2026, 11, 1, 12)
    expected = expected_at(adversarial_url, at)
    with query.QueryEngine(settings) as engine:
        answer = engine.balance_at(hot, at)
        assert answer.anchor is None and answer.amounts() == expected[hot]
        assert snapshot_values(engine.balances_at(at)) == expected
    assert query.balance_at(settings, hot, at).as_dict()["balance"] == expected[hot]["balance"]


def test_balance_at_and_balances_at_are_exact_on_both_backends(settings, fresh_ledger):
    """The query engine anchors on partitions stored on the backend (a plain one and a 3-shard one) and
    answers exactly at a cutoff, just before it and at mid-day instants, rolled forward and from source."""
    source, destination = two_balances(fresh_ledger)
    snapshot.take_snapshot(settings, DAYS[0], 300)
    insert_transaction(fresh_ledger, source, destination, 7_777, created_at=dt.datetime(2026, 10, 31, 10),
                       effective_date=dt.datetime(2026, 10, 30, 22))  # backdated into DAYS[0]
    sharded = snapshot.take_snapshot(settings, DAYS[1], 300, shards=3)
    assert len(sharded.files) == 3
    insert_transaction(fresh_ledger, destination, source, 123, created_at=dt.datetime(2026, 11, 1, 9),
                       effective_date=dt.datetime(2026, 10, 31, 23))  # late for the sharded partition
    cut0, cut1 = (calendar.cutoff(d, settings.timezone) for d in DAYS[:2])
    instants = {  # instant -> the anchor partition the engine must use
        cut1: DAYS[1], cut1 - US: DAYS[0],  # cut1 - US: expected_snapshot(cut1) itself
        cut0 + dt.timedelta(hours=13, minutes=30): DAYS[0],
        cut1 + dt.timedelta(hours=11, minutes=15, microseconds=5): DAYS[1],
    }
    with query.QueryEngine(settings) as engine:
        for at, anchor in instants.items():
            expected = expected_snapshot(fresh_ledger, at + US)  # effective <= at
            table = engine.balances_at(at)
            assert snapshot_values(table) == expected, at
            assert table.schema.metadata[b"snapshot_pipeline.anchor_date"] == anchor.isoformat().encode()
            for balance_id in (source, destination, *sorted(expected)[::97]):
                for from_source in (False, True):
                    answer = engine.balance_at(balance_id, at, from_source=from_source)
                    assert answer.amounts() == expected[balance_id], (balance_id, at, from_source)
                    if not from_source:
                        assert answer.anchor.snapshot_date == anchor


@pytest.mark.parametrize("same_database", [False, True], ids=["index-apart", "index-in-ledger"])
def test_balances_at_reads_its_anchor_again_when_a_run_publishes_it_meanwhile(fresh_ledger, make_database, tmp_path,
                                                                              monkeypatch, same_database):
    """A reader polling while runs publish: the anchor published again between reading its manifest row and
    its roll-forward state (a real run in between) is read again, and the answer is Σ over the journal. With the
    index in the ledger's database the state is staged in the query's own view, which checks its generation:
    the run lands between the manifest row's read and that view."""
    from snapshot_pipeline.query import sets
    from snapshot_pipeline.snapshot import roll
    from snapshot_pipeline.store import roll_state

    settings = make_settings(fresh_ledger, tmp_path / "store", index_url=None if same_database else make_database())
    snapshot.take_snapshot(settings, DAYS[0], 500)
    read, open_view = roll_state.read, sets.journal.open_view
    republished = []

    def republish_then_read(conn, date, schema):
        if not republished:
            republished.append(date)
            snapshot.take_snapshot(settings, date, 500, reason="repair")
        return read(conn, date, schema)

    def republish_then_open(cur):
        if not republished:
            republished.append(DAYS[0])
            snapshot.take_snapshot(settings, DAYS[0], 500, reason="repair")
        return open_view(cur)

    if same_database:
        monkeypatch.setattr(sets.journal, "open_view", republish_then_open)
    else:
        monkeypatch.setattr(roll.roll_state, "read", republish_then_read)
    from snapshot_pipeline.query import engine as engine_module

    rolled = []

    def counted(*args, **kwargs):
        rolled.append(args[3].generation)  # the anchor it rolls forward
        return sets.balances_at_table(*args, **kwargs)

    monkeypatch.setattr(engine_module, "balances_at_table", counted)
    at = dt.datetime(2026, 10, 31, 12)
    with query.QueryEngine(settings) as engine:
        table = engine.balances_at(at)
    assert republished == [DAYS[0]]
    # the stale generation is caught before the roll-forward (index apart) or by the query's view (in the ledger)
    assert rolled == ([1, 2] if same_database else [2])
    assert table.schema.metadata[b"snapshot_pipeline.anchor_date"] == DAYS[0].isoformat().encode()
    assert snapshot_values(table) == expected_at(fresh_ledger, at)
