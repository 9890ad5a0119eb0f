"""``/health``: both databases reachable (no API key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from snapshot_pipeline.api.deps import engine_of
from snapshot_pipeline.api.errors import RESPONSES, run_query
from snapshot_pipeline.api.models import HealthBody

router = APIRouter(tags=["service"])


@router.get("/health", response_model=HealthBody, responses={503: RESPONSES[503]})
def health(request: Request) -> dict:
    """Both databases reachable."""
    return run_query(lambda: {"status": "ok", **engine_of(request).ping()})
