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


def _matches(token: str, key: str) -> bool:
    return hmac.compare_digest(token.strip().encode(), key.encode())


async def authorize(request: Request) -> None:
    """With ``SNAPSHOT_API_KEY`` set: Blnk's ``X-Blnk-Key: <key>`` or ``Authorization: Bearer <key>``
    (constant-time comparison), else a 401. Every credential sent must be right: a wrong one is refused
    even beside a right one.

    ``async``: FastAPI runs it on the event loop, no thread-pool hop (docs/http-api.md, "Serving").
    """
    key = settings_of(request).api_key
    if not key:
        return
    blnk_key = request.headers.get("x-blnk-key")
    authorization = request.headers.get("authorization")
    if blnk_key is None and authorization is None:
        raise ApiError(401, "missing_api_key", "missing API key: send X-Blnk-Key: <key> or Authorization: Bearer <key>")
    ok = True
    if blnk_key is not None:
        ok = _matches(blnk_key, key)
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        ok = ok and scheme.lower() == "bearer" and _matches(token, key)
    if not ok:
        raise ApiError(401, "unauthorized", "invalid API key: send X-Blnk-Key: <key> or Authorization: Bearer <key>")


async def authorize_metrics(request: Request) -> None:
    """``/metrics``: with ``SNAPSHOT_METRICS_TOKEN`` set, ``Authorization: Bearer <token>`` (as Blnk protects its
    metrics with their own bearer token); else open, like ``/health``."""
    token = settings_of(request).metrics_token
    if not token:
        return
    scheme, _, sent = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not _matches(sent, token):
        raise ApiError(401, "metrics_unauthorized", "missing or invalid metrics token: send Authorization: Bearer"
                                                    " <SNAPSHOT_METRICS_TOKEN>")
