"""Daily partitions of the snapshot asset, in the business time zone."""

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
