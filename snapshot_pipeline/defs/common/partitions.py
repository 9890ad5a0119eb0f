"""The partitions of every asset: daily (the snapshots, daily reports, audit) and monthly (month-end reports),
in the business time zone."""

from __future__ import annotations

import dagster as dg

from snapshot_pipeline.settings import Settings


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """One partition per closed local day from ``SNAPSHOT_START_DATE`` in ``SNAPSHOT_TIMEZONE``.

    ``end_offset=0``: the current (open) day is not a partition until its cutoff passes.
    """
    return dg.DailyPartitionsDefinition(
        start_date=settings.start_date.isoformat(),
        timezone=settings.timezone,
        end_offset=0,
    )


def monthly_partitions(settings: Settings) -> dg.MonthlyPartitionsDefinition:
    """One partition per closed month (key ``YYYY-MM-01``) from the month of ``SNAPSHOT_START_DATE``, same time zone.

    ``end_offset=0``: a month is a partition once it has ended in the business time zone.
    """
    return dg.MonthlyPartitionsDefinition(
        start_date=settings.start_date.replace(day=1).isoformat(),
        timezone=settings.timezone,
        end_offset=0,
    )


def partitions_metadata(partitions_def: dg.DailyPartitionsDefinition) -> dict[str, str]:
    """The partition set a schedule targets, as schedule metadata shown in the UI.

    Dagster 1.13 shows "Partition set: None" for every schedule (its schedule snapshot always
    serializes ``partition_set_name=None``), so the schedule says it in its metadata.
    """
    return {"partition_set": f"balance_snapshots daily partitions from {partitions_def.start:%Y-%m-%d}"
                             f" ({partitions_def.timezone}); one partition per run"}
