"""The balance_snapshots asset, run for real through Dagster (materialize on a temporary instance)."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import psycopg
import pytest

from snapshot_pipeline.definitions import build_definitions
from snapshot_pipeline.defs.common.resources import SnapshotStoreResource
from snapshot_pipeline.defs.snapshots.assets import ASSET_NAME
from snapshot_pipeline.defs.snapshots.jobs import SNAPSHOT_JOB
from snapshot_pipeline.store import catalog
from tests.conftest import definitions_for, make_settings
from tests.oracle import expected_snapshot, snapshot_values

EXPECTED_METADATA = {
    "dagster/row_count", "balances_changed", "index_rows_written", "batches", "batch_size", "duration_ms",
    "snapshots_per_second", "bytes_written", "path", "cutoff", "watermark", "currency_totals",
}


@pytest.fixture
def setup(adversarial_url, make_database, tmp_path):
    index_url = make_database()
    settings = make_settings(adversarial_url, tmp_path / "store", "America/New_York", index_url=index_url)
    defs = definitions_for(settings)
    with dg.instance_for_test() as instance:
        yield settings, defs, instance, index_url


def run(defs, instance, partition: str, batch_size=1000):
    job = defs.resolve_job_def(SNAPSHOT_JOB)
    return job.execute_in_process(
        partition_key=partition, instance=instance, raise_on_error=False,
        run_config={"ops": {ASSET_NAME: {"config": {"batch_size": batch_size}}}},
    )


def test_materialization_metadata_logs_and_values(setup, adversarial_url):
    settings, defs, instance, _ = setup
    result = run(defs, instance, "2026-11-01", 250)
    assert result.success
    event = result.asset_materializations_for_node(ASSET_NAME)[0]
    metadata = {k: v.value for k, v in event.metadata.items()}
    assert EXPECTED_METADATA <= set(metadata)
    # 2026-11-01 in New York lasts 25 hours; its cutoff is 05:00 UTC the next day.
    assert metadata["cutoff"] == "2026-11-02T05:00:00+00:00"
    assert metadata["batch_size"] == "250"  # a setting: text, so the UI does not plot it
    assert isinstance(event.metadata["batch_size"], dg.TextMetadataValue)
    assert isinstance(event.metadata["watermark_transaction_id"], dg.TextMetadataValue)  # an id, not a measure
    assert isinstance(event.metadata["snapshots_per_second"], dg.FloatMetadataValue)
    assert metadata["batches"] == -(-metadata["dagster/row_count"] // 250)
    expected = expected_snapshot(adversarial_url, dt.datetime(2026, 11, 2, 5))
    assert metadata["dagster/row_count"] == len(expected)
    assert snapshot_values(catalog.read_partition(settings, dt.date(2026, 11, 1))) == expected
    totals = {r.data["currency"]: r.data for r in metadata["currency_totals"].records}
    assert sum(r["balances"] for r in totals.values()) == len(expected)
    assert sum(int(r["credit"]) for r in totals.values()) == sum(v["credit_balance"] for v in expected.values())
    assert sum(int(r["balance"]) for r in totals.values()) == sum(v["balance"] for v in expected.values())
    messages = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
    assert any("status=started" in m and "batch_size=250" in m for m in messages)
    assert any("status=completed" in m and "total_snapshots=" in m and "snapshots_per_second=" in m
               for m in messages)
    # the materialization is recorded against the partition in the instance
    assert instance.get_latest_materialization_event(dg.AssetKey(ASSET_NAME)).dagster_event.partition == "2026-11-01"


@pytest.mark.parametrize("bad", [0, -5, 1_000_001])
def test_invalid_batch_size_is_rejected_before_any_work(setup, bad):
    settings, defs, instance, index_url = setup
    result = run(defs, instance, "2026-10-30", bad)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    text = str(failure.step_failure_data.error.to_string())
    assert "batch_size" in text and ("greater than or equal to 1" in text or "less than or equal to 1000000" in text)
    assert not catalog.exists(settings, dt.date(2026, 10, 30))
    with psycopg.connect(index_url) as conn:
        assert conn.execute("SELECT to_regclass('snapshot_index.partitions')").fetchone()[0] is None


def test_wrong_type_batch_size_fails_config_validation(setup):
    _, defs, instance, _ = setup
    with pytest.raises(dg.DagsterInvalidConfigError, match="batch_size"):
        run(defs, instance, "2026-10-30", "lots")


def test_failed_run_logs_status_failed(adversarial_url, tmp_path):
    settings = make_settings(adversarial_url, tmp_path / "store")
    resource = SnapshotStoreResource(ledger_database_url="postgresql://postgres@127.0.0.1:1/none",
                                     storage_uri=settings.storage_uri)
    defs = build_definitions(settings, resource)
    with dg.instance_for_test() as instance:
        result = run(defs, instance, "2026-10-30")
        assert not result.success
        messages = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
        assert any("status=failed" in m and "cannot connect" in m for m in messages)


def test_code_location_loads():
    from snapshot_pipeline import definitions

    defs = definitions.defs()  # built lazily (@dg.definitions), as Dagster loads it
    assert defs.resolve_assets_def(ASSET_NAME).partitions_def is not None
    assert defs.resolve_job_def(SNAPSHOT_JOB) is not None


def test_day_d_declares_its_dependency_on_day_d_minus_1():
    """Lineage and backfill order: the asset depends on its own previous partition (and on nothing else)."""
    from snapshot_pipeline import definitions

    asset = definitions.defs().resolve_assets_def(ASSET_NAME)
    key = dg.AssetKey(ASSET_NAME)
    assert asset.dependency_keys == {key}
    mapping = asset.get_partition_mapping(key)
    assert isinstance(mapping, dg.TimeWindowPartitionMapping)
    assert (mapping.start_offset, mapping.end_offset) == (-1, -1)
    graph = definitions.defs().resolve_asset_graph()
    assert key in graph.get(key).parent_keys
