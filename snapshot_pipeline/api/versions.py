"""``/balances-snapshots/partitions/{date}/versions``: the versions of a snapshot partition, for audit."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Request

from snapshot_pipeline.api.deps import authorize, settings_of
from snapshot_pipeline.api.errors import ApiError, not_found

router = APIRouter(prefix="/balances-snapshots/partitions", tags=["snapshots"], dependencies=[Depends(authorize)])


@router.get("/{date}/versions", responses=not_found("partition"))
def partition_versions(date: str, request: Request) -> dict:
    """Every version of partition ``date`` inside the history window (SNAPSHOT_HISTORY_DAYS), oldest first:
    generation, Delta table version, when it was committed, the Dagster run, watermark, rows, rows changed,
    why (schedule, repair, backfill, manual, retention), and which one is current. Read a version with
    DuckDB/polars/deltalake time travel or ``snapshot-pipeline history --date D --version V``."""
    from snapshot_pipeline.store import history  # noqa: PLC0415 - deltalake only when asked

    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        raise ApiError(400, "invalid_date", f"date must be YYYY-MM-DD, got {date!r}") from None
    found = history.versions(settings_of(request), day)
    if not found["versions"]:
        raise ApiError(404, "partition_not_found", f"partition {day} has no recorded version")
    return found
