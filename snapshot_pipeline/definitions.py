"""The Dagster code location: one ``Definitions`` built from ``defs/``.

``dagster dev -m snapshot_pipeline.definitions`` (or ``workspace.yaml``) loads ``defs``.
Tests and the CLI call :func:`build_definitions` with explicit settings.
"""

from __future__ import annotations

import dagster as dg

from snapshot_pipeline.defs.assets import build_snapshot_asset
from snapshot_pipeline.defs.jobs import build_snapshot_job
from snapshot_pipeline.defs.partitions import daily_partitions, monthly_partitions
from snapshot_pipeline.defs.reports import build_report_assets, build_reports_sensor
from snapshot_pipeline.defs.resources import SnapshotStoreResource
from snapshot_pipeline.settings import Settings, load_settings


def build_definitions(settings: Settings | None = None, store: SnapshotStoreResource | None = None) -> dg.Definitions:
    """All definitions for one configuration (time zone and start date fix the partitions)."""
    settings = settings or load_settings()
    partitions_def = daily_partitions(settings)
    snapshots = build_snapshot_asset(partitions_def)
    reports = build_report_assets(partitions_def, monthly_partitions(settings))
    return dg.Definitions(
        assets=[snapshots, *reports],
        jobs=[build_snapshot_job(partitions_def)],
        sensors=[build_reports_sensor(reports)],
        resources={"snapshot_store": store or SnapshotStoreResource()},
    )


defs = build_definitions()
