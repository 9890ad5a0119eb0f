"""Environment -> one typed settings object.

This is the only module that reads or writes ``os.environ``. Everything else receives a
:class:`Settings` (or the values it holds), which keeps the library testable.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from snapshot_pipeline.parsing import (
    DAGSTER_DRIVERS,
    parse_database_url,
    parse_date,
    parse_executor,
    parse_http_url,
    parse_int,
    parse_k8s_name,
    parse_status,
    parse_storage_uri,
    parse_time,
    parse_timezone,
    parse_webhook,
    redact,
)

DEFAULT_START_DATE = "2026-01-01"
DEFAULT_TIMEZONE = "UTC"
DEFAULT_DAGSTER_WEBSERVER_URL = "http://127.0.0.1:3000"
DEFAULT_RETENTION_DAYS = 730
DEFAULT_HOT_BALANCES = 16  # per query engine (query/hot.py)
DEFAULT_HISTORY_DAYS = 30  # superseded Delta files stay readable (time travel) this many days
DEFAULT_RETENTION_MONTHS = 84
DEFAULT_SCHEDULE_TIME = "00:10"
DEFAULT_MONTH_END_CLOSE_TIME = "02:00"
DEFAULT_AUTOMATION_STATUS = "RUNNING"
DEFAULT_RETENTION_STATUS = "STOPPED"
def project_root() -> Path:
    """The directory holding local state (``.data/``, ``.dagster_home/``, ``.data/snapshots``).

    ``SNAPSHOT_HOME`` overrides it; otherwise the current working directory.
    """
    return Path(os.environ.get("SNAPSHOT_HOME") or os.getcwd()).resolve()


@dataclasses.dataclass(frozen=True)
class Settings:
    """Resolved configuration of one process.

    ``ledger_database_url`` / ``snapshot_database_url`` are ``None`` when the
    embedded PostgreSQL is to be used (see :mod:`snapshot_pipeline.embedded`).

    Automation (issue 4): ``SNAPSHOT_RETENTION_DAYS`` / ``SNAPSHOT_RETENTION_MONTHS`` (tiered
    retention), ``SNAPSHOT_ALERT_WEBHOOK_URL`` (run-failure alerts), ``SNAPSHOT_SCHEDULE_TIME`` and
    ``SNAPSHOT_MONTH_END_CLOSE_TIME`` (local HH:MM), ``SNAPSHOT_AUTOMATION_DEFAULT_STATUS`` (schedules
    and sensors, default RUNNING) and ``SNAPSHOT_RETENTION_DEFAULT_STATUS`` (default STOPPED).
    """

    ledger_database_url: str | None
    snapshot_database_url: str | None
    storage_uri: str
    timezone: str
    start_date: dt.date
    home: Path
    # where start_date came from: SNAPSHOT_START_DATE, LEDGER_RECORD (the seeded ledger's first day) or
    # DEFAULT_START_SOURCE
    start_date_source: str = "SNAPSHOT_START_DATE"
    dagster_webserver_url: str = DEFAULT_DAGSTER_WEBSERVER_URL
    api_key: str | None = dataclasses.field(default=None, repr=False)
    metrics_token: str | None = dataclasses.field(default=None, repr=False)  # SNAPSHOT_METRICS_TOKEN (GET /metrics)
    metrics_multiprocess_dir: str | None = None  # PROMETHEUS_MULTIPROC_DIR: set by `serve --workers N` (N > 1)
    dagster_database_url: str | None = None  # DAGSTER_PG_URL: the Dagster instance's storage (None = derived)
    retention_days: int = DEFAULT_RETENTION_DAYS
    retention_months: int = DEFAULT_RETENTION_MONTHS
    history_days: int = DEFAULT_HISTORY_DAYS  # SNAPSHOT_HISTORY_DAYS: the Delta tables' history window
    hot_balances: int = DEFAULT_HOT_BALANCES  # SNAPSHOT_HOT_BALANCES: busy balances kept in memory (0: none)
    alert_webhook_url: str | None = None
    schedule_time: dt.time = dt.time(0, 10)
    month_end_close_time: dt.time = dt.time(2, 0)
    automation_running: bool = True
    retention_running: bool = False
    executor: str = "in_process"  # SNAPSHOT_EXECUTOR: one of EXECUTORS (defs/common/executors.py)
    max_concurrent_steps: int = 2  # SNAPSHOT_MAX_CONCURRENT_STEPS (multiprocess and k8s executors)
    k8s_namespace: str = "dagster"  # SNAPSHOT_K8S_NAMESPACE
    k8s_env_secret: str = "snapshot-pipeline-env"  # SNAPSHOT_K8S_ENV_SECRET: the step pods' environment

    @property
    def uses_embedded(self) -> bool:
        return self.ledger_database_url is None

    @property
    def data_dir(self) -> Path:
        return self.home / ".data"

    @property
    def tzinfo(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def with_overrides(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


# About 60 lines: one keyword argument per environment variable, each with its parser (splitting it would
# scatter the list of variables).
def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read the documented environment variables (README, DESIGN §4), validating every one.

    Every URL and URI is checked for scheme and shape here (no network): a bad value raises
    :class:`SettingsError` naming the variable and what is allowed, with passwords hidden.

    The HTTP service also reads ``DAGSTER_WEBSERVER_URL`` (the Dagster webserver whose GraphQL API
    launches snapshot runs) and ``SNAPSHOT_API_KEY`` (when set, requests need ``Authorization: Bearer``).
    """
    env = os.environ if environ is None else environ
    home = Path(env.get("SNAPSHOT_HOME") or os.getcwd()).resolve()
    ledger_url = parse_database_url(env.get("LEDGER_DATABASE_URL"), "LEDGER_DATABASE_URL")
    snapshot_url = parse_database_url(env.get("SNAPSHOT_DATABASE_URL"), "SNAPSHOT_DATABASE_URL") or ledger_url
    dagster_url = parse_database_url(env.get("DAGSTER_PG_URL"), "DAGSTER_PG_URL", DAGSTER_DRIVERS)
    storage = parse_storage_uri(env.get("SNAPSHOT_STORAGE_URI") or str(home / ".data" / "snapshots"))
    webserver = parse_http_url(env.get("DAGSTER_WEBSERVER_URL") or DEFAULT_DAGSTER_WEBSERVER_URL,
                               "DAGSTER_WEBSERVER_URL", DEFAULT_DAGSTER_WEBSERVER_URL)
    timezone = parse_timezone(env.get("SNAPSHOT_TIMEZONE") or DEFAULT_TIMEZONE)
    if env.get("SNAPSHOT_START_DATE"):
        start, start_source = parse_date(env["SNAPSHOT_START_DATE"], "SNAPSHOT_START_DATE"), "SNAPSHOT_START_DATE"
    else:
        recorded = recorded_start_date(home, ledger_url)
        start, start_source = ((recorded, LEDGER_RECORD) if recorded
                               else (parse_date(DEFAULT_START_DATE, "SNAPSHOT_START_DATE"), DEFAULT_START_SOURCE))
    return Settings(
        ledger_database_url=ledger_url,
        snapshot_database_url=snapshot_url,
        storage_uri=storage,
        timezone=timezone,
        start_date=start,
        start_date_source=start_source,
        home=home,
        dagster_webserver_url=(webserver or DEFAULT_DAGSTER_WEBSERVER_URL).rstrip("/"),
        api_key=env.get("SNAPSHOT_API_KEY") or None,
        metrics_token=env.get("SNAPSHOT_METRICS_TOKEN") or None,
        metrics_multiprocess_dir=env.get("PROMETHEUS_MULTIPROC_DIR") or None,
        dagster_database_url=dagster_url,
        retention_days=parse_int(env.get("SNAPSHOT_RETENTION_DAYS") or str(DEFAULT_RETENTION_DAYS),
                                 "SNAPSHOT_RETENTION_DAYS", 1, 100_000),
        retention_months=parse_int(env.get("SNAPSHOT_RETENTION_MONTHS") or str(DEFAULT_RETENTION_MONTHS),
                                   "SNAPSHOT_RETENTION_MONTHS", 0, 12_000),
        hot_balances=parse_int(env.get("SNAPSHOT_HOT_BALANCES") or str(DEFAULT_HOT_BALANCES),
                               "SNAPSHOT_HOT_BALANCES", 0, 10_000),
        history_days=parse_int(env.get("SNAPSHOT_HISTORY_DAYS") or str(DEFAULT_HISTORY_DAYS),
                               "SNAPSHOT_HISTORY_DAYS", 1, 100_000),
        alert_webhook_url=parse_webhook(env.get("SNAPSHOT_ALERT_WEBHOOK_URL")),
        schedule_time=parse_time(env.get("SNAPSHOT_SCHEDULE_TIME") or DEFAULT_SCHEDULE_TIME,
                                 "SNAPSHOT_SCHEDULE_TIME"),
        month_end_close_time=parse_time(env.get("SNAPSHOT_MONTH_END_CLOSE_TIME") or DEFAULT_MONTH_END_CLOSE_TIME,
                                        "SNAPSHOT_MONTH_END_CLOSE_TIME"),
        automation_running=parse_status(env.get("SNAPSHOT_AUTOMATION_DEFAULT_STATUS") or DEFAULT_AUTOMATION_STATUS,
                                        "SNAPSHOT_AUTOMATION_DEFAULT_STATUS"),
        retention_running=parse_status(env.get("SNAPSHOT_RETENTION_DEFAULT_STATUS") or DEFAULT_RETENTION_STATUS,
                                       "SNAPSHOT_RETENTION_DEFAULT_STATUS"),
        executor=parse_executor(env.get("SNAPSHOT_EXECUTOR") or "in_process"),
        max_concurrent_steps=parse_int(env.get("SNAPSHOT_MAX_CONCURRENT_STEPS") or "2",
                                       "SNAPSHOT_MAX_CONCURRENT_STEPS", 1, 1000),
        k8s_namespace=parse_k8s_name(env.get("SNAPSHOT_K8S_NAMESPACE") or "dagster", "SNAPSHOT_K8S_NAMESPACE"),
        k8s_env_secret=parse_k8s_name(env.get("SNAPSHOT_K8S_ENV_SECRET") or "snapshot-pipeline-env",
                                      "SNAPSHOT_K8S_ENV_SECRET"),
    )


DEFAULT_START_SOURCE = "default"  # start_date_source when neither SNAPSHOT_START_DATE nor a seeded ledger gave it
LEDGER_RECORD = ".data/ledger.json"  # under SNAPSHOT_HOME: the first day of the ledger `demo`/`seed-ledger` made


def _ledger_key(ledger_url: str | None) -> str:
    """Which ledger a record is about: the embedded one, or a server URL without its password."""
    return "embedded" if ledger_url is None else redact(ledger_url)


def recorded_start_date(home: Path, ledger_url: str | None) -> dt.date | None:
    """The first day of the ledger that ``demo``/``seed-ledger`` generated for this home and this ledger URL
    (the default of ``SNAPSHOT_START_DATE``); None when there is no such record (a ledger of your own).

    A file, not a database query: the code location reads its settings at every load (the webserver, the
    daemon, each run worker, ``dg check defs``), which must neither need a database nor see its partitions
    change under it."""
    try:
        record = json.loads((home / LEDGER_RECORD).read_text())
        if record.get("ledger") != _ledger_key(ledger_url):
            return None
        return dt.date.fromisoformat(record["first_day"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def record_ledger_start(settings: Settings, first_day: dt.date) -> None:
    """Write the record :func:`recorded_start_date` reads (``demo`` and ``seed-ledger``, after generating)."""
    path = settings.home / LEDGER_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"ledger": _ledger_key(settings.ledger_database_url), "first_day": first_day.isoformat()}
    path.write_text(json.dumps(payload) + "\n")


@dataclasses.dataclass(frozen=True)
class PausePoint:
    """Fault injection for crash tests: pause forever at ``phase`` after writing ``marker``."""

    phase: str
    marker: Path


def pause_point_setting(environ: dict[str, str] | None = None) -> PausePoint | None:
    """``SNAPSHOT_PAUSE_AT`` (a phase of :mod:`snapshot_pipeline.faults`) and ``SNAPSHOT_PAUSE_MARKER``.

    Read at each pause point (not cached in :class:`Settings`): a test sets them for one subprocess.
    Both must be set; otherwise there is no pause point.
    """
    env = os.environ if environ is None else environ
    phase = env.get("SNAPSHOT_PAUSE_AT") or None
    marker = env.get("SNAPSHOT_PAUSE_MARKER") or None
    if phase is None or marker is None:
        return None
    return PausePoint(phase=phase, marker=Path(marker))


def dagster_home(settings: Settings) -> Path:
    """``DAGSTER_HOME`` if set, else ``<home>/.dagster_home``."""
    value = os.environ.get("DAGSTER_HOME")
    return Path(value).resolve() if value else settings.home / ".dagster_home"


def export_metrics_multiprocess_dir(path: Path) -> None:
    """``PROMETHEUS_MULTIPROC_DIR`` for the worker processes ``serve`` starts (prometheus_client's multiprocess
    mode: each worker writes its request metrics there, any worker's ``/metrics`` sums them)."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


# Arrow's allocator: pyarrow allocates from mimalloc by default, and chooses its pool once, when it is imported,
# from this variable (pyarrow.set_memory_pool later moves only what pyarrow's Python layer allocates; C++ paths
# that ask for Arrow's default pool themselves, part of the Parquet reader's buffers, keep the one chosen at import).
ARROW_POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"
JEMALLOC = "jemalloc"


def jemalloc_wheel(tags: list[str]) -> bool:
    """Whether wheel ``tags`` name one of Arrow's Linux x86-64 wheels, which are built with jemalloc (its ARM,
    macOS and Windows wheels are not; a source or distribution build may not be)."""
    return any(("manylinux" in tag or "musllinux" in tag) and tag.endswith("_x86_64") for tag in tags)


def pyarrow_has_jemalloc() -> bool:
    """:func:`jemalloc_wheel` for the installed pyarrow, from its wheel metadata (pyarrow is not imported)."""
    try:
        wheel = importlib.metadata.distribution("pyarrow").read_text("WHEEL") or ""
    except importlib.metadata.PackageNotFoundError:
        return False
    return jemalloc_wheel([line.partition(":")[2].strip() for line in wheel.splitlines() if line.startswith("Tag:")])


def prefer_jemalloc() -> bool:
    """Ask Arrow for its jemalloc pool, in this process if pyarrow is not imported yet and in every process it
    starts, unless ``ARROW_DEFAULT_MEMORY_POOL`` is set already or pyarrow has no jemalloc; returns whether it did.

    Over a day's merge at 1M balances mimalloc keeps much of what the merge frees: re-runs peaked at 498-520 MB
    against 423-428 MB with jemalloc, at the same speed (docs/benchmarks.md, 2026-12-08)."""
    if ARROW_POOL_VARIABLE in os.environ or not pyarrow_has_jemalloc():
        return False
    os.environ[ARROW_POOL_VARIABLE] = JEMALLOC
    return True


def export_dagster_environment(home: Path, instance_url: str) -> None:
    """Point this process's Dagster at its instance: ``DAGSTER_HOME`` = ``home``, ``DAGSTER_PG_URL`` = ``instance_url``.

    Dagster reads both variables from the environment
    (``DagsterInstance.get()``, ``dagster.yaml``'s ``env: DAGSTER_PG_URL``), and so do the processes the
    CLI starts (``dagster dev``, its daemon, run workers), which inherit them.
    """
    os.environ["DAGSTER_PG_URL"] = instance_url
    os.environ["DAGSTER_HOME"] = str(home)
