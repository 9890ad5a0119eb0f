"""Every writer and reader on local disk and on a real S3-compatible server (moto, started by a fixture).

The same tests run on both backends: exactness (genesis, roll-forward, sharded), atomic publish
under failures (mid-write, at the commit), retention, the reports and the month-end CSV, and
DuckDB reading the dataset from the bucket.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
from pathlib import Path

import duckdb
import psycopg
import pytest

from snapshot_pipeline import calendar, snapshot
from snapshot_pipeline.reports import month_end, totals
from snapshot_pipeline.store import catalog
from snapshot_pipeline.store.location import Store
from snapshot_pipeline.store.retention import Policy, apply_retention
from tests.conftest import make_settings
from tests.helpers import assert_balanced, insert_transaction, two_balances
from tests.oracle import expected_snapshot, snapshot_values
from tests.storage import partition_files, staged_files

DAYS = [dt.date(2026, 10, 30), dt.date(2026, 10, 31), dt.date(2026, 11, 1)]


def assert_exact(settings, url: str, date: dt.date) -> None:
    table = catalog.read_partition(settings, date)
    assert snapshot_values(table) == expected_snapshot(url, calendar.cutoff(date, settings.timezone)), date
    assert_balanced(table, date)


def test_partitions_are_exact_on_both_backends(settings, fresh_ledger):
    source, destination = two_balances(fresh_ledger)
    snapshot.take_snapshot(settings, DAYS[0], 300)  # genesis
    insert_transaction(fresh_ledger, source, destination, 4_321, created_at=dt.datetime(2026, 10, 31, 9),
                       effective_date=dt.datetime(2026, 10, 31, 1))  # backdated within the next day
    result = snapshot.take_snapshot(settings, DAYS[1], 300)  # rolled forward from the stored base
    assert result.mode == "incremental"
    sharded = snapshot.take_snapshot(settings, DAYS[2], 300, shards=3)  # three shard files
    assert len(sharded.files) == 3 and all(f.startswith(settings.storage_uri.split("://")[0]) for f in sharded.files)
    for date in DAYS:
        assert_exact(settings, fresh_ledger, date)
        assert partition_files(settings, date) == catalog.paths(settings, date)  # published once: only its files
    assert staged_files(settings) == []


def test_a_failure_mid_write_leaves_no_object_of_the_new_run(settings, fresh_ledger):
    """The injected failure falls while the new file is being uploaded (staging): nothing of it is visible."""
    snapshot.take_snapshot(settings, DAYS[0], 100)
    before = catalog.read_partition(settings, DAYS[0])
    before_files = partition_files(settings, DAYS[0])
    source, destination = two_balances(fresh_ledger)
    insert_transaction(fresh_ledger, source, destination, 999, created_at=dt.datetime(2026, 10, 30, 7))

    def explode(batch_number: int) -> None:
        if batch_number == 3:
            raise RuntimeError("injected failure mid-write")

    for shards in (1, 2):
        with pytest.raises(RuntimeError, match="injected failure mid-write"):
            snapshot.take_snapshot(settings, DAYS[0], 100, on_batch=explode, shards=shards)
        assert partition_files(settings, DAYS[0]) == before_files
        assert catalog.read_partition(settings, DAYS[0]).equals(before)
        assert staged_files(settings) == []
    with pytest.raises(RuntimeError, match="injected failure mid-write"):  # a partition never published
        snapshot.take_snapshot(settings, DAYS[1], 100, on_batch=explode)
    assert partition_files(settings, DAYS[1]) == [] and not catalog.exists(settings, DAYS[1])


def test_a_failed_commit_withdraws_the_moved_files(settings, fresh_ledger):
    snapshot.take_snapshot(settings, DAYS[0], 200)
    before_files = partition_files(settings, DAYS[0])
    source, destination = two_balances(fresh_ledger)
    insert_transaction(fresh_ledger, source, destination, 55, created_at=dt.datetime(2026, 10, 30, 7))
    with psycopg.connect(settings.snapshot_database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE snapshot_index.partitions ADD CONSTRAINT no_more CHECK (row_count < 0) NOT VALID")
    with pytest.raises(psycopg.errors.CheckViolation):
        snapshot.take_snapshot(settings, DAYS[0], 200, shards=2)
    assert partition_files(settings, DAYS[0]) == before_files  # the moved files were withdrawn, the old ones kept
    assert staged_files(settings) == []
    with psycopg.connect(settings.snapshot_database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE snapshot_index.partitions DROP CONSTRAINT no_more")
    snapshot.take_snapshot(settings, DAYS[0], 200)
    assert_exact(settings, fresh_ledger, DAYS[0])
    current = catalog.paths(settings, DAYS[0])
    assert current != before_files  # superseded: kept for the history window beside the new one
    assert partition_files(settings, DAYS[0]) == sorted(before_files + current)


def test_retention_on_both_backends(settings, fresh_ledger):
    for date in DAYS:
        snapshot.take_snapshot(settings, date, 500, shards=2 if date == DAYS[0] else 1)
    report = apply_retention(settings, reference=DAYS[-1], policy=Policy(days=1, months=2))
    assert not report["dry_run"] and DAYS[0].isoformat() in str(report)
    assert not catalog.exists(settings, DAYS[0])
    assert partition_files(settings, DAYS[0])  # retired from the Delta table; its files stay for the history window
    for date in DAYS[1:]:
        assert_exact(settings, fresh_ledger, date)


def test_reports_and_the_month_end_csv_on_both_backends(settings, fresh_ledger):
    for date in DAYS[:2]:
        snapshot.take_snapshot(settings, date, 500, shards=2)
    sums = totals.ledger_currency_totals(settings, DAYS[1])
    assert sums.rows > 0 and sums.path.startswith(settings.storage_uri.rstrip("/").split("/")[0])
    expected = expected_snapshot(fresh_ledger, calendar.cutoff(DAYS[1], settings.timezone))
    month = month_end.month_end_balances(settings, dt.date(2026, 10, 1))
    fs = Store.at(settings.storage_uri).fs
    csv_path = month.csv_path.split("://", 1)[-1] if "://" in month.csv_path else month.csv_path
    with fs.open_input_stream(csv_path) as stream:
        rows = list(csv.DictReader(io.StringIO(stream.read().decode())))
    assert {r["balance_id"]: int(r["balance"]) for r in rows} == {k: v["balance"] for k, v in expected.items()}


def test_duckdb_reads_the_dataset_from_the_bucket(s3_storage, s3_endpoint, fresh_ledger, make_database, tmp_path):
    settings = make_settings(fresh_ledger, s3_storage, index_url=make_database(), home=tmp_path)
    for date, shards in zip(DAYS[:2], (1, 3), strict=True):
        snapshot.take_snapshot(settings, date, 500, shards=shards)
    import duckdb_extension_httpfs

    extension = next(Path(duckdb_extension_httpfs.__file__).parent.rglob("httpfs.duckdb_extension"))
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{extension}'")
    host = s3_endpoint.removeprefix("http://")
    con.execute(f"CREATE SECRET moto (TYPE s3, KEY_ID 'testing', SECRET 'testing', REGION 'us-east-1',"
                f" ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)")
    got = con.execute(f"SELECT snapshot_date, count(*), sum(balance) FROM read_parquet("
                      f"'{s3_storage}/balance_snapshots/*/*.parquet', hive_partitioning = true)"
                      " GROUP BY 1 ORDER BY 1").fetchall()
    expected = []
    for date in DAYS[:2]:
        values = expected_snapshot(fresh_ledger, calendar.cutoff(date, settings.timezone))
        expected.append((date.isoformat(), len(values), sum(v["balance"] for v in values.values())))
    assert [(str(d), n, int(s)) for d, n, s in got] == expected
    assert os.environ["AWS_ENDPOINT_URL"] == s3_endpoint  # the pipeline reached the bucket the standard way
