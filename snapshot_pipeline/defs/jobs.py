"""Jobs over the snapshot assets."""

from __future__ import annotations

import dagster as dg

from snapshot_pipeline.defs.assets import ASSET_NAME

SNAPSHOT_JOB = "balance_snapshots_job"


def build_snapshot_job(partitions_def: dg.DailyPartitionsDefinition) -> dg.UnresolvedAssetJobDefinition:
    """Materializes one daily partition of `balance_snapshots` (used by schedules, sensors and the HTTP trigger)."""
    return dg.define_asset_job(
        SNAPSHOT_JOB,
        selection=dg.AssetSelection.assets(ASSET_NAME),
        partitions_def=partitions_def,
        description="Materialize one daily partition of balance_snapshots.",
        tags={"domain": "ledger"},
    )
