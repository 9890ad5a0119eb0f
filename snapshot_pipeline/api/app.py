"""The app factory of the HTTP service: one FastAPI app per configuration, its routers and error handlers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from snapshot_pipeline import query
from snapshot_pipeline.api import balances, health, snapshots, versions
from snapshot_pipeline.api.errors import install_handlers
from snapshot_pipeline.dagster_client import DagsterClient
from snapshot_pipeline.settings import Settings, load_settings

SERVICE_CONNECTIONS = 8  # per worker process (README, "Serving")


def create_app(settings: Settings | None = None, *, engine: query.QueryEngine | None = None,
               dagster: DagsterClient | None = None) -> FastAPI:
    """The service for one configuration (default: the environment's, as uvicorn's ``factory`` in each worker).

    ``engine``/``dagster`` may be given (and are then left open); else they are built at startup and
    closed at shutdown.
    """
    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = engine or query.QueryEngine(settings, max_connections=SERVICE_CONNECTIONS)
        app.state.dagster = dagster or DagsterClient(settings.dagster_webserver_url)
        try:
            yield
        finally:
            if engine is None:
                app.state.engine.close()
            if dagster is None:
                app.state.dagster.close()

    app = FastAPI(
        title="snapshot_pipeline",
        description="Exact balances at any instant, from daily Dagster snapshots plus the Blnk journal.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_handlers(app)
    for module in (health, balances, versions, snapshots):
        app.include_router(module.router)
    return app
