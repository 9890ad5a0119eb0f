"""The HTTP service: Blnk-compatible balance-at-time queries and the snapshot trigger (FastAPI).

``snapshot-pipeline serve`` runs it with uvicorn; OpenAPI docs are at ``/docs``.

* ``GET /balances/{balance_id}/at?timestamp=&from_source=``: Blnk's response shape with exact
  integer amounts, plus ``inflight``, ``anchor``, ``replayed_transactions`` and ``existed``;
* ``GET /balances/{balance_id}/change?start=&end=``: opening, closing, credits and debits over [start, end);
* ``POST /balances-snapshots?batch_size=N``: Blnk's trigger; launches a Dagster run of
  ``balance_snapshots_job`` for the latest closed partition through the Dagster webserver's GraphQL
  API and returns at once, as Blnk does (HTTP 200, Blnk's ``message``), plus ``run_id``, an absolute
  ``status_url`` and ``run_url`` (the run in the Dagster UI);
* ``GET /balances-snapshots/{run_id}``: that run's status, progress (rows so far, rate) while it
  runs, its metrics when done, the error when it failed;
* ``GET /health``: both databases reachable.

With ``SNAPSHOT_API_KEY`` set, every endpoint but ``/health`` and the docs needs
``Authorization: Bearer <key>`` (constant-time comparison). Errors are JSON
``{"code": ..., "message": ...}``: 400 bad input, 401, 404 unknown balance or run, 422 an amount that cannot
be represented (balance and value named), 503 when the
database or Dagster is unreachable.
"""

from __future__ import annotations

import contextlib
import hmac
import logging

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from snapshot_pipeline import calendar, db, names, query
from snapshot_pipeline.dagster_client import DagsterClient, DagsterUnavailable, LaunchRejected, RunNotFound
from snapshot_pipeline.settings import Settings, load_settings, redact

logger = logging.getLogger(__name__)

SERVICE_CONNECTIONS = 8
SNAPSHOT_STARTED = "Snapshotting in progress. should be completed shortly"  # Blnk's own message, verbatim


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# ------------------------------------------------------------------------------------------- response models


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable error code")
    message: str


class BlnkBalance(BaseModel):
    balance: int = Field(description="credit_balance - debit_balance, minor units (exact integer)")
    debit_balance: int
    credit_balance: int
    currency: str
    balance_id: str


class Inflight(BaseModel):
    inflight_balance: int
    inflight_credit_balance: int
    inflight_debit_balance: int


class AnchorBody(BaseModel):
    snapshot_date: str = Field(description="the snapshot partition the answer started from")
    cutoff: str = Field(description="its cutoff (UTC); legs with effective time >= cutoff were replayed")
    watermark_transaction_id: int = Field(description="highest transactions.id its read could see")


class BalanceAtBody(BaseModel):
    balance: BlnkBalance
    timestamp: str = Field(description="the instant asked for, in UTC")
    from_source: bool
    inflight: Inflight
    existed: bool = Field(description="whether the balance existed (created_at <= timestamp); amounts are 0 if not")
    anchor: AnchorBody | None = Field(description="null: no snapshot at or before the instant; replayed from genesis")
    replayed_transactions: int = Field(description="journal rows read to complete the answer")


class BalanceChangeBody(BaseModel):
    balance_id: str
    start: str
    end: str
    currency: str
    opening_balance: int = Field(description="balance over effective time < start")
    closing_balance: int = Field(description="balance over effective time < end")
    credits: int = Field(description="APPLIED credits with effective time in [start, end)")
    debits: int = Field(description="APPLIED debits with effective time in [start, end)")
    net_change: int


class SnapshotTriggerBody(BaseModel):
    message: str = Field(description="Blnk's message, verbatim: " + repr(SNAPSHOT_STARTED))
    run_id: str = Field(description="the Dagster run id")
    partition: str
    batch_size: int
    status_url: str = Field(description="absolute URL of GET /balances-snapshots/{run_id}")
    run_url: str = Field(description="the run's page in the Dagster UI")


class ProgressBody(BaseModel):
    rows: int = Field(description="balances written so far")
    snapshots_per_second: float | None = Field(description="rate so far")
    at: float | None = Field(description="Unix time of the progress report")


class RunBody(BaseModel):
    run_id: str
    job_name: str
    status: str = Field(description="Dagster run status: QUEUED, STARTING, STARTED, SUCCESS, FAILURE, CANCELED...")
    done: bool
    partition: str | None
    start_time: float | None
    end_time: float | None
    metrics: dict | None = Field(description="the materialization's metadata (rows, duration_ms, ...) once done")
    progress: ProgressBody | None = Field(description="while running: rows written so far and the rate")
    error: str | None = Field(description="why the run failed (FAILURE)")
    run_url: str | None = Field(None, description="the run's page in the Dagster UI")


_ERRORS = {
    400: {"model": ErrorBody, "description": "bad input"},
    401: {"model": ErrorBody, "description": "missing or wrong API key"},
    422: {"model": ErrorBody, "description": "an amount that cannot be represented exactly (the balance is named)"},
    503: {"model": ErrorBody, "description": "database or Dagster unreachable"},
}


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_BALANCE_AT_QUERY = [
    {"name": "timestamp", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "RFC 3339 instant with a UTC offset (e.g. 2026-11-02T09:30:00Z, 2026-11-02T15:00:00.250+05:30),"
                    " from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z once in UTC; default: now"},
    {"name": "from_source", "in": "query", "required": False, "schema": {"type": "boolean", "default": False},
     "description": "replay the journal from genesis instead of a snapshot"},
]


def _flag(text: str | None, what: str) -> bool:
    """A boolean query parameter (true/false, 1/0, yes/no, on/off; absent = false) or a 400."""
    if text is None:
        return False
    value = text.strip().lower()
    if value not in _TRUE + _FALSE:
        raise ApiError(400, "bad_request", f"{what}: must be true or false, got {text[:64]!r}")
    return value in _TRUE


# ------------------------------------------------------------------------------------------------------ app


def create_app(settings: Settings | None = None, *, engine: query.QueryEngine | None = None,
               dagster: DagsterClient | None = None) -> FastAPI:
    """The service for one configuration. ``engine``/``dagster`` may be given (tests); else built at startup."""
    settings = settings or load_settings()
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state["engine"] = engine or query.QueryEngine(settings, max_connections=SERVICE_CONNECTIONS)
        state["dagster"] = dagster or DagsterClient(settings.dagster_webserver_url)
        try:
            yield
        finally:
            if engine is None:
                state["engine"].close()
            if dagster is None:
                state["dagster"].close()

    app = FastAPI(
        title="snapshot_pipeline",
        description="Exact balances at any instant, from daily Dagster snapshots plus the Blnk journal.",
        version="0.1.0",
        lifespan=lifespan,
    )

    async def authorize(request: Request) -> None:
        if not settings.api_key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise ApiError(401, "unauthorized", "missing or invalid API key: send Authorization: Bearer <key>")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                             for e in exc.errors())
        return JSONResponse({"code": "bad_request", "message": problems}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"code": code, "message": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        return JSONResponse({"code": "internal_error", "message": redact(message)}, status_code=500)

    def run_query(fn):
        try:
            return fn()
        except query.QueryError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        except query.BalanceNotFound as exc:
            raise ApiError(404, "balance_not_found", f"balance {exc.balance_id!r} does not exist") from None
        except query.AmountOverflow as exc:
            raise ApiError(422, "amount_not_representable", str(exc)) from None
        except db.DatabaseUnavailable as exc:
            raise ApiError(503, "database_unavailable", str(exc)) from None

    def instant(text: str | None, what: str):
        if text is None:
            return query.utc_now()
        try:
            return query.parse_timestamp(text, what)
        except query.QueryError as exc:
            raise ApiError(400, "invalid_timestamp", str(exc)) from None

    # ---------------------------------------------------------------------------------------- routes

    @app.get("/health", tags=["service"], responses={503: _ERRORS[503]})
    def health():
        """Both databases reachable."""
        return run_query(lambda: {"status": "ok", **state["engine"].ping()})

    @app.get("/balances/{balance_id}/at", response_model=BalanceAtBody, tags=["balances"],
             responses={**_ERRORS, 404: {"model": ErrorBody, "description": "unknown balance"}},
             openapi_extra={"parameters": _BALANCE_AT_QUERY})
    async def balance_at(balance_id: str, request: Request):
        """The balance as of ``timestamp``: every APPLIED leg and open hold with effective time <= timestamp.

        Exact whatever the repair state of the snapshots: starts from the latest snapshot at or before
        the instant and replays the legs it did not include (later, late and backdated ones).

        The hot path (README, "Serving"): auth and parameters are read on the event loop without
        FastAPI's per-request validation, and the sync query runs in the thread pool (one hop), so a
        slow query (a busy balance) never stalls the worker's other requests.
        """
        await authorize(request)
        params = request.query_params
        at = instant(params.get("timestamp"), "timestamp")
        from_source = _flag(params.get("from_source"), "from_source")
        answer = await run_in_threadpool(run_query, lambda: state["engine"].balance_at(balance_id, at,
                                                                                    from_source=from_source))
        return JSONResponse(answer.as_blnk())

    @app.get("/balances/{balance_id}/change", response_model=BalanceChangeBody, tags=["balances"],
             responses={**_ERRORS, 404: {"model": ErrorBody, "description": "unknown balance"}},
             dependencies=[Depends(authorize)])
    def balance_change(
        balance_id: str,
        start: str = Query(..., description="RFC 3339 instant (inclusive)"),
        end: str = Query(..., description="RFC 3339 instant (exclusive)"),
    ):
        """Opening (effective < start) and closing (effective < end) balances, credits and debits in [start, end)."""
        begin, finish = instant(start, "start"), instant(end, "end")
        change = run_query(lambda: state["engine"].balance_change(balance_id, begin, finish))
        body = change.as_dict()
        body.pop("opening"), body.pop("closing")
        return JSONResponse(body)

    @app.post("/balances-snapshots", response_model=SnapshotTriggerBody, status_code=200, tags=["snapshots"],
              responses=_ERRORS, dependencies=[Depends(authorize)])
    def trigger_snapshots(
        request: Request,
        batch_size: str = Query(str(names.BATCH_SIZE_DEFAULT),
                                description=f"balances per batch, {names.BATCH_SIZE_RULE}"
                                            f" (default {names.BATCH_SIZE_DEFAULT})"),
    ):
        """Blnk's trigger: snapshot the latest closed day. Launches a Dagster run and returns at once.

        As Blnk: HTTP 200 with ``{"message": "Snapshotting in progress. should be completed shortly"}``;
        added: ``run_id``, the absolute ``status_url`` and ``run_url`` (the run in the Dagster UI).
        """
        try:
            size: object = int(batch_size)
        except ValueError:
            size = batch_size
        problem = names.batch_size_problem(size)
        if problem:
            raise ApiError(400, "invalid_batch_size", problem)
        day = calendar.last_closed_day(settings.timezone)
        if day < settings.start_date:
            raise ApiError(400, "no_partition", f"no closed day since SNAPSHOT_START_DATE={settings.start_date}")
        try:
            launched = state["dagster"].launch_snapshot(day.isoformat(), size, tags={"launched_by": "http"})
        except LaunchRejected as exc:
            raise ApiError(400, "launch_rejected", str(exc)) from None
        except DagsterUnavailable as exc:
            raise ApiError(503, "dagster_unavailable", str(exc)) from None
        run_id = launched["run_id"]
        return JSONResponse(
            {"message": SNAPSHOT_STARTED, "run_id": run_id, "partition": day.isoformat(), "batch_size": size,
             "status_url": str(request.url_for("snapshot_run", run_id=run_id)),
             "run_url": state["dagster"].run_url(run_id)},
            status_code=200,
        )

    @app.get("/balances-snapshots/{run_id}", response_model=RunBody, tags=["snapshots"],
             responses={**_ERRORS, 404: {"model": ErrorBody, "description": "unknown run"}},
             dependencies=[Depends(authorize)])
    def snapshot_run(run_id: str):
        """Status of a snapshot run: progress (rows, rate) while it runs, its metrics once done, the error if
        it failed, and a link to the run in the Dagster UI."""
        try:
            return JSONResponse(state["dagster"].run(run_id))
        except RunNotFound:
            raise ApiError(404, "run_not_found", f"run {run_id!r} does not exist") from None
        except DagsterUnavailable as exc:
            raise ApiError(503, "dagster_unavailable", str(exc)) from None

    return app
