"""The Dagster code location: one ``Definitions`` built from ``defs/`` (snapshots, reports, maintenance).

``dagster dev -m snapshot_pipeline.definitions`` (or ``workspace.yaml``) loads ``defs``, built lazily
(``@dg.definitions``): importing this module reads no settings and connects to nothing.
Tests and the CLI call :func:`build_definitions` with explicit settings.
"""

from __future__ import annotations

import dagster as dg

from snapshot_pipeline.defs.common.executors import executor_for
from snapshot_pipeline.defs.common.partitions import daily_partitions, monthly_partitions
from snapshot_pipeline.defs.common.resources import STEP_IO, SnapshotStoreResource, StepOutputsInStoreIOManager
from snapshot_pipeline.defs.maintenance import (
    build_audit_asset,
    build_audit_job,
    build_audit_schedule,
    build_retention_job,
    build_retention_schedule,
    build_run_failure_sensor,
)
from snapshot_pipeline.defs.reports import build_report_assets, build_reports_sensor
from snapshot_pipeline.defs.snapshots import (
    build_recovery_sensor,
    build_schedules,
    build_sensors,
    build_sharded_job,
    build_snapshot_asset,
    build_snapshot_checks,
    build_snapshot_job,
    sharded_executor,
    snapshot_freshness_policy,
)
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
        # SNAPSHOT_EXECUTOR (defs/common/executors.py); by default one process per run, not per step: a UI- or
        # HTTP-launched snapshot costs the asset's time plus one run-worker start.
        executor=executor_for(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location as Dagster loads it: settings from the environment (docs/configuration.md)."""
    return build_definitions()
