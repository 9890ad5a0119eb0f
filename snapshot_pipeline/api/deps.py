"""Dependencies of the HTTP API's routes: the API key check and the app's query engine and Dagster client."""

from __future__ import annotations

import hmac

from fastapi import Request

from snapshot_pipeline import query
from snapshot_pipeline.api.errors import ApiError
from snapshot_pipeline.dagster_client import DagsterClient
from snapshot_pipeline.settings import Settings


def settings_of(request: Request) -> Settings:
    """The settings the app was built with."""
    return request.app.state.settings


def engine_of(request: Request) -> query.QueryEngine:
    """The app's pooled query engine (built at startup)."""
    return request.app.state.engine


def dagster_of(request: Request) -> DagsterClient:
    """The app's client of the Dagster webserver (built at startup)."""
    return request.app.state.dagster


async def authorize(request: Request) -> None:
    """With ``SNAPSHOT_API_KEY`` set: ``Authorization: Bearer <key>`` (constant-time comparison), else a 401.

    ``async``: FastAPI runs it on the event loop, no thread-pool hop (README, "Serving").
    """
    key = settings_of(request).api_key
    if not key:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise ApiError(401, "unauthorized", "missing or invalid API key: send Authorization: Bearer <key>")
