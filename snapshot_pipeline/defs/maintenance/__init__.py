"""Maintenance of the snapshot store in Dagster (a façade: the definitions live in the modules below).

``assets`` (``balance_snapshots_audit``, the diff audit and its check), ``jobs`` (``snapshot_audit_job``,
``snapshot_retention_job``), ``schedules`` (the daily audit, the opt-in daily retention), ``sensors``
(``snapshot_run_failure_sensor``: run-failure alerting).
"""

from snapshot_pipeline.defs.maintenance.assets import build_audit_asset
from snapshot_pipeline.defs.maintenance.jobs import build_audit_job, build_retention_job
from snapshot_pipeline.defs.maintenance.schedules import build_audit_schedule, build_retention_schedule
from snapshot_pipeline.defs.maintenance.sensors import build_run_failure_sensor

__all__ = [
    "build_audit_asset",
    "build_audit_job",
    "build_audit_schedule",
    "build_retention_job",
    "build_retention_schedule",
    "build_run_failure_sensor",
]
