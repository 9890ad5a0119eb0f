"""The Delta tables as every reader sees them (DESIGN §8): DuckDB ``delta_scan``, polars and deltalake, on
local disk and on the loopback S3 server, against the journal (the oracle in SQL).

Covers genesis, roll-forward, re-materialization, shards (K = 1, 3), retention, reports, time travel
after a late-row repair, concurrent commits, a reader polling while a day is re-materialized, the
replay of a Delta commit the index is ahead of, and converting a store published before Delta.
"""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import time

import psycopg
import pyarrow.compute as pc
import pytest

from snapshot_pipeline import calendar, snapshot
from snapshot_pipeline.reports import totals
from snapshot_pipeline.store import catalog, delta, generations, history, index, publication, recovery
from snapshot_pipeline.store.location import Store
from snapshot_pipeline.store.retention import Policy, apply_retention
from tests.conftest import make_settings
from tests.helpers import assert_balanced, insert_transaction, two_balances
from tests.oracle import expected_snapshot, snapshot_values
from tests.readers import duckdb_connection, via_deltalake, via_duckdb, via_polars

DAYS = [dt.date(2026, 10, 30), dt.date(2026, 10, 31), dt.date(2026, 11, 1)]


def assert_every_engine_reads(settings, url: str, date: dt.date, con) -> None:
    """DuckDB, polars and deltalake each read exactly the journal's partition, and our own reader agrees."""
    expected = expected_snapshot(url, calendar.cutoff(date, settings.timezone))
    ours = catalog.read_partition(settings, date)
    assert snapshot_values(ours) == expected, date
    for engine, table in (("duckdb", via_duckdb(con, settings.storage_uri, date)),
                          ("polars", via_polars(settings.storage_uri, date)),
                          ("deltalake", via_deltalake(settings.storage_uri, date))):
        assert table.num_rows == len(expected) == pc.count_distinct(table["balance_id"]).as_py(), (engine, date)
        assert snapshot_values(table) == expected, (engine, date)
        assert_balanced(table, date)
        assert table["balance_id"].to_pylist() == ours["balance_id"].to_pylist(), (engine, date)


def assert_log_agrees_with_index(settings, date: dt.date) -> None:
    """The Delta table's current files of ``date`` are the manifest's, and the manifest names their version."""
    store = Store.at(settings.storage_uri)
    table = delta.load(store, delta.SNAPSHOTS)
    current = sorted(p.rsplit("/", 1)[1] for p, _ in delta.partition_files(table, delta.SNAPSHOTS, date))
    with psycopg.connect(settings.snapshot_database_url) as conn:
        entry = index.manifest(conn, date)
        latest = generations.latest_version(conn, date)
    assert entry is not None and latest is not None and entry.generation == latest.generation
    assert current == sorted(name.rsplit("/", 1)[1] for name in entry.files)
    assert entry.delta_version is not None and latest.delta_version == entry.delta_version
    assert delta.transaction_version(store, delta.SNAPSHOTS, publication.app_id(date)) == entry.generation


def test_every_engine_reads_every_partition_exactly(settings, fresh_ledger):
    con = duckdb_connection(s3=settings.storage_uri.startswith("s3://"))
    snapshot.take_snapshot(settings, DAYS[0], 300)  # genesis
    snapshot.take_snapshot(settings, DAYS[1], 300)  # rolled forward
    assert snapshot.take_snapshot(settings, DAYS[2], 300, shards=3).delta_version is not None  # 3 files, 1 commit
    for date in DAYS:
        assert_every_engine_reads(settings, fresh_ledger, date, con)
        assert_log_agrees_with_index(settings, date)
    # a late backdated row, then the repair: re-materialized days replace their partition in one commit each
    source, destination = two_balances(fresh_ledger)
    insert_transaction(fresh_ledger, source, destination, 7_777, created_at=dt.datetime(2026, 11, 5, 9),
                       effective_date=dt.datetime(2026, 10, 31, 3))
    snapshot.take_snapshot(settings, DAYS[1], 300, shards=3)
    snapshot.take_snapshot(settings, DAYS[2], 300)
    for date in DAYS:
        assert_every_engine_reads(settings, fresh_ledger, date, con)
        assert_log_agrees_with_index(settings, date)


def test_time_travel_returns_what_a_partition_said_before_its_repair(settings, fresh_ledger):
    snapshot.take_snapshot(settings, DAYS[0], 300)
    before = expected_snapshot(fresh_ledger, calendar.cutoff(DAYS[1], settings.timezone))
    first = snapshot.take_snapshot(settings, DAYS[1], 300)
    source, destination = two_balances(fresh_ledger)
    insert_transaction(fresh_ledger, source, destination, 31_337, created_at=dt.datetime(2026, 11, 5, 9),
                       effective_date=dt.datetime(2026, 10, 31, 3))
    after = expected_snapshot(fresh_ledger, calendar.cutoff(DAYS[1], settings.timezone))
    assert after != before
    time.sleep(2.5)  # object stores time a commit to the second: keep the two commits apart for --as-of
    second = snapshot.take_snapshot(settings, DAYS[1], 300, reason="repair")
    listed = history.versions(settings, DAYS[1])["versions"]
    assert [(v["generation"], v["delta_version"], v["reason"], v["current"]) for v in listed] == [
        (1, first.delta_version, "manual", False), (2, second.delta_version, "repair", True)]
    assert listed[0]["max_transaction_id"] < listed[1]["max_transaction_id"]
    # through the library (what `snapshot-pipeline history --version` prints), deltalake and polars
    for version, expected in ((first.delta_version, before), (second.delta_version, after), (None, after)):
        assert snapshot_values(history.read_version(settings, DAYS[1], version=version)[1]) == expected
        assert snapshot_values(via_deltalake(settings.storage_uri, DAYS[1], version)) == expected
        assert snapshot_values(via_polars(settings.storage_uri, DAYS[1], version)) == expected
    # as of an instant between the two commits: what a reader saw then
    at = dt.datetime.fromisoformat(listed[0]["committed_at"]) + dt.timedelta(seconds=1.2)
    read_version, table = history.read_version(settings, DAYS[1], as_of=at)
    assert read_version == first.delta_version and snapshot_values(table) == before
    with pytest.raises(history.HistoryError, match="not in version"):
        history.read_version(settings, DAYS[2], version=first.delta_version)


def test_retention_retires_a_partition_with_one_commit_and_keeps_its_history(settings, fresh_ledger):
    con = duckdb_connection(s3=settings.storage_uri.startswith("s3://"))
    results = [snapshot.take_snapshot(settings, date, 500, shards=2 if date == DAYS[0] else 1) for date in DAYS]
    report = apply_retention(settings, reference=DAYS[-1], policy=Policy(days=2, months=0))
    assert report["partitions_removed"] == [DAYS[0].isoformat()] and report["parquet_dirs_deleted"] == 1
    assert report["history"]["vacuumed_files"] == 0  # inside the history window nothing is deleted
    assert not catalog.exists(settings, DAYS[0])
    assert via_duckdb(con, settings.storage_uri, DAYS[0]).num_rows == 0  # gone from the current version
    # ... but an audit still reads what it said
    old = via_deltalake(settings.storage_uri, DAYS[0], results[-1].delta_version)
    assert snapshot_values(old) == expected_snapshot(fresh_ledger, calendar.cutoff(DAYS[0], settings.timezone))
    listed = history.versions(settings, DAYS[0])["versions"]
    assert [(v["reason"], v["retired"]) for v in listed] == [("manual", False), ("retention", True)]
    for date in DAYS[1:]:
        assert_every_engine_reads(settings, fresh_ledger, date, con)
        assert_log_agrees_with_index(settings, date)


def test_reports_are_delta_tables_replaced_whole(settings, fresh_ledger):
    con = duckdb_connection(s3=settings.storage_uri.startswith("s3://"))
    snapshot.take_snapshot(settings, DAYS[0], 500)
    first = totals.ledger_currency_totals(settings, DAYS[0])
    again = totals.ledger_currency_totals(settings, DAYS[0])  # a re-run replaces the partition
    assert again.path != first.path
    got = con.execute(f"SELECT currency, balances FROM delta_scan('{settings.storage_uri}/reports/"
                      f"{totals.REPORT}') WHERE snapshot_date = ? ORDER BY currency", [DAYS[0]]).fetchall()
    expected = expected_snapshot(fresh_ledger, calendar.cutoff(DAYS[0], settings.timezone))
    assert sum(n for _, n in got) == len(expected) and len(got) == again.rows


def test_concurrent_commits_of_different_partitions_all_land(adversarial_url, make_database, tmp_path):
    settings = make_settings(adversarial_url, str(tmp_path / "store"), index_url=make_database(), home=tmp_path)
    snapshot.take_snapshot(settings, DAYS[0], 500)  # the table exists; the three runs race on its log
    days = [dt.date(2026, 11, 2), dt.date(2026, 11, 3), dt.date(2026, 11, 4)]
    errors: list[BaseException] = []

    def run(day: dt.date) -> None:
        try:
            snapshot.take_snapshot(settings, day, 500, full_refresh=True)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(day,)) for day in days]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    con = duckdb_connection()
    for day in [DAYS[0], *days]:
        assert_every_engine_reads(settings, adversarial_url, day, con)
        assert_log_agrees_with_index(settings, day)


def test_a_reader_polling_while_a_day_is_rematerialized_never_sees_a_torn_partition(fresh_ledger, make_database,
                                                                                      tmp_path):
    settings = make_settings(fresh_ledger, str(tmp_path / "store"), index_url=make_database(), home=tmp_path)
    day = DAYS[1]
    snapshot.take_snapshot(settings, DAYS[0], 500)
    first = snapshot.take_snapshot(settings, day, 500)
    published_states = {(first.rows, sum(r["credit"] for r in first.currency_totals))}
    seen: list[tuple[int, int, int]] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    uri = f"{settings.storage_uri}/balance_snapshots"

    def poll() -> None:
        con = duckdb_connection()
        while not stop.is_set():
            try:
                seen.append(con.execute(f"SELECT count(*), count(DISTINCT balance_id), sum(credit_balance)::HUGEINT"
                                        f" FROM delta_scan('{uri}') WHERE snapshot_date = ?", [day]).fetchone())
            except Exception as exc:  # noqa: BLE001 - counted: must stay zero
                errors.append(exc)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        source, destination = two_balances(fresh_ledger)
        for i in range(6):
            insert_transaction(fresh_ledger, source, destination, 1_000 + i, created_at=dt.datetime(2026, 11, 5, 9),
                               effective_date=dt.datetime(2026, 10, 31, 3))
            result = snapshot.take_snapshot(settings, day, 97 + i, shards=1 + i % 3)
            published_states.add((result.rows, sum(r["credit"] for r in result.currency_totals)))
            time.sleep(0.05)
    finally:
        stop.set()
        poller.join()
    assert errors == []
    assert len(seen) >= 6
    for rows, distinct, credit in seen:
        assert rows == distinct and (rows, int(credit)) in published_states, (rows, distinct, credit)


def test_a_delta_commit_the_index_is_ahead_of_is_replayed_once(fresh_ledger, make_database, tmp_path, monkeypatch):
    settings = make_settings(fresh_ledger, str(tmp_path / "store"), index_url=make_database(), home=tmp_path)
    store = Store.at(settings.storage_uri)
    snapshot.take_snapshot(settings, DAYS[0], 500)
    before = via_deltalake(settings.storage_uri, DAYS[0])
    source, destination = two_balances(fresh_ledger)
    insert_transaction(fresh_ledger, source, destination, 4_242, created_at=dt.datetime(2026, 10, 30, 9))
    real = delta.replace_partition

    def unreachable(*args, **kwargs):
        raise OSError("object store unreachable (injected)")

    monkeypatch.setattr(delta, "replace_partition", unreachable)
    with pytest.raises(OSError, match="injected"):
        snapshot.take_snapshot(settings, DAYS[0], 500)
    # the index committed (our readers see the new day), the log did not (Delta readers see the old one, whole)
    assert snapshot_values(catalog.read_partition(settings, DAYS[0])) == expected_snapshot(
        fresh_ledger, calendar.cutoff(DAYS[0], settings.timezone))
    assert via_deltalake(settings.storage_uri, DAYS[0]).equals(before)
    with psycopg.connect(settings.snapshot_database_url) as conn:
        assert generations.unsynced_dates(conn) == [DAYS[0]]
    monkeypatch.setattr(delta, "replace_partition", real)
    with psycopg.connect(settings.snapshot_database_url, autocommit=True) as conn:
        assert recovery.pending_dates(store, conn) == [DAYS[0]]
        found = recovery.recover_all(store, conn, history_days=settings.history_days)
        assert [(r.snapshot_date, r.publish) for r in found] == [(DAYS[0], "completed")]
        assert generations.unsynced_dates(conn) == []
        version = found[0].delta_version
        # a replay of the same generation is recognised by its application transaction: no second commit
        assert publication.sync_partition(store, conn, DAYS[0], settings.history_days) is None
        latest = generations.latest_version(conn, DAYS[0])
        conn.execute("UPDATE snapshot_index.partition_versions SET delta_version = NULL"
                     " WHERE snapshot_date = %s AND generation = %s", (DAYS[0], latest.generation))
        assert publication.sync_partition(store, conn, DAYS[0], settings.history_days) == version
    assert delta.load(store, delta.SNAPSHOTS).version() == version
    assert_every_engine_reads(settings, fresh_ledger, DAYS[0], duckdb_connection())
    assert_log_agrees_with_index(settings, DAYS[0])


def test_a_store_published_before_delta_is_converted_in_place(adversarial_url, make_database, tmp_path):
    settings = make_settings(adversarial_url, str(tmp_path / "store"), index_url=make_database(), home=tmp_path)
    store = Store.at(settings.storage_uri)
    for date in DAYS:
        snapshot.take_snapshot(settings, date, 500, shards=2 if date == DAYS[1] else 1)
    # the state a store of the previous layout is in: manifest rows and files, no log, no generations
    shutil.rmtree(tmp_path / "store" / "balance_snapshots" / "_delta_log")
    with psycopg.connect(settings.snapshot_database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM snapshot_index.partition_versions")
        conn.execute("UPDATE snapshot_index.partitions SET generation = 0, delta_version = NULL")
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "store" / "balance_snapshots").rglob("*.parquet")}
    assert not delta.exists(store, delta.SNAPSHOTS)
    with psycopg.connect(settings.snapshot_database_url, autocommit=True) as conn:
        publication.ensure_table(store, conn, settings.history_days)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "store" / "balance_snapshots").rglob("*.parquet")} == files
    con = duckdb_connection()
    for date in DAYS:
        assert_every_engine_reads(settings, adversarial_url, date, con)
        assert_log_agrees_with_index(settings, date)
    assert snapshot.take_snapshot(settings, dt.date(2026, 11, 2), 500).mode == "incremental"  # carries on


def test_a_retired_partition_published_again_after_its_history_window(adversarial_url, make_database, tmp_path):
    """The latest generation is never forgotten: a day retired, its history pruned, then re-materialized
    (a wider retention policy, an audit backfill) takes the next generation, above what the log carries."""
    settings = make_settings(adversarial_url, str(tmp_path / "store"), index_url=make_database(), home=tmp_path)
    for date in DAYS:
        snapshot.take_snapshot(settings, date, 500)
    apply_retention(settings, reference=DAYS[-1], policy=Policy(days=2, months=0))
    with psycopg.connect(settings.snapshot_database_url, autocommit=True) as conn:
        generations.prune_versions(conn, dt.datetime.now() + dt.timedelta(days=400))  # as if the window had passed
        assert [(v.generation, v.retired) for v in generations.versions(conn, DAYS[0])] == [(2, True)]
    result = snapshot.take_snapshot(settings, DAYS[0], 500)
    assert result.generation == 3
    assert_every_engine_reads(settings, adversarial_url, DAYS[0], duckdb_connection())
    assert_log_agrees_with_index(settings, DAYS[0])


def test_a_conversion_that_died_half_way_is_finished(adversarial_url, make_database, tmp_path):
    settings = make_settings(adversarial_url, str(tmp_path / "store"), index_url=make_database(), home=tmp_path)
    store = Store.at(settings.storage_uri)
    for date in DAYS:
        snapshot.take_snapshot(settings, date, 500)

    def as_before_delta(keep_log: bool) -> None:
        if not keep_log:
            shutil.rmtree(tmp_path / "store" / "balance_snapshots" / "_delta_log")
        with psycopg.connect(settings.snapshot_database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM snapshot_index.partition_versions")
            conn.execute("UPDATE snapshot_index.partitions SET generation = 0, delta_version = NULL")

    # died after creating the empty table, before its add commit: the index still says "not converted"
    as_before_delta(keep_log=False)
    delta.ensure(store, delta.SNAPSHOTS, settings.history_days)
    with psycopg.connect(settings.snapshot_database_url, autocommit=True) as conn:
        publication.ensure_table(store, conn, settings.history_days)
    # died after the add commit, before the index COMMIT: the log carries them, the index does not
    as_before_delta(keep_log=True)
    version = delta.load(store, delta.SNAPSHOTS).version()
    with psycopg.connect(settings.snapshot_database_url, autocommit=True) as conn:
        publication.ensure_table(store, conn, settings.history_days)
        assert not generations.has_unconverted(conn) and generations.unsynced_dates(conn) == []
    assert delta.load(store, delta.SNAPSHOTS).version() == version  # recorded, not committed again
    for date in DAYS:
        assert_every_engine_reads(settings, adversarial_url, date, duckdb_connection())
        assert_log_agrees_with_index(settings, date)
    assert snapshot.take_snapshot(settings, DAYS[0], 500).generation == 2


def test_report_partitions_written_before_their_table_are_kept(adversarial_url, make_database, tmp_path):
    settings = make_settings(adversarial_url, str(tmp_path / "store"), index_url=make_database(), home=tmp_path)
    for date in DAYS[:2]:
        snapshot.take_snapshot(settings, date, 500)
    first = totals.ledger_currency_totals(settings, DAYS[0])
    shutil.rmtree(tmp_path / "store" / "reports" / totals.REPORT / "_delta_log")  # a report of the old layout
    totals.ledger_currency_totals(settings, DAYS[1])  # the table's first commit converts what was there
    con = duckdb_connection()
    got = dict(con.execute(f"SELECT snapshot_date, count(*) FROM delta_scan('{settings.storage_uri}/reports/"
                           f"{totals.REPORT}') GROUP BY 1").fetchall())
    assert got[DAYS[0]] == first.rows and got[DAYS[1]] > 0
