"""The Dagster code location: one ``Definitions`` built from ``defs/``.

``dagster dev -m snapshot_pipeline.definitions`` (or ``workspace.yaml``) loads ``defs``, built lazily
(``@dg.definitions``): importing this module reads no settings and connects to nothing.
Tests and the CLI call :func:`build_definitions` with explicit settings.
"""

from __future__ import annotations

import dagster as dg

from snapshot_pipeline.defs.alerting import build_run_failure_sensor
from snapshot_pipeline.defs.assets import build_snapshot_asset
from snapshot_pipeline.defs.audit import (
    build_audit_asset,
    build_audit_job,
    build_audit_schedule,
)
from snapshot_pipeline.defs.checks import (
    build_snapshot_checks,
    snapshot_freshness_policy,
)
from snapshot_pipeline.defs.executors import executor_for
from snapshot_pipeline.defs.jobs import build_snapshot_job
from snapshot_pipeline.defs.partitions import daily_partitions, monthly_partitions
from snapshot_pipeline.defs.recovery import build_recovery_sensor
from snapshot_pipeline.defs.reports import build_report_assets, build_reports_sensor
from snapshot_pipeline.defs.resources import SnapshotStoreResource, StepOutputsInStoreIOManager
from snapshot_pipeline.defs.retention import (
    build_retention_job,
    build_retention_schedule,
)
from snapshot_pipeline.defs.schedules import build_schedules
from snapshot_pipeline.defs.sensors import build_sensors
from snapshot_pipeline.defs.shards import STEP_IO, build_sharded_job, sharded_executor
from snapshot_pipeline.settings import Settings, load_settings


def build_definitions(settings: Settings | None = None, store: SnapshotStoreResource | None = None) -> dg.Definitions:
    """All definitions for one configuration (time zone and start date fix the partitions)."""
    settings = settings or load_settings()
    store_resource = store or SnapshotStoreResource.from_environment()
    partitions_def = daily_partitions(settings)
    freshness = snapshot_freshness_policy(settings, partitions_def.timezone)
    snapshots = build_snapshot_asset(partitions_def).map_asset_specs(
        lambda spec: dg.apply_freshness_policy(spec, freshness)
    )
    reports = build_report_assets(partitions_def, monthly_partitions(settings))
    snapshot_job = build_snapshot_job()
    audit_job = build_audit_job()
    retention_job = build_retention_job(partitions_def)
    return dg.Definitions(
        assets=[snapshots, build_audit_asset(partitions_def), *reports],
        asset_checks=build_snapshot_checks(partitions_def),
        jobs=[snapshot_job, audit_job, retention_job,
              build_sharded_job(partitions_def, sharded_executor(settings, executor_for(settings)))],
        schedules=[
            *build_schedules(snapshot_job, partitions_def, settings),
            build_audit_schedule(audit_job, settings, partitions_def),
            build_retention_schedule(retention_job, partitions_def.timezone, settings),
        ],
        sensors=[
            *build_sensors(snapshot_job, partitions_def, settings),
            build_run_failure_sensor(settings),
            build_recovery_sensor(settings),
            build_reports_sensor(reports, settings),
        ],
        resources={"snapshot_store": store_resource,
                   STEP_IO: StepOutputsInStoreIOManager(snapshot_store=store_resource)},
        # SNAPSHOT_EXECUTOR (defs/executors.py); by default one process per run, not per step: a UI- or
        # HTTP-launched snapshot costs the asset's time plus one run-worker start.
        executor=executor_for(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location as Dagster loads it: settings from the environment (docs/configuration.md)."""
    return build_definitions()
