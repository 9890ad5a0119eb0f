"""Schedules: the daily snapshot after each cutoff and the month-end close (audit, retention: ``defs/maintenance/``).

Times are local times of the business time zone (``SNAPSHOT_TIMEZONE``), so the daily run
follows the cutoff through daylight-saving changes. Whether they start RUNNING is
``SNAPSHOT_AUTOMATION_DEFAULT_STATUS`` (default RUNNING: a snapshot store must run itself);
either can be switched in the UI at any time.
"""

import datetime as dt
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import dagster as dg

from snapshot_pipeline import calendar
from snapshot_pipeline.defs.common.default_status import schedule_status
from snapshot_pipeline.defs.common.partitions import partitions_metadata
from snapshot_pipeline.names import TRIGGER_TAG
from snapshot_pipeline.settings import Settings

if TYPE_CHECKING:  # what build_schedule_from_partitioned_job returns (Dagster exports no name for it)
    from snapshot_pipeline.defs.common.dagster_internals import PartitionedSchedule

DAILY_SCHEDULE = "daily_snapshot_schedule"
MONTH_END_SCHEDULE = "month_end_close_schedule"
MONTH_TAG = "snapshot_pipeline/month"


def build_daily_schedule(job: "dg.UnresolvedAssetJobDefinition", settings: Settings,
                         partitions_def: dg.DailyPartitionsDefinition | None = None) -> "PartitionedSchedule":
    """Daily snapshot: each day at ``SNAPSHOT_SCHEDULE_TIME`` (local), request the day that just closed."""
    return dg.build_schedule_from_partitioned_job(
        job,
        name=DAILY_SCHEDULE,
        hour_of_day=settings.schedule_time.hour,
        minute_of_hour=settings.schedule_time.minute,
        default_status=schedule_status(settings.automation_running),
        description=(
            f"Materializes the partition of the day that just closed, every day at"
            f" {settings.schedule_time:%H:%M} in the partitions' time zone (SNAPSHOT_SCHEDULE_TIME)."
        ),
        tags={TRIGGER_TAG: "daily_schedule"},
        metadata=partitions_metadata(partitions_def) if partitions_def is not None else None,
    )


def build_month_end_schedule(job: "dg.UnresolvedAssetJobDefinition", partitions_def: dg.DailyPartitionsDefinition,
                             settings: Settings) -> dg.ScheduleDefinition:
    """Month-end close on the 1st of each month at ``SNAPSHOT_MONTH_END_CLOSE_TIME`` (local)."""
    close = settings.month_end_close_time
    timezone = partitions_def.timezone

    @dg.schedule(
        name=MONTH_END_SCHEDULE,
        cron_schedule=f"{close.minute} {close.hour} 1 * *",
        execution_timezone=timezone,
        job=job,
        default_status=schedule_status(settings.automation_running),
        metadata=partitions_metadata(partitions_def),
        description=(f"On the 1st of each month at {close:%H:%M} ({timezone}), re-materializes the last day of"
                     " the month that just ended, so late rows dated in that month are in its closing balances."),
    )
    def month_end_close_schedule(context: dg.ScheduleEvaluationContext):
        """Month-end close: on the 1st, re-materialize the last day of the month that just ended.

        It runs after the daily schedule (default 02:00 local), so transactions that arrived late
        during the first hours of the new month but are dated in the old one are in the closing
        balances, and it tags the run with the closed month (`snapshot_pipeline/month`). Monthly
        reports (issue 5: `month_end_balances`) hang off this close.
        """
        when = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        closed = calendar.last_day_of_previous_month(when.astimezone(ZoneInfo(timezone)).date())
        key = closed.isoformat()
        if closed < partitions_def.start.date():
            return dg.SkipReason(f"{key} is not a partition (partitions start at {partitions_def.start:%Y-%m-%d})")
        return dg.RunRequest(
            partition_key=key,
            run_key=f"month-end-close:{key}",
            tags={TRIGGER_TAG: "month_end_close", MONTH_TAG: f"{closed:%Y-%m}"},
        )

    return month_end_close_schedule


def build_schedules(job: "dg.UnresolvedAssetJobDefinition", partitions_def: dg.DailyPartitionsDefinition,
                    settings: Settings) -> list:
    return [build_daily_schedule(job, settings, partitions_def),
            build_month_end_schedule(job, partitions_def, settings)]

