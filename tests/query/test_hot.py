"""Hot balances (snapshot_pipeline/query/hot.py): answers from the in-memory legs equal Σ over the journal
(tests/oracle.py) at many instants, before and after late, backdated, future-dated and out-of-order rows."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import random

import psycopg
import pytest

from snapshot_pipeline import calendar, query, snapshot
from snapshot_pipeline.query import hot
from tests.conftest import make_settings
from tests.helpers import insert_transaction, two_balances
from tests.oracle import AMOUNTS, expected_snapshot

US = query.MICROSECOND
ZERO = dict.fromkeys(AMOUNTS, 0)
DAYS = [dt.date(2026, 10, 27), dt.date(2026, 10, 30), dt.date(2026, 11, 1)]


def expected_at(url: str, at: dt.datetime) -> dict[str, dict[str, int]]:
    return expected_snapshot(url, at + US)


def busiest(url: str, n: int) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT b FROM (SELECT source AS b FROM blnk.transactions UNION ALL SELECT destination"
            " FROM blnk.transactions) legs GROUP BY b ORDER BY count(*) DESC, b LIMIT %s", (n,))]


def instants(rng: random.Random, n: int, cutoffs: list[dt.datetime]) -> list[dt.datetime]:
    start = dt.datetime(2026, 10, 20)
    out = [*cutoffs, *(c - US for c in cutoffs), *(c + US for c in cutoffs), dt.datetime(2026, 9, 1),
           dt.datetime(2027, 6, 1), dt.datetime(9999, 12, 30)]
    return out + [start + dt.timedelta(microseconds=rng.randrange(20 * 86_400_000_000)) for _ in range(n)]


def engines(settings) -> tuple[query.QueryEngine, query.QueryEngine]:
    """(every replayed balance becomes hot, the replay only)."""
    fast, slow = query.QueryEngine(settings), query.QueryEngine(settings)
    fast.hot.min_legs, fast.hot.after_replays = 0, 1
    slow.hot.min_legs = 10**18
    return fast, slow


def check(fast: query.QueryEngine, slow: query.QueryEngine, url: str, balances: list[str], ats) -> int:
    checked = 0
    for at in ats:
        expected = expected_at(url, at)
        for balance_id in balances:
            got, replayed = fast.balance_at(balance_id, at), slow.balance_at(balance_id, at)
            assert balance_id in fast.hot
            assert got.amounts() == expected.get(balance_id, ZERO), (balance_id, at)
            assert got == replayed, (balance_id, at)  # anchor, legs replayed, existed: as the replay says
            checked += 1
    return checked


@pytest.fixture(scope="module")
def snapshotted(adversarial_url, tmp_path_factory):
    settings = make_settings(adversarial_url, tmp_path_factory.mktemp("hot") / "store", "America/New_York")
    for day in DAYS:
        snapshot.take_snapshot(settings, day, 500)
    return settings


def test_hot_answers_equal_the_journal_at_many_instants(snapshotted, adversarial_url):
    fast, slow = engines(snapshotted)
    with fast, slow:
        rng = random.Random(8)
        cutoffs = [calendar.cutoff(d, "America/New_York") for d in DAYS]
        balances = busiest(adversarial_url, 3)
        with psycopg.connect(adversarial_url) as conn:  # and balances created late, with backdated legs
            balances += [r[0] for r in conn.execute(
                "SELECT balance_id FROM blnk.balances ORDER BY created_at DESC, balance_id LIMIT 3")]
        assert check(fast, slow, adversarial_url, balances, instants(rng, 40, cutoffs)) >= 300
        hottest = fast.hot.get(balances[0])
        assert hottest is not None and len(hottest.legs) > 100 and hottest.holds and hottest.children


@pytest.mark.parametrize("rebuild_after", [hot.REBUILD_AFTER, 0])
def test_rows_recorded_after_the_load_count_at_once(fresh_ledger, tmp_path, monkeypatch, rebuild_after):
    """Backdated, future-dated and late rows, holds with commits and voids (one recorded before its hold),
    rows below the partitions' watermarks, after the balances became hot (folded in as recent rows, or
    with the sorted arrays rebuilt at every probe)."""
    monkeypatch.setattr(hot, "REBUILD_AFTER", rebuild_after)
    settings = make_settings(fresh_ledger, tmp_path / "store")
    for day in (dt.date(2026, 10, 30), dt.date(2026, 10, 31)):
        snapshot.take_snapshot(settings, day, 400)
    source, destination = two_balances(fresh_ledger)
    ats = [dt.datetime(2026, 10, 29, 9), dt.datetime(2026, 10, 30, 23, 59, 59, 999999), dt.datetime(2026, 10, 31),
           dt.datetime(2026, 10, 31, 8), dt.datetime(2026, 10, 31, 13), dt.datetime(2026, 11, 2, 8),
           dt.datetime(2026, 12, 1)]
    fast, slow = engines(settings)
    with fast, slow:
        check(fast, slow, fresh_ledger, [source, destination], ats)  # now hot, loaded
        recorded = dt.datetime(2026, 11, 7, 10)
        parent = "txn_test_parent_after_its_commit"
        insert_transaction(fresh_ledger, destination, source, 300, parent=parent, created_at=recorded,
                           effective_date=dt.datetime(2026, 10, 29, 9))  # a commit before its hold exists
        check(fast, slow, fresh_ledger, [source, destination], ats)
        insert_transaction(fresh_ledger, source, destination, 12345, created_at=recorded,
                           effective_date=dt.datetime(2026, 10, 30, 23, 59, 59, 999999))  # backdated
        insert_transaction(fresh_ledger, destination, source, 10**25, created_at=dt.datetime(2026, 10, 30, 12))
        insert_transaction(fresh_ledger, source, destination, 77, created_at=recorded,
                           effective_date=dt.datetime(2026, 11, 20))  # future-dated
        hold = insert_transaction(fresh_ledger, source, destination, 999, status="INFLIGHT", created_at=recorded,
                                  effective_date=dt.datetime(2026, 10, 30, 8))
        insert_transaction(fresh_ledger, source, destination, 400, parent=hold, created_at=recorded,
                           effective_date=dt.datetime(2026, 10, 31, 8))
        insert_transaction(fresh_ledger, source, destination, 599, status="VOID", parent=hold, created_at=recorded,
                           effective_date=dt.datetime(2026, 11, 2, 8))
        with psycopg.connect(fresh_ledger) as conn:
            conn.execute(
                "INSERT INTO blnk.transactions (transaction_id, source, destination, precise_amount, amount,"
                " precision, currency, status, created_at, effective_date) VALUES (%s, %s, %s, 1000, 10, 100, 'USD',"
                " 'INFLIGHT', %s, %s)", (parent, destination, source, recorded, dt.datetime(2026, 10, 31, 12)))
        check(fast, slow, fresh_ledger, [source, destination], ats)


def test_a_row_committed_late_below_the_highest_id_seen_counts(fresh_ledger, tmp_path):
    """A writer holds id k uncommitted while the hot balance loads (k is a gap, k+1 is visible); its commit
    later is found by the probe of the gaps."""
    settings = make_settings(fresh_ledger, tmp_path / "store")
    snapshot.take_snapshot(settings, dt.date(2026, 10, 31), 400)
    source, destination = two_balances(fresh_ledger)
    ats = [dt.datetime(2026, 10, 30, 12), dt.datetime(2026, 11, 1, 12), dt.datetime(2026, 12, 1)]
    fast, slow = engines(settings)
    with fast, slow, psycopg.connect(fresh_ledger) as writer:
        writer.execute(
            "INSERT INTO blnk.transactions (transaction_id, source, destination, precise_amount, amount, precision,"
            " currency, status, created_at, effective_date) VALUES ('txn_test_slow_writer', %s, %s, 4242, 42.42, 100,"
            " 'USD', 'APPLIED', %s, %s)", (source, destination, dt.datetime(2026, 11, 1), dt.datetime(2026, 10, 30)))
        insert_transaction(fresh_ledger, destination, source, 5, created_at=dt.datetime(2026, 11, 1, 1))
        check(fast, slow, fresh_ledger, [source, destination], ats)
        loaded = fast.hot.get(source)
        assert loaded is not None and loaded.gaps  # the writer's id
        insert_transaction(fresh_ledger, source, destination, 6, created_at=dt.datetime(2026, 11, 1, 2))
        check(fast, slow, fresh_ledger, [source, destination], ats)  # a probe finding rows keeps the old gap
        writer.commit()
        check(fast, slow, fresh_ledger, [source, destination], ats)
        assert loaded.gaps == [] or all(g not in loaded.legs for g in loaded.gaps)


def test_a_balance_not_worth_keeping_is_replayed(fresh_ledger, tmp_path, monkeypatch):
    settings = make_settings(fresh_ledger, tmp_path / "store")
    snapshot.take_snapshot(settings, dt.date(2026, 10, 31), 400)
    source, _ = two_balances(fresh_ledger)
    monkeypatch.setattr(hot, "MAX_LEGS", 1)
    fast, slow = engines(settings)
    with fast, slow:
        at = dt.datetime(2026, 11, 1, 12)
        assert fast.balance_at(source, at) == slow.balance_at(source, at)
        assert source not in fast.hot and not fast.hot.wants(source, 10**9)  # refused once, replayed from then on
        assert fast.balance_at(source, at).amounts() == expected_at(fresh_ledger, at)[source]


def test_concurrent_answers_while_rows_arrive(fresh_ledger, tmp_path):
    """Threads answering (and probing) one hot balance while a writer appends: every answer is a state the
    journal went through (its balance equals the oracle at some prefix of the writes), the last ones the end."""
    settings = make_settings(fresh_ledger, tmp_path / "store")
    snapshot.take_snapshot(settings, dt.date(2026, 10, 31), 400)
    source, destination = two_balances(fresh_ledger)
    at = dt.datetime(2026, 11, 10)
    fast, slow = engines(settings)
    with fast, slow:
        check(fast, slow, fresh_ledger, [source], [at])
        possible = {fast.balance_at(source, at).balance}
        balance, amounts = next(iter(possible)), [3**k for k in range(1, 16)]

        def write() -> None:
            nonlocal balance
            for k, amount in enumerate(amounts):
                insert_transaction(fresh_ledger, destination, source, amount, created_at=dt.datetime(2026, 11, 9),
                                   effective_date=dt.datetime(2026, 10, 1 + k))  # backdated, credits source
                balance += amount
                possible.add(balance)

        with concurrent.futures.ThreadPoolExecutor(9) as pool:
            writer = pool.submit(write)
            readers = [pool.submit(lambda: [fast.balance_at(source, at).balance for _ in range(40)])
                       for _ in range(8)]
            writer.result()
            seen = [value for reader in readers for value in reader.result()]
        assert set(seen) <= possible
        check(fast, slow, fresh_ledger, [source, destination], [at, dt.datetime(2026, 10, 5, 12)])


def test_the_row_budget_evicts_the_least_recently_used(fresh_ledger, tmp_path, monkeypatch):
    settings = make_settings(fresh_ledger, tmp_path / "store")
    snapshot.take_snapshot(settings, dt.date(2026, 10, 31), 400)
    first, second = two_balances(fresh_ledger)
    monkeypatch.setattr(hot, "MAX_TOTAL_LEGS", 1)
    fast, slow = engines(settings)
    with fast, slow:
        at = dt.datetime(2026, 11, 1, 12)
        assert fast.balance_at(first, at) == slow.balance_at(first, at) and first in fast.hot
        assert fast.balance_at(second, at) == slow.balance_at(second, at)
        assert second in fast.hot and first not in fast.hot  # evicted, not refused: it may come back
        assert fast.hot.wants(first, 1) and fast.balance_at(first, at) == slow.balance_at(first, at)


def test_a_balance_becomes_hot_on_its_third_heavy_replay(fresh_ledger, tmp_path):
    settings = make_settings(fresh_ledger, tmp_path / "store")
    snapshot.take_snapshot(settings, dt.date(2026, 10, 31), 400)
    source, _ = two_balances(fresh_ledger)
    with query.QueryEngine(settings) as engine:
        engine.hot.min_legs = 0
        at = dt.datetime(2026, 11, 1, 12)
        for _ in range(2):
            engine.balance_at(source, at)
            assert source not in engine.hot  # a one-shot command (balance-at, balance-change) never loads it
        engine.balance_at(source, at)
        assert source in engine.hot
