"""Exactness and safety of the snapshot core, against an independent SQL computation."""

from __future__ import annotations

import datetime as dt
import re
import threading

import psycopg
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from snapshot_pipeline import calendar, db, snapshot
from snapshot_pipeline.quality import lateness
from snapshot_pipeline.store import catalog, delta, generations, parquet
from snapshot_pipeline.store.location import Store
from tests.conftest import make_settings
from tests.helpers import assert_balanced, index_values, insert_transaction, two_balances
from tests.oracle import expected_snapshot, snapshot_values


def assert_exact(settings, url: str, date: dt.date) -> dict:
    expected = expected_snapshot(url, calendar.cutoff(date, settings.timezone))
    table = catalog.read_partition(settings, date)
    assert_balanced(table, date)
    got = snapshot_values(table)
    assert set(got) == set(expected), f"{date}: balance sets differ"
    wrong = {k: (expected[k], got[k]) for k in expected if expected[k] != got[k]}
    assert not wrong, f"{date}: {len(wrong)} balances differ, e.g. {next(iter(wrong.items()))}"
    indexed = index_values(settings.snapshot_database_url, date, got)
    wrong_index = [k for k in got if indexed[k] != got[k]]
    assert not wrong_index, f"{date}: index answers differ for {len(wrong_index)} balances"
    return got


@pytest.mark.parametrize("timezone", ["UTC", "America/New_York"])
def test_partitions_are_exact_in_any_order(adversarial_url, make_database, tmp_path, timezone):
    settings = make_settings(adversarial_url, tmp_path / "store", timezone, index_url=make_database())
    # Genesis, incremental, the DST day (2026-11-01 has 25 hours in New York), a gap, then back-filling.
    dates = [dt.date(2026, 10, 30), dt.date(2026, 10, 31), dt.date(2026, 11, 1), dt.date(2026, 11, 4),
             dt.date(2026, 10, 26), dt.date(2026, 11, 2)]
    modes = {}
    for i, date in enumerate(dates):
        result = snapshot.take_snapshot(settings, date, batch_size=[1, 7, 100, 1000, 50, 333][i])
        modes[date] = result.mode
        assert result.rows == len(expected_snapshot(adversarial_url, calendar.cutoff(date, timezone)))
    assert modes[dt.date(2026, 10, 30)] == "genesis"
    assert modes[dt.date(2026, 10, 31)] == "incremental"
    assert modes[dt.date(2026, 11, 2)] == "incremental"
    for date in dates:
        assert_exact(settings, adversarial_url, date)


def test_adversarial_ledger_has_every_case(adversarial_url):
    with psycopg.connect(adversarial_url) as conn:
        q = lambda text: conn.execute(text).fetchone()[0]  # noqa: E731
        statuses = {r[0] for r in conn.execute("SELECT DISTINCT status FROM blnk.transactions")}
        assert {"APPLIED", "QUEUED", "REJECTED", "INFLIGHT", "VOID"} <= statuses
        assert q("SELECT count(*) FROM blnk.transactions WHERE effective_date < created_at") > 100
        assert q("SELECT count(*) FROM blnk.transactions WHERE effective_date > created_at") > 100
        assert q("SELECT count(*) FROM blnk.transactions WHERE effective_date = date_trunc('day', effective_date)") > 50
        assert q("SELECT count(*) FROM blnk.transactions WHERE precise_amount > 9223372036854775808") > 50
        assert q("SELECT max(n) FROM (SELECT b, count(*) n FROM (SELECT source b FROM blnk.transactions"
                 " UNION ALL SELECT destination FROM blnk.transactions) legs GROUP BY b) s") >= 1000
        assert q("SELECT count(*) FROM blnk.balances WHERE created_at > '2026-10-25'"
                 " AND created_at::time <> '00:00'") > 100
        # partial commits (two children) and partial commit + void remainder
        assert q("SELECT count(*) FROM (SELECT parent_transaction FROM blnk.transactions"
                 " WHERE parent_transaction IS NOT NULL GROUP BY 1 HAVING count(DISTINCT status) = 2) s") > 10


def test_rematerialize_is_identical_and_history_is_stable(fresh_ledger, make_database, tmp_path):
    settings = make_settings(fresh_ledger, tmp_path / "store")
    day = dt.date(2026, 10, 29)
    snapshot.take_snapshot(settings, day, 100)
    first = snapshot_values(catalog.read_partition(settings, day))
    # Later activity, dated at or after the cutoff, must not change the day's values.
    source, destination = two_balances(fresh_ledger)
    for hours in (0, 30, 200):
        insert_transaction(fresh_ledger, source, destination, 10**20 + hours,
                           created_at=dt.datetime(2026, 11, 6, 12),
                           effective_date=calendar.cutoff(day, "UTC") + dt.timedelta(hours=hours))
    snapshot.take_snapshot(settings, dt.date(2026, 11, 3), 1000)
    again = snapshot.take_snapshot(settings, day, 1000)
    assert snapshot_values(catalog.read_partition(settings, day)) == first
    assert again.rows == len(first)
    # A backfill of the old date into a brand-new store and index (from genesis) gives the same values.
    backfill = make_settings(fresh_ledger, tmp_path / "backfill", index_url=make_database())
    result = snapshot.take_snapshot(backfill, day, 7)
    assert result.mode == "genesis"
    assert snapshot_values(catalog.read_partition(backfill, day)) == first
    assert_exact(settings, fresh_ledger, dt.date(2026, 11, 3))


def test_late_and_backdated_rows_are_detected_and_repaired(fresh_ledger, tmp_path):
    settings = make_settings(fresh_ledger, tmp_path / "store")
    d1, d2 = dt.date(2026, 10, 30), dt.date(2026, 10, 31)
    snapshot.take_snapshot(settings, d1, 500)
    snapshot.take_snapshot(settings, d2, 500)
    assert lateness.staleness(settings, d1) == {}
    source, destination = two_balances(fresh_ledger)
    # backdated into d1, recorded now; and an inflight hold dated d1 with a commit dated d2
    insert_transaction(fresh_ledger, source, destination, 12345, created_at=dt.datetime(2026, 11, 7),
                       effective_date=dt.datetime(2026, 10, 30, 23, 59, 59))
    hold = insert_transaction(fresh_ledger, destination, source, 999, status="INFLIGHT",
                              created_at=dt.datetime(2026, 11, 7), effective_date=dt.datetime(2026, 10, 30, 8))
    insert_transaction(fresh_ledger, destination, source, 400, status="APPLIED", parent=hold,
                       created_at=dt.datetime(2026, 11, 7), effective_date=dt.datetime(2026, 10, 31, 8))
    assert lateness.staleness(settings, d1)["late_transactions"] == 2
    assert lateness.staleness(settings, d2)["late_transactions"] == 3
    # Re-materialize the earliest affected partition, then the next: both exact, index consistent.
    snapshot.take_snapshot(settings, d1, 500)
    assert_exact(settings, fresh_ledger, d1)
    snapshot.take_snapshot(settings, d2, 500)
    assert_exact(settings, fresh_ledger, d2)
    assert lateness.staleness(settings, d2) == {}


def partition_bytes(settings, day) -> list[bytes]:
    """The bytes of every file in the partition's directory (the published ones and anything else)."""
    return [open(path, "rb").read() for path in parquet.list_partition(Store.at(settings.storage_uri), day)]


def test_injected_failure_mid_write_leaves_previous_partition_untouched(fresh_ledger, tmp_path):
    settings = make_settings(fresh_ledger, tmp_path / "store")
    day = dt.date(2026, 10, 30)
    snapshot.take_snapshot(settings, day, 100)
    before_bytes = partition_bytes(settings, day)
    with psycopg.connect(fresh_ledger) as conn:
        manifest_before = conn.execute("SELECT checksum, max_transaction_id FROM snapshot_index.partitions").fetchall()
        index_before = conn.execute("SELECT count(*), sum(balance) FROM snapshot_index.balance_snapshots").fetchone()
    source, destination = two_balances(fresh_ledger)
    insert_transaction(fresh_ledger, source, destination, 777, created_at=dt.datetime(2026, 10, 30, 5))

    def explode(batch_number: int) -> None:
        if batch_number == 3:
            raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError, match="injected failure"):
        snapshot.take_snapshot(settings, day, 100, on_batch=explode)
    assert partition_bytes(settings, day) == before_bytes
    with psycopg.connect(fresh_ledger) as conn:
        assert conn.execute("SELECT checksum, max_transaction_id FROM snapshot_index.partitions").fetchall() \
            == manifest_before
        assert conn.execute("SELECT count(*), sum(balance) FROM snapshot_index.balance_snapshots").fetchone() \
            == index_before
    staging = tmp_path / "store" / ".staging"
    assert not [p for p in staging.rglob("*") if p.is_file()], "staging files must be cleaned up"
    # A failure while committing the index (after the Parquet is complete) also leaves everything as it was.
    with psycopg.connect(fresh_ledger, autocommit=True) as conn:
        conn.execute("ALTER TABLE snapshot_index.partitions ADD CONSTRAINT no_more CHECK (row_count < 0) NOT VALID")
    with pytest.raises(psycopg.errors.CheckViolation):
        snapshot.take_snapshot(settings, day, 100)
    assert partition_bytes(settings, day) == before_bytes
    with psycopg.connect(fresh_ledger) as conn:
        assert conn.execute("SELECT count(*), sum(balance) FROM snapshot_index.balance_snapshots").fetchone() \
            == index_before


def test_decimal_overflow_fails_naming_the_balance(fresh_ledger, tmp_path):
    settings = make_settings(fresh_ledger, tmp_path / "store")
    source, destination = two_balances(fresh_ledger)
    huge = 10**37 * 6
    for _ in range(2):  # two legs of 6e37 make 1.2e38 > decimal128(38, 0)
        insert_transaction(fresh_ledger, source, destination, huge, created_at=dt.datetime(2026, 10, 28, 9))
    with pytest.raises(snapshot.AmountOverflow, match=f"({source}|{destination})"):
        snapshot.take_snapshot(settings, dt.date(2026, 10, 29), 1000)
    assert not catalog.exists(settings, dt.date(2026, 10, 29))
    with psycopg.connect(fresh_ledger) as conn:
        assert conn.execute("SELECT count(*) FROM snapshot_index.partitions").fetchone()[0] == 0


def test_concurrent_runs_of_one_partition_are_serialized(adversarial_url, make_database, tmp_path):
    settings = make_settings(adversarial_url, tmp_path / "store", index_url=make_database())
    day = dt.date(2026, 11, 3)
    results, errors = [], []

    def run(batch_size: int) -> None:
        try:
            results.append(snapshot.take_snapshot(settings, day, batch_size))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(size,)) for size in (10, 17, 1000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({r.checksum for r in results}) == 3  # three complete, separate publications
    assert_exact(settings, adversarial_url, day)
    directory = tmp_path / "store" / "balance_snapshots" / f"snapshot_date={day}"
    files = sorted(f.name for f in directory.iterdir())
    # three generations, each one file; the superseded two stay for the history window (time travel)
    assert len(files) == 3 and all(re.fullmatch(r"part-00000-[0-9a-f]{16}\.parquet", f) for f in files)
    current = catalog.paths(settings, day)
    assert len(current) == 1 and current[0].startswith(str(directory))
    table = delta.load(Store.at(settings.storage_uri), delta.SNAPSHOTS)
    assert [p for p, _ in delta.partition_files(table, delta.SNAPSHOTS, day)] == [
        f"snapshot_date={day}/{current[0].rsplit('/', 1)[1]}"]  # the Delta table names exactly the manifest's file
    with psycopg.connect(settings.snapshot_database_url) as conn:
        assert [v.generation for v in generations.versions(conn, day)] == [1, 2, 3]


def test_invalid_batch_size_and_unreachable_database(tmp_path, adversarial_url):
    settings = make_settings(adversarial_url, tmp_path / "store")
    for bad in (0, -1, 1_000_001, "100", 2.5, True):
        with pytest.raises(snapshot.SnapshotError, match="batch_size must be an integer from 1 to 1,000,000"):
            snapshot.take_snapshot(settings, dt.date(2026, 10, 30), bad)
    down = make_settings("postgresql://postgres@127.0.0.1:1/nowhere", tmp_path / "store")
    with pytest.raises(db.DatabaseUnavailable, match="cannot connect"):
        snapshot.take_snapshot(down, dt.date(2026, 10, 30), 10)
    assert not (tmp_path / "store" / "balance_snapshots").exists()


def test_parquet_layout_schema_and_readers(adversarial_url, make_database, tmp_path):
    settings = make_settings(adversarial_url, tmp_path / "store", "America/New_York", index_url=make_database())
    for day in (dt.date(2026, 10, 31), dt.date(2026, 11, 1)):
        snapshot.take_snapshot(settings, day, 250)
    root = tmp_path / "store" / "balance_snapshots"
    dataset = pads.dataset(str(root), format="parquet", partitioning="hive")
    table = dataset.to_table()
    assert set(table.column("snapshot_date").to_pylist()) == {"2026-10-31", "2026-11-01"} or set(
        str(v) for v in table.column("snapshot_date").to_pylist()) == {"2026-10-31", "2026-11-01"}
    one = catalog.read_partition(settings, dt.date(2026, 11, 1))
    for name in parquet.AMOUNT_COLUMNS:
        assert one.schema.field(name).type == pa.decimal128(38, 0)
    ids = one.column("balance_id").to_pylist()
    assert ids == sorted(ids)
    cutoffs = set(one.column("cutoff_at").to_pylist())
    assert cutoffs == {dt.datetime(2026, 11, 2, 5, tzinfo=dt.UTC)}
    meta = catalog.read_metadata(settings, dt.date(2026, 11, 1))
    assert meta["row_count"] == str(one.num_rows)
    assert meta["cutoff"] == "2026-11-02T05:00:00+00:00"
    assert int(meta["watermark"]) > 0 and meta["schema_version"] == str(parquet.SCHEMA_VERSION) == "2"
    frame = __import__("pandas").read_parquet(str(root))
    assert len(frame) == table.num_rows
    with psycopg.connect(settings.snapshot_database_url) as conn:
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT * FROM snapshot_index.balance_snapshots WHERE balance_id = 'x'"
            " AND snapshot_date <= '2026-11-01' ORDER BY snapshot_date DESC LIMIT 1"))
        assert "Index Scan Backward" in plan and "Seq Scan" not in plan


def test_a_base_that_fails_to_read_part_way_publishes_nothing_and_stops_its_reader(fresh_ledger, tmp_path,
                                                                                   monkeypatch):
    """The base partition is read ahead on a thread: an error part-way through it fails the run where the merge
    reaches it, nothing of the day is published or left staged, and no reading thread outlives the run."""
    from snapshot_pipeline.snapshot import roll

    settings = make_settings(fresh_ledger, tmp_path / "store")
    base_day, day = dt.date(2026, 10, 29), dt.date(2026, 10, 30)
    snapshot.take_snapshot(settings, base_day, 100)
    real = parquet.iter_files

    def failing_part_way(fs, paths, columns, batch_rows=parquet.READ_BATCH_ROWS):
        for batch in real(fs, paths, columns, batch_rows):
            yield batch.slice(0, batch.num_rows // 2)
            raise OSError(5, "Input/output error (injected)")

    monkeypatch.setattr(roll.parquet, "iter_files", failing_part_way)
    with pytest.raises(OSError, match="injected"):
        snapshot.take_snapshot(settings, day, 100)
    assert not [t for t in threading.enumerate() if t.name == "parquet-read-ahead"]
    with psycopg.connect(fresh_ledger) as conn:
        assert conn.execute("SELECT count(*) FROM snapshot_index.partitions WHERE snapshot_date = %s",
                            (day,)).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM snapshot_index.balance_snapshots WHERE snapshot_date = %s",
                            (day,)).fetchone()[0] == 0
    assert partition_bytes(settings, day) == []
    staging = tmp_path / "store" / ".staging"
    assert not [p for p in staging.rglob("*") if p.is_file()], "staging files must be cleaned up"
    monkeypatch.undo()
    again = snapshot.take_snapshot(settings, day, 100)
    assert again.mode == "incremental" and again.base_date == base_day
    assert_exact(settings, fresh_ledger, day)


@pytest.mark.parametrize("rerun", [False, True], ids=["first-publication", "re-run"])
def test_a_clean_up_step_that_fails_too_hides_neither_the_runs_failure_nor_the_steps_after_it(
        fresh_ledger, tmp_path, monkeypatch, rerun):
    """A run fails part-way and then the staged file's delete fails too (the store refuses it): the run's own
    error is what is raised, the clean-up steps after the failing one still run (the index rows' stream of a
    first publication, the spooled file of a re-run), and the next run publishes the day exactly (the file left
    behind is named by no version)."""
    from snapshot_pipeline.snapshot import roll
    from snapshot_pipeline.store.index_stream import IndexStream
    from snapshot_pipeline.store.spool import IndexSpool

    settings = make_settings(fresh_ledger, tmp_path / "store")
    base_day, day = dt.date(2026, 10, 29), dt.date(2026, 10, 30)
    snapshot.take_snapshot(settings, base_day, 100)
    if rerun:
        snapshot.take_snapshot(settings, day, 100)
    index_rows = IndexSpool if rerun else IndexStream
    real_iter, real_reset = parquet.iter_files, index_rows.reset

    def failing_part_way(fs, paths, columns, batch_rows=parquet.READ_BATCH_ROWS):
        for batch in real_iter(fs, paths, columns, batch_rows):
            yield batch.slice(0, batch.num_rows // 2)
            raise OSError(5, "Input/output error (injected)")

    def refused_abort(writer):
        raise OSError(13, "the store refused the delete (injected)")

    resets = []

    def recorded_reset(spool):
        resets.append(spool.date)
        real_reset(spool)

    monkeypatch.setattr(roll.parquet, "iter_files", failing_part_way)
    monkeypatch.setattr(parquet.PartitionWriter, "abort", refused_abort)
    monkeypatch.setattr(index_rows, "reset", recorded_reset)
    with pytest.raises(OSError, match="Input/output error"):
        snapshot.take_snapshot(settings, day, 100)
    assert resets == [day]  # the step after the refused delete ran
    monkeypatch.undo()
    again = snapshot.take_snapshot(settings, day, 100)
    assert again.mode == "incremental" and again.base_date == base_day
    assert_exact(settings, fresh_ledger, day)


def test_two_first_publications_at_once_one_opening_a_month_are_both_exact(fresh_ledger, tmp_path, monkeypatch):
    """Day D streams its index rows and is held before its commit (its transaction open); meanwhile a later day,
    the first of a new month, is computed from the same base: it waits to create its month's index partition
    while readers of the index go on, then commits after D, re-diffing its rows against D. Both are exact."""
    settings = make_settings(fresh_ledger, tmp_path / "store")
    base_day, day, next_month_day = dt.date(2026, 10, 28), dt.date(2026, 10, 30), dt.date(2026, 11, 2)
    snapshot.take_snapshot(settings, base_day, 100)
    real_finish = parquet.PartitionWriter.finish
    held, release = threading.Event(), threading.Event()

    def finish_held_for_day(writer, extra):
        if writer.date == day:
            held.set()
            release.wait(120)
        return real_finish(writer, extra)

    monkeypatch.setattr(parquet.PartitionWriter, "finish", finish_held_for_day)
    results: dict[dt.date, object] = {}
    logs: dict[dt.date, list[str]] = {day: [], next_month_day: []}

    def run(date: dt.date) -> None:
        try:
            results[date] = snapshot.take_snapshot(settings, date, 100, log=logs[date].append)
        except Exception as exc:  # noqa: BLE001 - reported by the assertions below
            results[date] = exc

    first = threading.Thread(target=run, args=(day,))
    first.start()
    assert held.wait(120)
    second = threading.Thread(target=run, args=(next_month_day,))
    second.start()
    try:
        second.join(3)
        assert second.is_alive()  # waiting for the month's partition: D's transaction holds the table
        with psycopg.connect(settings.snapshot_database_url, autocommit=True) as reader:
            reader.execute("SET lock_timeout = '1s'")  # a reader queued behind the month's creation fails
            for _ in range(5):
                assert reader.execute("SELECT count(*) FROM snapshot_index.balance_snapshots"
                                      " WHERE snapshot_date = ANY(%s)", ([day, next_month_day],)).fetchone()[0] == 0
    finally:
        release.set()
        first.join(120)
        second.join(120)
    assert not isinstance(results[day], Exception), results[day]
    assert not isinstance(results[next_month_day], Exception), results[next_month_day]
    assert results[day].base_date == base_day and results[next_month_day].base_date == base_day
    waits = [m for m in logs[next_month_day] if "waiting to create the index partition" in m]
    assert len(waits) == 1 and "snapshot_index.balance_snapshots_2026_11" in waits[0], logs[next_month_day]
    assert_exact(settings, fresh_ledger, day)
    assert_exact(settings, fresh_ledger, next_month_day)  # its index rows re-diffed against D's
