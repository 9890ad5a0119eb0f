"""The ``ledger_db`` pool: carried by exactly the steps that query the ledger's database (defs/common/pools.py)."""

from __future__ import annotations

import dagster as dg
import pytest

from snapshot_pipeline.definitions import build_definitions
from snapshot_pipeline.defs.common.pools import LEDGER_DB_POOL
from snapshot_pipeline.defs.common.resources import SnapshotStoreResource
from snapshot_pipeline.defs.maintenance.jobs import AUDIT_JOB, RETENTION_JOB
from snapshot_pipeline.defs.snapshots.jobs import SHARDED_JOB
from snapshot_pipeline.names import SNAPSHOT_JOB
from snapshot_pipeline.settings import load_settings
from tests.conftest import make_settings

IN_POOL = {
    SNAPSHOT_JOB: {"balance_snapshots", "snapshot_file_checks", "balance_snapshots_sampled_recomputation_matches",
                   "balance_snapshots_live_balances_match"},
    SHARDED_JOB: {"plan_shards"},
    AUDIT_JOB: {"balance_snapshots_audit"},
    RETENTION_JOB: set(),
}
# merge_shard reads only the store's files, commit_shards and retention write the index, the two other
# reports read only snapshot files: none waits for a ledger_db slot
NOT_IN_POOL = {"merge_shard", "commit_shards", "apply_snapshot_retention", "ledger_currency_totals",
               "month_end_balances"}


@pytest.fixture(scope="module")
def pools(tmp_path_factory) -> dict[str, dict[str, str | None]]:
    """Per job of the code location (the implicit asset job included): op name -> pool."""
    settings = load_settings({"SNAPSHOT_HOME": str(tmp_path_factory.mktemp("home")),
                              "SNAPSHOT_START_DATE": "2026-10-01"})
    repository = build_definitions(settings, SnapshotStoreResource()).get_repository_def()
    return {job.name: {op.name: op.pool for op in job.graph.iterate_op_defs()} for job in repository.get_all_jobs()}


def test_the_pool_is_named_ledger_db():
    assert LEDGER_DB_POOL == "ledger_db"


@pytest.mark.parametrize("job", sorted(IN_POOL))
def test_each_job_puts_exactly_its_ledger_reading_steps_in_the_pool(pools, job):
    assert {op for op, pool in pools[job].items() if pool == LEDGER_DB_POOL} == IN_POOL[job]
    assert {pool for op, pool in pools[job].items() if op not in IN_POOL[job]} <= {None}


def test_every_asset_and_check_that_reads_the_ledger_is_in_the_pool(pools):
    assets = next(ops for name, ops in pools.items() if name.startswith("__ASSET_JOB"))
    in_pool = {op for op, pool in assets.items() if pool == LEDGER_DB_POOL}
    assert in_pool == (IN_POOL[SNAPSHOT_JOB] | IN_POOL[AUDIT_JOB] | {"balance_movements", "reconciliation_report"})
    assert set(assets) - in_pool == {"ledger_currency_totals", "month_end_balances"}
    everywhere = {op: pool for ops in pools.values() for op, pool in ops.items()}
    assert {everywhere[op] for op in NOT_IN_POOL} == {None}


def test_a_snapshot_run_holds_one_ledger_db_slot_at_a_time(adversarial_url, make_database, tmp_path):
    """With the pool limited to one slot (``dagster instance concurrency set ledger_db 1``), a snapshot run's
    asset step and its three check steps take the slot in turn: the run succeeds and gives the slot back."""
    index_url = make_database()
    settings = make_settings(adversarial_url, tmp_path / "store", index_url=index_url)
    defs = build_definitions(settings, SnapshotStoreResource(
        ledger_database_url=adversarial_url, snapshot_database_url=index_url, storage_uri=settings.storage_uri))
    with dg.instance_for_test() as instance:
        assert instance.event_log_storage.supports_global_concurrency_limits
        instance.event_log_storage.set_concurrency_slots(LEDGER_DB_POOL, 1)
        result = defs.resolve_job_def(SNAPSHOT_JOB).execute_in_process(partition_key="2026-10-30", instance=instance)
        assert result.success
        assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == dict.fromkeys(
            ["row_count_matches_ledger", "balance_equals_credit_minus_debit", "double_entry_per_currency",
             "parquet_matches_manifest", "sampled_recomputation_matches", "live_balances_match"], True)
        info = instance.event_log_storage.get_concurrency_info(LEDGER_DB_POOL)
        assert (info.slot_count, info.active_slot_count, info.pending_step_count) == (1, 0, 0)
