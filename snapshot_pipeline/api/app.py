"""The app factory of the HTTP service: one FastAPI app per configuration, its routers and error handlers.

The OpenAPI docs (Swagger UI at ``/docs``, ReDoc at ``/redoc``) are served from assets installed with the
package (``fastapi-offline``): they work on a machine without internet access, as on a production network.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from snapshot_pipeline import query
from snapshot_pipeline.api import balances, health, metrics, sets, snapshots, versions
from snapshot_pipeline.api.errors import install_handlers
from snapshot_pipeline.dagster_client import DagsterClient
from snapshot_pipeline.settings import Settings, load_settings

SERVICE_CONNECTIONS = 8  # per worker process (docs/http-api.md, "Serving")
DOCS_ASSETS = "/docs-assets"  # where the Swagger UI and ReDoc files are served from


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

    app = FastAPIOffline(
        title="snapshot_pipeline",
        description="Exact balances at any instant, from daily Dagster snapshots plus the Blnk journal."
                    " A drop-in for Blnk's balance-at-time and snapshot endpoints (X-Blnk-Key or Bearer).",
        version="0.1.0",
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
    )
    app.state.settings = settings
    install_handlers(app)
    for module in (health, balances, sets, versions, snapshots, metrics):
        app.include_router(module.router)
    app.add_middleware(metrics.RequestMetrics)
    return app
