"""A partition merged as K shards equals the unsharded partition row for row (issue 9, shards)."""

from __future__ import annotations

import datetime as dt

import duckdb
import pandas as pd
import psycopg
import pyarrow.dataset as ds
import pytest

from snapshot_pipeline import calendar, faults, snapshot
from snapshot_pipeline.snapshot import shards
from snapshot_pipeline.store import catalog, parquet, ranges
from snapshot_pipeline.store.location import Store
from tests.conftest import make_settings
from tests.helpers import assert_balanced, insert_transaction, two_balances
from tests.oracle import expected_snapshot, snapshot_values
from tests.snapshot.test_roll_forward import new_balance

DAYS = [dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)]


def _day_of_changes(url: str, day: dt.date) -> list[str]:
    """New balances created mid-day (their ids fall between any boundaries), legs on them, a backdated leg."""
    source, destination = two_balances(url)
    born = [new_balance(url, dt.datetime.combine(day, dt.time(10 + i))) for i in range(3)]
    for i, balance in enumerate(born):
        insert_transaction(url, source, balance, 1_000 + i, created_at=dt.datetime.combine(day, dt.time(13)))
    insert_transaction(url, destination, source, 77, created_at=dt.datetime.combine(day, dt.time(14)),
                       effective_date=dt.datetime.combine(day - dt.timedelta(days=3), dt.time(9)))
    return born


@pytest.fixture(scope="module")
def unsharded(adversarial_url, make_database, tmp_path_factory):
    """The reference: DAYS published unsharded, on the module's ledger with a day of changes per day."""
    for day in DAYS:
        _day_of_changes(adversarial_url, day)
    settings = make_settings(adversarial_url, tmp_path_factory.mktemp("unsharded"), index_url=make_database())
    for day in DAYS:
        snapshot.take_snapshot(settings, day, 700)
    return settings, {day: catalog.read_partition(settings, day) for day in DAYS}


@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_sharded_partitions_equal_unsharded_ones_row_for_row(unsharded, adversarial_url, make_database, tmp_path, k):
    reference_settings, reference = unsharded
    settings = make_settings(adversarial_url, tmp_path / "store", index_url=make_database())
    for day in DAYS:  # day 1 from genesis (boundaries from the delta), then rolled forward from a sharded base
        result = snapshot.take_snapshot(settings, day, 700, shards=k)
        table = catalog.read_partition(settings, day)
        assert table.equals(reference[day]), f"K={k} {day}: rows differ from the unsharded partition"
        assert snapshot_values(table) == expected_snapshot(adversarial_url, calendar.cutoff(day, settings.timezone))
        assert_balanced(table, day)
        assert result.balanced and result.rows == table.num_rows
        paths = catalog.paths(settings, day)
        assert len(paths) == k == len(result.files)
        assert [p.rsplit("/", 1)[1][:10] for p in paths] == [f"part-{i:05d}" for i in range(k)]
        assert parquet.list_partition(Store.at(settings.storage_uri), day) == paths  # nothing else in the directory
    with psycopg.connect(settings.snapshot_database_url) as a, psycopg.connect(
            reference_settings.snapshot_database_url) as b:
        query = ("SELECT balance_id, snapshot_date, balance, credit_balance, debit_balance FROM"
                 " snapshot_index.balance_snapshots ORDER BY 1, 2")
        assert a.execute(query).fetchall() == b.execute(query).fetchall()  # the index rows too
    # nothing of the runs' work is left in the store
    assert not [p for p in (tmp_path / "store" / ".staging").rglob("*") if p.is_file()]


def test_uneven_boundaries_give_the_same_partition(unsharded, adversarial_url, make_database, tmp_path):
    """Shards of very different sizes, empty ones included: below every id, one id wide, above every id."""
    _, reference = unsharded
    settings = make_settings(adversarial_url, tmp_path / "store", index_url=make_database())
    ids = reference[DAYS[0]]["balance_id"].to_pylist()
    uneven = ["", ids[0], ids[1] + "\x00", ids[len(ids) // 10], "bln_new_", "bln_new_~", "\U0010ffff"]
    for day in DAYS:
        result = shards.take_sharded(settings, day, len(uneven) + 1, 700, boundaries=sorted(set(uneven)))
        table = catalog.read_partition(settings, day)
        assert table.equals(reference[day]), day
        fs = Store.at(settings.storage_uri).fs
        rows = [parquet.count_rows(fs, [p]) for p in catalog.paths(settings, day)]
        assert sum(rows) == table.num_rows == result.rows and rows[0] == rows[1] == rows[-1] == 0 and rows[2] == 2
    with pytest.raises(snapshot.SnapshotError, match="strictly increasing"):
        shards.take_sharded(settings, DAYS[0], 3, 700, boundaries=["b", "a"])


def test_uneven_boundaries_split_by_row_count_and_skip_row_groups(unsharded, tmp_path):
    settings, _ = unsharded
    fs = Store.at(settings.storage_uri).fs
    paths = catalog.paths(settings, DAYS[-1])
    ids = parquet.read_files(fs, paths, ["balance_id"])["balance_id"].to_pylist()
    cuts = ranges.choose_boundaries(fs, paths, 7)
    assert cuts == sorted(cuts) and len(cuts) == 6
    sizes = [sum(1 for i in ids if (lo is None or i >= lo) and (hi is None or i < hi))
             for lo, hi in zip([None, *cuts], [*cuts, None], strict=True)]
    assert sum(sizes) == len(ids) and max(sizes) - min(sizes) <= 2  # near-equal by rows, whatever the id spread
    got = [b for b in ranges.iter_range(fs, paths, ["balance_id"], cuts[2], cuts[3], 1000)]
    assert sum(b.num_rows for b in got) == sizes[3]


def test_a_failure_in_one_shard_publishes_nothing(unsharded, adversarial_url, make_database, tmp_path, monkeypatch):
    settings = make_settings(adversarial_url, tmp_path / "store", index_url=make_database())
    snapshot.take_snapshot(settings, DAYS[0], 700, shards=3)
    before = catalog.read_partition(settings, DAYS[0])
    before_paths = catalog.paths(settings, DAYS[0])
    monkeypatch.setenv(faults.FAIL_SHARD_VARIABLE, "1")
    for day in DAYS[:2]:  # a re-run of a published day, and a new day
        with pytest.raises(faults.InjectedFailure):
            snapshot.take_snapshot(settings, day, 700, shards=3)
    assert catalog.paths(settings, DAYS[0]) == before_paths
    assert catalog.read_partition(settings, DAYS[0]).equals(before)
    assert not catalog.exists(settings, DAYS[1])
    store = Store.at(settings.storage_uri)
    assert parquet.list_partition(store, DAYS[0]) == before_paths
    assert parquet.list_partition(store, DAYS[1]) == []
    assert not [p for p in (tmp_path / "store" / ".staging").rglob("*") if p.is_file()]


@pytest.mark.parametrize("k", [1, 3])
def test_readers_see_one_dataset_whatever_k(unsharded, adversarial_url, make_database, tmp_path, k):
    _, reference = unsharded
    settings = make_settings(adversarial_url, tmp_path / "store", index_url=make_database())
    for day in DAYS[:2]:
        snapshot.take_snapshot(settings, day, 700, shards=k)
    root = tmp_path / "store" / "balance_snapshots"
    expected = sum(reference[day].num_rows for day in DAYS[:2])
    dataset = ds.dataset(str(root), format="parquet", partitioning="hive")
    assert dataset.count_rows() == expected
    frame = pd.read_parquet(root)
    assert len(frame) == expected and set(frame["snapshot_date"].astype(str)) == {d.isoformat() for d in DAYS[:2]}
    got = duckdb.sql(f"SELECT snapshot_date, count(*), sum(balance) FROM read_parquet('{root}/*/*.parquet',"
                     " hive_partitioning = true) GROUP BY 1 ORDER BY 1").fetchall()
    assert [(str(d), n, int(s)) for d, n, s in got] == [
        (day.isoformat(), reference[day].num_rows, sum(int(v) for v in reference[day]["balance"].to_pylist()))
        for day in DAYS[:2]]


def test_a_sharded_commit_refuses_when_another_run_published_the_day_meanwhile(
        unsharded, adversarial_url, make_database, tmp_path):
    """Plan, then an unsharded run of the same day commits, then the shards: the older cut is refused."""
    _, reference = unsharded
    settings = make_settings(adversarial_url, tmp_path / "store", index_url=make_database())
    plan = shards.plan(settings, DAYS[0], 3, 700)
    for shard in range(plan.shards):
        shards.merge_shard(settings, plan, shard)
    snapshot.take_snapshot(settings, DAYS[0], 700)
    winner = catalog.paths(settings, DAYS[0])
    with pytest.raises(snapshot.SnapshotError, match="published by another run"):
        shards.commit_shards(settings, plan)
    assert catalog.paths(settings, DAYS[0]) == winner
    assert catalog.read_partition(settings, DAYS[0]).equals(reference[DAYS[0]])
    assert not [p for p in (tmp_path / "store" / ".staging").rglob("*") if p.is_file()]


def test_fewer_distinct_ids_than_shards_plan_fewer_shards(adversarial_url, make_database, tmp_path):
    settings = make_settings(adversarial_url, tmp_path / "store", index_url=make_database())
    plan = shards.plan(settings, DAYS[0], 7, 700, boundaries=None)
    assert plan.shards == len(plan.boundaries) + 1 <= 7
    shards.discard(plan)
