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
