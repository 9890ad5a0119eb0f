"""``/balances-snapshots``: Blnk's snapshot trigger (a Dagster run) and the run's status."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

from fastapi import APIRouter, Depends, Request

from snapshot_pipeline import calendar, db, names
from snapshot_pipeline.api.deps import authorize, dagster_of, settings_of
from snapshot_pipeline.api.errors import RESPONSES, ApiError, database_unavailable, not_found
from snapshot_pipeline.api.models import SNAPSHOT_STARTED, RunBody, SnapshotTriggerBody
from snapshot_pipeline.api.params import BatchSize
from snapshot_pipeline.dagster_client import DagsterUnavailable, LaunchRejected, RunNotFound

router = APIRouter(prefix="/balances-snapshots", tags=["snapshots"], dependencies=[Depends(authorize)])
TRIGGER_LOCK = "snapshot_pipeline.api.trigger"


@contextlib.contextmanager
def _trigger_lock(settings, partition: str) -> Iterator[None]:
    """One trigger of ``partition`` at a time across every worker and replica of the service: a PostgreSQL
    advisory lock on the index database, held while the day's active run is looked up and, if none, launched
    (the launched run is QUEUED in Dagster's storage before the lock is released)."""
    key = int.from_bytes(hashlib.sha256(f"{TRIGGER_LOCK}:{partition}".encode()).digest()[:8], "big", signed=True)
    try:
        conn = db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database")
    except db.DatabaseUnavailable as exc:
        raise database_unavailable(exc) from None
    with conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


@router.post("", response_model=SnapshotTriggerBody, status_code=200, responses=RESPONSES)
def trigger_snapshots(request: Request, batch_size: BatchSize = names.BATCH_SIZE_DEFAULT) -> dict:
    """Blnk's trigger: snapshot the latest closed day. Launches a Dagster run and returns at once.

    As Blnk: HTTP 200 with ``{"message": "Snapshotting in progress. should be completed shortly"}``;
    added: ``run_id``, the absolute ``status_url`` and ``run_url`` (the run in the Dagster UI).
    Idempotent: while the day's run is queued or running, a trigger answers that run (``existing: true``,
    same ``run_id``, 200) and launches nothing.
    """
    settings, dagster = settings_of(request), dagster_of(request)
    day = calendar.last_closed_day(settings.timezone)
    if day < settings.start_date:
        raise ApiError(400, "no_partition", f"no closed day since SNAPSHOT_START_DATE={settings.start_date}")
    existing = False
    try:
        dagster.selector()  # Dagster reachable and the job loaded, before any lock is taken
        with _trigger_lock(settings, day.isoformat()):
            run_id = dagster.active_snapshot_run(day.isoformat())
            existing = run_id is not None
            if run_id is None:
                run_id = dagster.launch_snapshot(day.isoformat(), batch_size, tags={"launched_by": "http"})["run_id"]
    except LaunchRejected as exc:
        raise ApiError(400, "launch_rejected", str(exc)) from None
    except DagsterUnavailable as exc:
        raise ApiError(503, "dagster_unavailable", str(exc)) from None
    return {"message": SNAPSHOT_STARTED, "run_id": run_id, "partition": day.isoformat(), "batch_size": batch_size,
            "status_url": str(request.url_for("snapshot_run", run_id=run_id)), "run_url": dagster.run_url(run_id),
            "existing": existing}


@router.get("/{run_id}", response_model=RunBody, responses=not_found("run"))
def snapshot_run(run_id: str, request: Request) -> dict:
    """Status of a snapshot run: progress (rows, rate) while it runs, its metrics once done, the error if
    it failed, and a link to the run in the Dagster UI."""
    try:
        return dagster_of(request).run(run_id)
    except RunNotFound:
        raise ApiError(404, "run_not_found", f"run {run_id!r} does not exist") from None
    except DagsterUnavailable as exc:
        raise ApiError(503, "dagster_unavailable", str(exc)) from None
