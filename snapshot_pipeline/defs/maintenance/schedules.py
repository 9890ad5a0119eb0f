"""Maintenance schedules: the daily diff audit (03:30 local) and the daily retention run (03:30 local, opt-in)."""

import datetime as dt
from typing import TYPE_CHECKING

import dagster as dg

from snapshot_pipeline.defs.common.default_status import schedule_status
from snapshot_pipeline.defs.common.partitions import partitions_metadata
from snapshot_pipeline.names import TRIGGER_TAG
from snapshot_pipeline.settings import Settings

if TYPE_CHECKING:  # what build_schedule_from_partitioned_job returns (Dagster exports no name for it)
    from snapshot_pipeline.defs.common.dagster_internals import PartitionedSchedule

AUDIT_SCHEDULE = "snapshot_audit_schedule"
AUDIT_TIME = dt.time(3, 30)
RETENTION_SCHEDULE = "snapshot_retention_schedule"
RETENTION_CRON = "30 3 * * *"


def build_audit_schedule(job: "dg.UnresolvedAssetJobDefinition", settings: Settings,
                         partitions_def: dg.DailyPartitionsDefinition) -> "PartitionedSchedule":
    """Daily at 03:30 (local), audits the day that just closed."""
    return dg.build_schedule_from_partitioned_job(
        job,
        name=AUDIT_SCHEDULE,
        hour_of_day=AUDIT_TIME.hour,
        minute_of_hour=AUDIT_TIME.minute,
        default_status=schedule_status(settings.automation_running),
        description=(
            f"Every day at {AUDIT_TIME:%H:%M} in the partitions' time zone, audits the day that just closed:"
            " its index rows are recomputed by diffing its Parquet file against the previous partition's"
            " (check parquet_matches_index; two full file reads, so not part of the snapshot runs)."
        ),
        tags={TRIGGER_TAG: "audit_schedule"},
        metadata=partitions_metadata(partitions_def),
    )


def build_retention_schedule(job: dg.JobDefinition, timezone: str, settings: Settings) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=RETENTION_SCHEDULE,
        job=job,
        cron_schedule=RETENTION_CRON,
        execution_timezone=timezone,
        default_status=schedule_status(settings.retention_running),
        tags={TRIGGER_TAG: "retention_schedule"},
        description=(
            "Applies the retention policy daily at 03:30 local time. Starts STOPPED unless"
            " SNAPSHOT_RETENTION_DEFAULT_STATUS=RUNNING (deleting history is opt-in)."
        ),
    )
