"""The Dagster code location: one ``Definitions`` built from ``defs/``.

``dagster dev -m snapshot_pipeline.definitions`` (or ``workspace.yaml``) loads ``defs``.
Tests and the CLI call :func:`build_definitions` with explicit settings.
"""

from __future__ import annotations

import dagster as dg

from snapshot_pipeline.defs.assets import build_snapshot_asset
from snapshot_pipeline.defs.jobs import build_snapshot_job
from snapshot_pipeline.defs.partitions import daily_partitions
from snapshot_pipeline.defs.resources import SnapshotStoreResource
from snapshot_pipeline.settings import Settings, load_settings


def build_definitions(settings: Settings | None = None, store: SnapshotStoreResource | None = None) -> dg.Definitions:
    """All definitions for one configuration (time zone and start date fix the partitions)."""
    settings = settings or load_settings()
    partitions_def = daily_partitions(settings)
    snapshots = build_snapshot_asset(partitions_def)
    return dg.Definitions(
        assets=[snapshots],
        jobs=[build_snapshot_job(partitions_def)],
        resources={"snapshot_store": store or SnapshotStoreResource()},
    )


defs = build_definitions()
