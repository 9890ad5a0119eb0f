"""More readers on local disk and on S3 (moto on loopback): the quality checks, the query engine, kill -9.

Issue 9 items 1 and 2: every reader works with ``SNAPSHOT_STORAGE_URI=s3://bucket/prefix`` and a crash at
any point leaves the previous partition readable and correct. Reuses the ``backend`` / ``settings``
fixtures of tests/test_storage_backends.py and the crash helpers of tests/test_crash.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os

import dagster as dg
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from snapshot_pipeline import calendar, quality, query, snapshot
from snapshot_pipeline.store import parquet as store
from snapshot_pipeline.store import published, recovery
from snapshot_pipeline.store import records as store_records
from tests import s3
from tests import test_storage_backends as backends
from tests.helpers import insert_transaction, two_balances
from tests.oracle import expected_snapshot, snapshot_values
from tests.readers import via_deltalake
from tests.test_cli import cli
from tests.test_crash import DATE, backdate_a_transfer, kill_at, manifest_checksum, reader_view, run_status

# Fixtures and helpers of the other modules, bound here so pytest finds the fixtures in this module.
s3_endpoint, s3_storage = s3.s3_endpoint, s3.s3_storage
DAYS, _listing, _staging = backends.DAYS, backends._listing, backends._staging
US = query.MICROSECOND


def _overwrite_with_different_content(settings, path: str) -> None:
    """Rewrite one published object in place (same name, same row count, one amount changed), via pyarrow's fs."""
    fs, _ = store.resolve(settings.storage_uri)
    table = store.read_files(fs, [path])
    column = table.schema.get_field_index("credit_balance")
    values = table.column(column).to_pylist()
    values[0] += 1
    tampered = table.set_column(column, table.schema.field(column), pa.array(values, store.AMOUNT))
    with fs.open_output_stream(path) as sink:
        pq.write_table(tampered, sink)


def test_quality_checks_pass_then_the_manifest_check_catches_an_overwritten_file(settings):
    """Every check the Dagster checks and the audit call passes on a genesis and a sharded roll-forward
    partition on both backends; after one shard object is overwritten the manifest checks FAIL."""
    snapshot.take_snapshot(settings, DAYS[0], 300)
    snapshot.take_snapshot(settings, DAYS[1], 300, shards=2)
    for date in DAYS[:2]:
        outcomes = quality.integrity(settings, date)
        assert set(outcomes) == {"row_count", "balance_identity", "double_entry"}
        outcomes["manifest"] = quality.parquet_matches_manifest(settings, date)
        outcomes["index"] = quality.parquet_matches_index(settings, date)
        outcomes["sample"] = quality.sampled_recomputation(settings, date, sample_size=200, seed=9)
        outcomes["drift"] = quality.live_drift(settings, date)
        failed = {name: o.description for name, o in outcomes.items() if not o.passed}
        assert failed == {}, (date, failed)
        assert outcomes["sample"].metrics["sampled"] == 200 and outcomes["sample"].metrics["mismatches"] == 0
    assert quality.live_drift(settings, DAYS[1]).details["evaluated"] is True  # the latest: really compared

    paths = published.paths(settings, DAYS[1])
    assert len(paths) == 2
    _overwrite_with_different_content(settings, paths[1])
    assert published.paths(settings, DAYS[1]) == paths  # still "present": only the content changed
    manifest = quality.parquet_matches_manifest(settings, DAYS[1])
    assert not manifest.passed and manifest.details["checksum_matches"] is False
    assert "sha256" in manifest.description
    audit = quality.parquet_matches_index(settings, DAYS[1])
    assert not audit.passed and audit.details["checksum_matches"] is False
    assert quality.parquet_matches_manifest(settings, DAYS[0]).passed  # the other partition is untouched


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


@pytest.fixture
def s3_env(s3_storage, fresh_ledger, make_database, tmp_path) -> dict[str, str]:
    """The CLI's environment on S3: the storage URI and the standard AWS_* variables of the moto server."""
    env = {"LEDGER_DATABASE_URL": fresh_ledger, "SNAPSHOT_DATABASE_URL": make_database(),
           "SNAPSHOT_STORAGE_URI": s3_storage, "SNAPSHOT_START_DATE": "2026-10-01",
           "SNAPSHOT_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    return env


def _s3_listing(env: dict[str, str]) -> list[str]:
    """The partition prefix of DATE listed with pyarrow's S3FileSystem directly (every object, any name)."""
    fs = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], region="us-east-1", scheme="http",
                           access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"])
    prefix = store.partition_dir(env["SNAPSHOT_STORAGE_URI"], DATE)
    selector = pafs.FileSelector(prefix, allow_not_found=True, recursive=True)
    return sorted(i.path for i in fs.get_file_info(selector) if i.type == pafs.FileType.File)


def _holder(env: dict[str, str]) -> dict:
    fs, _ = store.resolve(env["SNAPSHOT_STORAGE_URI"])
    return store_records.read_json(fs, recovery.holder_path(env["SNAPSHOT_STORAGE_URI"], DATE))


@pytest.mark.parametrize("phase", ["visible", "read"])
def test_kill_9_on_s3_leaves_the_old_partition_and_is_cleaned_up(s3_env, tmp_path, monkeypatch, phase):
    """A real SIGKILL of `snapshot-pipeline snapshot` on S3: readers (through the manifest) still get the old
    partition exactly; at `visible` an orphan object sits under the partition prefix until `doctor` removes
    it; the dead run is marked failed; the next run publishes the new partition, exact, alone."""
    from snapshot_pipeline.settings import load_settings

    settings = load_settings(s3_env)
    cli("snapshot", "--date", DATE.isoformat(), "--batch-size", "200", env=s3_env)
    before, old_objects = manifest_checksum(s3_env), _s3_listing(s3_env)
    old_table = published.read_partition(settings, DATE)
    assert len(old_objects) == 1 and old_objects == published.paths(settings, DATE)
    assert snapshot_values(old_table) == expected_snapshot(s3_env["LEDGER_DATABASE_URL"],
                                                           calendar.cutoff(DATE, settings.timezone))
    backdate_a_transfer(s3_env["LEDGER_DATABASE_URL"])

    kill_at(s3_env, phase, tmp_path)
    holder = _holder(s3_env)
    assert holder is not None and holder["run_id"]
    assert manifest_checksum(s3_env) == before and reader_view(s3_env) == before
    assert published.read_partition(settings, DATE).equals(old_table)  # the previous partition, whole and exact
    listing = _s3_listing(s3_env)
    if phase == "visible":
        orphans = sorted(set(listing) - set(old_objects))
        assert len(orphans) == 1 and store.is_part_name(os.path.basename(orphans[0]))  # the uncommitted object
    else:
        assert listing == old_objects  # nothing of the new run under the partition prefix

    out = json.loads(cli("doctor", env=s3_env).stdout)
    assert [r["dead_run"]["run_id"] for r in out["recovered"]] == [holder["run_id"]]
    if phase == "visible":
        assert out["recovered"][0]["publish"] == "rolled_back"
    assert _s3_listing(s3_env) == old_objects  # the orphan object is gone, the committed one kept
    assert _staging(settings) == [] and _holder(s3_env) is None
    assert reader_view(s3_env) == before
    status, message = run_status(s3_env, holder["run_id"], monkeypatch)
    assert status == dg.DagsterRunStatus.FAILURE and "died without finishing" in message

    result = json.loads(cli("snapshot", "--date", DATE.isoformat(), "--batch-size", "200", env=s3_env).stdout)
    assert run_status(s3_env, result["run_id"], monkeypatch)[0] == dg.DagsterRunStatus.SUCCESS
    after = manifest_checksum(s3_env)
    assert after != before and reader_view(s3_env) == after
    new_objects = _s3_listing(s3_env)
    current = published.paths(settings, DATE)
    # the superseded object stays for the history window; the Delta table names only the new one
    assert new_objects == sorted(old_objects + current) and len(current) == 1 and current != old_objects
    assert via_deltalake(settings.storage_uri, DATE).num_rows == published.read_partition(settings, DATE).num_rows
    assert snapshot_values(published.read_partition(settings, DATE)) == expected_snapshot(
        s3_env["LEDGER_DATABASE_URL"], calendar.cutoff(DATE, settings.timezone))
    assert _staging(settings) == [] and _holder(s3_env) is None
