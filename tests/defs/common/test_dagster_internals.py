"""Dagster internals the code location depends on: pinned here, imported nowhere but one module.

Dagster 1.13 exports no public name for these (defs/common/dagster_internals.py says what each is for).
When an upgrade moves one, the first test fails naming the import path to update in that module.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import dagster as dg
import pytest

from snapshot_pipeline.defs.common import dagster_internals

PACKAGE = Path(__file__).resolve().parents[3] / "snapshot_pipeline"
INTERNALS_MODULE = PACKAGE / "defs" / "common" / "dagster_internals.py"
PINNED = {  # import path -> names the code location uses from it
    "dagster._core.definitions.assets.graph.asset_graph_subset": ["AssetGraphSubset"],
    "dagster._core.definitions.events": ["AssetKeyPartitionKey"],
    "dagster._core.execution.backfill": ["BulkActionStatus"],
    "dagster._core.definitions.asset_checks.asset_check_evaluation": ["AssetCheckEvaluationTargetMaterializationData"],
    "dagster._core.definitions.partitions.partitioned_schedule": ["UnresolvedPartitionedAssetScheduleDefinition"],
}


@pytest.mark.parametrize("path", sorted(PINNED))
def test_each_pinned_import_path_still_exists(path):
    try:
        module = importlib.import_module(path)
    except ImportError as exc:
        pytest.fail(f"Dagster {dg.__version__} moved {path}: update defs/common/dagster_internals.py ({exc})")
    for name in PINNED[path]:
        assert hasattr(module, name), (f"Dagster {dg.__version__}: {path} has no {name} any more; update"
                                       " defs/common/dagster_internals.py")


def _private_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dagster._"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("dagster._")}
    return found


def test_only_the_internals_module_imports_dagster_internals():
    importers = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if _private_imports(p)}
    assert importers == {"defs/common/dagster_internals.py"}
    assert _private_imports(INTERNALS_MODULE) == set(PINNED)  # and exactly the pinned paths


def test_the_status_the_gap_filler_waits_on_is_still_requested():
    assert dagster_internals.BulkActionStatus.REQUESTED.value == "REQUESTED"
    with dg.instance_for_test() as instance:
        assert list(dagster_internals.requested_backfills(instance, limit=50)) == []


def test_a_backfill_request_carries_the_partitions_and_the_tags():
    daily = dg.DailyPartitionsDefinition(start_date="2026-10-01")

    @dg.asset(partitions_def=daily, name="balance_snapshots")
    def snapshots():
        return None

    graph = dg.Definitions(assets=[snapshots]).get_repository_def().asset_graph
    request = dagster_internals.backfill_request(dg.AssetKey("balance_snapshots"), ["2026-10-02", "2026-10-03"],
                                                 graph, tags={"snapshot_pipeline/trigger": "gap_fill"})
    assert request.requires_backfill_daemon()
    assert request.tags == {"snapshot_pipeline/trigger": "gap_fill"}
    subset = request.asset_graph_subset
    assert subset is not None
    assert set(subset.iterate_asset_partitions()) == {
        dagster_internals.AssetKeyPartitionKey(dg.AssetKey("balance_snapshots"), key)
        for key in ("2026-10-02", "2026-10-03")}


def test_a_materialization_record_becomes_the_target_of_a_check_evaluation():
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization("balance_snapshots"))
        record = instance.fetch_materializations(dg.AssetKey("balance_snapshots"), limit=1).records[0]
        target = dagster_internals.target_materialization(record)
    assert (target.storage_id, target.run_id, target.timestamp) == (record.storage_id, record.run_id,
                                                                    record.timestamp)
    evaluation = dg.AssetCheckEvaluation(asset_key=dg.AssetKey("balance_snapshots"), check_name="c", passed=True,
                                         target_materialization_data=target)
    assert evaluation.target_materialization_data == target
