"""The only module that imports Dagster's private ``dagster._core``: what Dagster 1.13 offers no public API for.

Each import below is used through a small function here, so no other module touches a private type, and
each is pinned by ``tests/defs/common/test_dagster_internals.py``: when a Dagster upgrade moves one, that
test fails naming the import path, and this module is the one to change.

* ``AssetGraphSubset`` and ``AssetKeyPartitionKey``: a sensor requests a *backfill* (not runs) with
  ``RunRequest.for_asset_graph_subset``, which takes an ``AssetGraphSubset``; Dagster's own automation
  condition sensor builds its backfills this way, but keeps the type out of the public API (the
  constructor's docstring says so). Used by the gap filler (:func:`backfill_request`).
* ``BulkActionStatus``: ``DagsterInstance.get_backfills(status=...)`` is public, its status enum is not
  exported. Used by the gap filler to see whether its previous backfill is still running
  (:func:`requested_backfills`).
* ``AssetCheckEvaluationTargetMaterializationData``: ``AssetCheckEvaluation(target_materialization_data=...)``
  is public, the type of that argument is not. Without it, the per-partition check evaluations of a ranged
  (backfill) run count as out of date in the UI (:func:`target_materialization`).
* ``UnresolvedPartitionedAssetScheduleDefinition``, for type checking only: what the public
  ``build_schedule_from_partitioned_job`` returns besides a ``ScheduleDefinition`` (:data:`PartitionedSchedule`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.execution.backfill import BulkActionStatus

if TYPE_CHECKING:
    from dagster._core.definitions.partitions.partitioned_schedule import (
        UnresolvedPartitionedAssetScheduleDefinition,
    )

    PartitionedSchedule: TypeAlias = dg.ScheduleDefinition | UnresolvedPartitionedAssetScheduleDefinition

__all__ = [
    "AssetCheckEvaluationTargetMaterializationData",
    "AssetGraphSubset",
    "AssetKeyPartitionKey",
    "BulkActionStatus",
    "backfill_request",
    "requested_backfills",
    "target_materialization",
]


def backfill_request(asset_key: dg.AssetKey, partition_keys: Iterable[str], asset_graph: Any,
                     tags: Mapping[str, str]) -> dg.RunRequest:
    """A sensor's request for one Dagster backfill of ``partition_keys`` of ``asset_key`` (the backfill
    daemon splits it into runs by the asset's backfill policy). ``asset_graph``: the repository's."""
    subset = AssetGraphSubset.from_asset_partition_set(
        {AssetKeyPartitionKey(asset_key, key) for key in partition_keys}, asset_graph)
    return dg.RunRequest.for_asset_graph_subset(subset, tags=tags)


def requested_backfills(instance: dg.DagsterInstance, limit: int) -> Sequence[Any]:
    """The backfills the backfill daemon is still working on (status REQUESTED), newest first."""
    return instance.get_backfills(status=BulkActionStatus.REQUESTED, limit=limit)


def target_materialization(record: dg.EventLogRecord) -> AssetCheckEvaluationTargetMaterializationData:
    """The pointer an ``AssetCheckEvaluation`` keeps to the materialization it checks."""
    return AssetCheckEvaluationTargetMaterializationData(storage_id=record.storage_id, run_id=record.run_id,
                                                         timestamp=record.timestamp)
