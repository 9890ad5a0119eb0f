"""``GET /metrics``: Prometheus metrics of the service and of the pipeline it serves.

* per route: ``snapshot_api_requests_total{method,route,status}`` and the latency histogram
  ``snapshot_api_request_duration_seconds{method,route}`` (recorded by :class:`RequestMetrics`, a pure ASGI
  middleware: no per-request task, as the hot path needs);
* the pipeline, read at scrape time from the snapshot index (one small query) and the Dagster webserver
  (two GraphQL queries), kept for :data:`CACHE_SECONDS` so scrapes stay cheap:
  ``snapshot_pipeline_latest_partition_timestamp_seconds`` (the latest published day's cutoff),
  ``snapshot_pipeline_days_behind`` (last closed day minus the latest published day),
  ``snapshot_pipeline_published_partitions``, ``snapshot_pipeline_last_run_duration_seconds``,
  ``snapshot_pipeline_last_run_rows`` and ``snapshot_pipeline_last_run_rows_per_second`` (the most recently
  materialized partition), ``snapshot_pipeline_failed_runs`` (failed runs of the snapshot jobs on the
  Dagster instance), ``snapshot_pipeline_late_repair_runs`` and ``snapshot_pipeline_late_transactions_found``
  (runs the late-row repair scan requested, and the late journal rows it found);
  ``snapshot_pipeline_source_up{source="index"|"dagster"}`` says whether each source answered (an index
  that needs migrations this code has, ``snapshot-pipeline migrate``, counts as down).

With several worker processes (``serve --workers N``) the request metrics are aggregated across them
through prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by ``serve``).
With ``SNAPSHOT_METRICS_TOKEN`` set, a scrape needs ``Authorization: Bearer <token>``, as Blnk's metrics.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from snapshot_pipeline import calendar, db
from snapshot_pipeline.api.deps import authorize_metrics, dagster_of, settings_of
from snapshot_pipeline.dagster_client import DagsterClient, DagsterUnavailable
from snapshot_pipeline.outages import OutageLog
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import index

CACHE_SECONDS = 5.0
REQUESTS = Counter("snapshot_api_requests", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram("snapshot_api_request_duration_seconds", "HTTP request latency", ["method", "route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

router = APIRouter(tags=["service"])
logger = logging.getLogger(__name__)

PIPELINE_SQL = """
SELECT max(snapshot_date), count(*),
       (SELECT row(duration_ms, row_count) FROM snapshot_index.partitions
         ORDER BY materialized_at DESC LIMIT 1)
FROM snapshot_index.partitions
"""


class RequestMetrics:
    """Counts and times every request by its route template (``/balances/{balance_id}/at``, never the id)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            REQUESTS.labels(method, template, str(status[0])).inc()
            LATENCY.labels(method, template).observe(time.perf_counter() - started)


class PipelineCollector:
    """The pipeline's gauges (see the module docstring), read at most every :data:`CACHE_SECONDS`."""

    def __init__(self, settings: Settings, dagster: DagsterClient):
        self.settings, self.dagster = settings, dagster
        self._lock = threading.Lock()
        self._cached: tuple[float, list[GaugeMetricFamily]] | None = None
        self._index_outages = OutageLog(logger, "/metrics: the snapshot index")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > CACHE_SECONDS:
                self._cached = (now, self._read())
            yield from self._cached[1]

    def _read(self) -> list[GaugeMetricFamily]:
        out: list[GaugeMetricFamily] = []
        up = GaugeMetricFamily("snapshot_pipeline_source_up", "1 if the source answered this scrape", labels=["source"])
        try:
            index_up = self._index(out)
        except (db.DatabaseUnavailable, Exception) as exc:  # noqa: BLE001 - a scrape never fails: the source is down
            index_up = False
            reason = " ".join(str(exc).split())[:300]
            self._index_outages.down(f"{self._index_outages.source} is unavailable: {reason}")
        else:
            self._index_outages.answered()
        up.add_metric(["index"], 1.0 if index_up else 0.0)
        try:
            self._dagster(out)
            up.add_metric(["dagster"], 1.0)
        except DagsterUnavailable:
            up.add_metric(["dagster"], 0.0)
        return [up, *out]

    def _index(self, out: list[GaugeMetricFamily]) -> bool:
        with db.connect(db.snapshot_url(self.settings), autocommit=True, what="snapshot index database") as conn:
            if not index.ready(conn):  # never created: nothing published; an outdated index is a source down
                latest, count, last = None, 0, None
            else:
                row = conn.execute(PIPELINE_SQL).fetchone()
                latest, count, last = row if row else (None, 0, None)
        out.append(_gauge("snapshot_pipeline_published_partitions", "published snapshot partitions", count))
        if latest is not None:
            cutoff = calendar.cutoff(latest, self.settings.timezone).replace(tzinfo=dt.UTC)
            behind = (calendar.last_closed_day(self.settings.timezone) - latest).days
            out.append(_gauge("snapshot_pipeline_latest_partition_timestamp_seconds",
                              "cutoff of the latest published partition (Unix seconds)", cutoff.timestamp()))
            out.append(_gauge("snapshot_pipeline_days_behind",
                              "last closed day minus the latest published partition, in days", behind))
        if last is not None:
            duration_ms, rows = (int(v) for v in _row_fields(last))
            out.append(_gauge("snapshot_pipeline_last_run_duration_seconds",
                              "duration of the latest materialization", duration_ms / 1000))
            out.append(_gauge("snapshot_pipeline_last_run_rows", "rows of the latest materialization", rows))
            out.append(_gauge("snapshot_pipeline_last_run_rows_per_second", "rows per second of the latest"
                              " materialization", rows / max(duration_ms / 1000, 1e-3)))
        return True

    def _dagster(self, out: list[GaugeMetricFamily]) -> None:
        facts = self.dagster.pipeline_run_facts()
        out.append(_gauge("snapshot_pipeline_failed_runs", "failed runs of the snapshot jobs on the Dagster"
                          " instance", facts["failed_runs"]))
        out.append(_gauge("snapshot_pipeline_late_repair_runs", "runs requested by the late-row repair scan",
                          facts["repair_runs"]))
        out.append(_gauge("snapshot_pipeline_late_transactions_found", "late journal rows the repair scan found"
                          " (over the runs it requested)", facts["late_transactions"]))


def _row_fields(value) -> tuple:
    """psycopg returns a ``row(...)`` as a tuple, or as its text ``(a,b)`` when the type is unknown."""
    if isinstance(value, tuple):
        return value
    return tuple(str(value).strip("()").split(","))


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def registry_for(request: Request) -> CollectorRegistry:
    """This process's request metrics (or every worker's, in multiprocess mode) plus the pipeline's gauges."""
    settings = settings_of(request)
    registry = CollectorRegistry()
    if settings.metrics_multiprocess_dir:
        MultiProcessCollector(registry)
    else:
        registry.register(_ProcessMetrics())
    collector = getattr(request.app.state, "pipeline_collector", None)
    if collector is None:
        collector = request.app.state.pipeline_collector = PipelineCollector(settings, dagster_of(request))
    registry.register(collector)
    return registry


class _ProcessMetrics:
    """The request metrics of this process (single-process mode)."""

    def collect(self):
        yield from REQUESTS.collect()
        yield from LATENCY.collect()


@router.get("/metrics", dependencies=[Depends(authorize_metrics)], response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text format 0.0.4): request counts and latencies per route, pipeline gauges."""
    registry = registry_for(request)
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
