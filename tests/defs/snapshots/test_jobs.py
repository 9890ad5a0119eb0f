"""The sharded job: real runs on the multiprocess executor, each shard a step in its own process."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from snapshot_pipeline import faults, snapshot
from snapshot_pipeline.defs.snapshots.jobs import SHARDED_JOB
from snapshot_pipeline.names import ASSET_NAME
from snapshot_pipeline.settings import load_settings
from snapshot_pipeline.store import catalog, parquet
from snapshot_pipeline.store.location import Store
from tests.conftest import make_settings

DAY = dt.date(2026, 11, 2)


def sharded_job() -> dg.JobDefinition:
    """Rebuilt in every step process from the environment, as a code location would be."""
    from snapshot_pipeline.definitions import build_definitions

    return build_definitions(load_settings()).get_job_def(SHARDED_JOB)


@pytest.fixture
def env(adversarial_url, make_database, tmp_path, monkeypatch):
    values = {
        "LEDGER_DATABASE_URL": adversarial_url,
        "SNAPSHOT_DATABASE_URL": make_database(),
        "SNAPSHOT_STORAGE_URI": str(tmp_path / "store"),
        "SNAPSHOT_START_DATE": "2026-10-01",
        "SNAPSHOT_HOME": str(tmp_path),
        "SNAPSHOT_MAX_CONCURRENT_STEPS": "3",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SNAPSHOT_EXECUTOR", raising=False)
    (tmp_path / "dagster_home").mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster_home")) as instance:
        yield values, instance


def run(instance, day: dt.date, shards: int) -> dg.ExecuteJobResult:
    config = {"ops": {"plan_shards": {"config": {"shards": shards, "batch_size": 500}}}}
    return dg.execute_job(dg.reconstructable(sharded_job), instance=instance, run_config=config,
                          tags={"dagster/partition": day.isoformat()}, raise_on_error=False)


def test_shards_run_as_parallel_steps_and_publish_one_exact_partition(env, adversarial_url, make_database, tmp_path):
    values, instance = env
    settings = load_settings(values)
    snapshot.take_snapshot(settings, DAY - dt.timedelta(days=1), 500)  # a base to roll forward from

    with run(instance, DAY, 3) as result:
        assert result.success
        steps = {e.step_key: e.pid for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START}
        materialized = result.asset_materializations_for_node("commit_shards")
    assert set(steps) == {"plan_shards", "commit_shards", *(f"merge_shard[shard_{k}]" for k in range(3))}
    assert len(set(steps.values())) == 5  # every step in a process of its own
    assert [(m.asset_key, m.partition) for m in materialized] == [(dg.AssetKey(ASSET_NAME), DAY.isoformat())]
    assert materialized[0].metadata["shards"].value == 3

    reference = make_settings(adversarial_url, tmp_path / "reference", index_url=make_database())
    snapshot.take_snapshot(reference, DAY, 500)
    assert catalog.read_partition(settings, DAY).equals(catalog.read_partition(reference, DAY))
    assert len(catalog.paths(settings, DAY)) == 3
    records = instance.fetch_materializations(dg.AssetKey(ASSET_NAME), limit=5).records
    assert [r.partition_key for r in records] == [DAY.isoformat()]
    assert not list((tmp_path / "store" / ".staging").rglob("*.json"))  # the step outputs went with the commit


def test_a_failing_shard_step_skips_the_commit_and_publishes_nothing(env, monkeypatch, tmp_path):
    values, instance = env
    settings = load_settings(values)
    snapshot.take_snapshot(settings, DAY, 500)
    before = catalog.paths(settings, DAY)
    monkeypatch.setenv(faults.FAIL_SHARD_VARIABLE, "2")
    with run(instance, DAY, 3) as result:
        assert not result.success
        failed = [e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
        started = [e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START]
        messages = [str(e.event_specific_data.error) for e in result.all_events
                    if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "merge_shard[shard_2]" in failed and "commit_shards" not in started  # the commit never ran
    assert "injected failure in shard 2" in messages[failed.index("merge_shard[shard_2]")]
    # the other shards finished first, or stopped once the run's work was removed (by our message, or while
    # loading their removed inputs): either way only the first failure names the cause
    assert all(k.startswith("merge_shard[") for k in failed)
    assert catalog.paths(settings, DAY) == before
    assert parquet.list_partition(Store.at(settings.storage_uri), DAY) == before
    assert not [p for p in (tmp_path / "store" / ".staging").rglob("*") if p.is_file()]
