"""Jobs over the snapshot assets.

They run on the code location's executor (``SNAPSHOT_EXECUTOR``, defs/executors.py; by default in one
process: a snapshot run is one asset step plus a few check steps, and a process start per step would
cost more than the work itself).
"""

from __future__ import annotations

import dagster as dg

from snapshot_pipeline.names import ASSET_NAME, SNAPSHOT_JOB


def build_snapshot_job() -> dg.UnresolvedAssetJobDefinition:
    """Materializes daily partitions of `balance_snapshots` with the in-run checks (schedules, sensors, HTTP)."""
    return dg.define_asset_job(
        SNAPSHOT_JOB,
        selection=dg.AssetSelection.assets(ASSET_NAME),
        description="Materialize daily partitions of balance_snapshots and run the in-run checks"
                    " (file checks, sampled recompute, live drift over changed balances).",
        tags={"domain": "ledger"},
    )
