"""Environment -> one typed settings object.

This is the only module that reads or writes ``os.environ``. Everything else receives a
:class:`Settings` (or the values it holds), which keeps the library testable.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

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
STATUSES = ("RUNNING", "STOPPED")
DATABASE_SCHEMES = ("postgresql", "postgres")
# SQLAlchemy-style driver suffixes accepted in DAGSTER_PG_URL (the CLI rewrites them to +psycopg2).
DAGSTER_DRIVERS = ("", "psycopg2", "psycopg")
# Object stores pyarrow.fs.FileSystem.from_uri opens; anything else with "://" is refused.
OBJECT_STORE_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "az", "hdfs", "viewfs")
DATABASE_URL_SHAPE = "postgresql://user:password@host:port/database"


class SettingsError(ValueError):
    """A configuration value is invalid; the message says which and what is allowed."""


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
    start_date_source: str = "SNAPSHOT_START_DATE"  # or LEDGER_RECORD (the seeded ledger's first day) or "default"
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


def parse_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SettingsError(
            f"SNAPSHOT_TIMEZONE={name!r} is not a known IANA time zone (examples: UTC, America/New_York)"
        ) from exc
    return name


def parse_date(value: str, what: str = "date") -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise SettingsError(f"{what}={value!r} is not a date in YYYY-MM-DD form") from exc


def parse_int(value: str, what: str, low: int, high: int) -> int:
    """An integer in ASCII digits (as Blnk's server parses numbers: no other script's digits) within bounds."""
    text = str(value).strip()
    number = int(text) if re.fullmatch(r"[+-]?[0-9]+", text, flags=re.ASCII) else None
    if number is None or not low <= number <= high:
        raise SettingsError(f"{what}={value!r} must be an integer from {low} to {high:,}")
    return number


def parse_time(value: str, what: str) -> dt.time:
    try:
        parsed = dt.time.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.second or parsed.microsecond or parsed.tzinfo or len(value) != 5:
        raise SettingsError(f"{what}={value!r} is not a local time in HH:MM form (example: 00:10)")
    return parsed


EXECUTORS = ("in_process", "multiprocess", "k8s")


def parse_executor(value: str) -> str:
    """``SNAPSHOT_EXECUTOR``: how a run executes its steps (defs/common/executors.py)."""
    name = value.strip().lower().replace("-", "_")
    if name not in EXECUTORS:
        raise SettingsError(f"SNAPSHOT_EXECUTOR={value!r} must be one of {', '.join(EXECUTORS)}")
    return name


_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def parse_k8s_name(value: str, what: str) -> str:
    """A Kubernetes object name (RFC 1123 label: lowercase letters, digits and '-', at most 63)."""
    if not _K8S_NAME.match(value):
        raise SettingsError(f"{what}={value!r} is not a Kubernetes name (lowercase letters, digits and '-',"
                            " at most 63 characters)")
    return value


def parse_status(value: str, what: str) -> bool:
    """``RUNNING`` -> True, ``STOPPED`` -> False (case-insensitive)."""
    upper = value.strip().upper()
    if upper not in STATUSES:
        raise SettingsError(f"{what}={value!r} must be RUNNING or STOPPED")
    return upper == "RUNNING"


_USERINFO_PASSWORD = re.compile(r"(://[^:/?#@]*:)[^/?#]*@")
_QUERY_PASSWORD = re.compile(r"(password=)[^&\s'\"]*", re.IGNORECASE)


def redact(url: str) -> str:
    """``url`` with its password (``user:password@`` or ``?password=``) replaced by ``***``."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1***@", url))


def _scrub(message: str, url: str) -> str:
    """A library's error message about ``url`` with every form of its password hidden."""
    match = _USERINFO_PASSWORD.search(url)
    secrets = {match.group(0)[len(match.group(1)):-1]} if match else set()
    secrets |= {m.group(0).split("=", 1)[1] for m in _QUERY_PASSWORD.finditer(url)}
    for secret in sorted(secrets - {""}, key=len, reverse=True):
        message = message.replace(secret, "***")
    return redact(message)


def parse_database_url(value: str | None, what: str, drivers: tuple[str, ...] = ("",)) -> str | None:
    """A PostgreSQL URL (``postgresql://`` or ``postgres://``), checked for shape; ``None`` when unset.

    The shape is checked by libpq's own parser (``psycopg.conninfo``) plus the port range, so a
    value that would fail at connect time for its form fails here, naming ``what`` (the variable).
    No connection is made. Messages never show the password.
    """
    if not value:
        return None
    scheme, sep, _ = value.partition("://")
    base, _, driver = scheme.lower().partition("+")
    if not sep or base not in DATABASE_SCHEMES or driver not in drivers:
        schemes = ", ".join(f"postgresql+{d}://" for d in drivers if d)
        raise SettingsError(
            f"{what}={redact(value)!r} is not a PostgreSQL URL: use {DATABASE_URL_SHAPE} (postgres://"
            f"{', ' + schemes if schemes else ''} also accepted), or leave it unset"
        )
    try:
        parts = conninfo_to_dict("postgresql://" + value.partition("://")[2])
    except ProgrammingError as exc:
        detail = _scrub(str(exc).strip().splitlines()[0], value)
        raise SettingsError(f"{what}={redact(value)!r} is not a valid PostgreSQL URL ({detail});"
                            f" expected {DATABASE_URL_SHAPE}") from None
    for port in str(parts.get("port") or "5432").split(","):
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise SettingsError(f"{what}={redact(value)!r} has port {port!r}: a port is an integer from 1 to 65535")
    return value


def libpq_url(url: str) -> str:
    """A ``postgresql+driver://`` URL as plain ``postgresql://`` (what libpq and psycopg accept)."""
    return "postgresql://" + url.partition("://")[2]


def parse_http_url(value: str | None, what: str, example: str, secret: bool = False) -> str | None:
    """An ``http://`` or ``https://`` URL with a host; ``secret``: never echo it (webhooks embed tokens)."""
    if not value:
        return None
    try:
        parts = urlsplit(value)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:
        valid = False
    if not valid:
        shown = "(value not shown: it may hold a secret)" if secret else f"={redact(value)!r}"
        raise SettingsError(f"{what}{' ' if secret else ''}{shown} must be an http:// or https:// URL with a host"
                            f" (example: {example})")
    return value


def parse_webhook(value: str | None) -> str | None:
    return parse_http_url(value, "SNAPSHOT_ALERT_WEBHOOK_URL", "https://hooks.example.com/alerts", secret=True)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def parse_storage_uri(value: str) -> str:
    """``SNAPSHOT_STORAGE_URI``: a local directory (path or ``file://``) or an object-store URI.

    A local root must be a directory or creatable as one: the nearest existing ancestor must be a
    directory. Nothing is created here (see :func:`check_storage_writable`).
    """
    what = "SNAPSHOT_STORAGE_URI"
    scheme, sep, rest = value.partition("://")
    allowed = ", ".join(f"{s}://" for s in OBJECT_STORE_SCHEMES)
    if sep and scheme.lower() in OBJECT_STORE_SCHEMES:
        if not rest.strip("/"):
            raise SettingsError(f"{what}={redact(value)!r} names no bucket or path (example: s3://bucket/snapshots)")
        return value
    if sep and scheme.lower() != "file":
        raise SettingsError(f"{what}={redact(value)!r} has the unsupported scheme {scheme + '://'!r}: use a local"
                            f" path, file://, or an object store ({allowed})")
    if "\x00" in value:
        raise SettingsError(f"{what} contains a NUL character")
    path = Path(rest if sep else value).expanduser()
    existing = _nearest_existing(path.resolve())
    if not existing.is_dir():
        where = "is" if existing == path.resolve() else f"is under {str(existing)!r}, which is"
        raise SettingsError(f"{what}={value!r} {where} a file, not a directory: point it at a directory")
    return value


def check_storage_writable(storage_uri: str) -> None:
    """Before a run: a local storage root must be a writable directory, created here when missing.

    ``os.access`` on the directory or its nearest existing ancestor first (a clear message for
    another user's directory), then the root is created (``mkdir -p``), which is what the run would
    do first anyway; a root that cannot be created (``/proc/x``, a read-only mount, also as root)
    fails here, before any run is recorded. Object stores are checked by the run itself (there is
    no cheap check without credentials).
    """
    scheme, sep, rest = storage_uri.partition("://")
    if sep and scheme.lower() != "file":
        return
    path = Path(rest if sep else storage_uri).expanduser().resolve()
    existing = _nearest_existing(path)
    if not os.access(existing, os.W_OK | os.X_OK):
        verb = "is not writable" if existing == path else f"cannot be created: {str(existing)!r} is not writable"
        raise SettingsError(f"SNAPSHOT_STORAGE_URI={storage_uri!r} {verb} by this user")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"SNAPSHOT_STORAGE_URI={storage_uri!r} cannot be created as a directory:"
                            f" {exc.strerror or exc}") from None


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
                               else (parse_date(DEFAULT_START_DATE, "SNAPSHOT_START_DATE"), "default"))
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


def export_dagster_environment(home: Path, instance_url: str) -> None:
    """Point this process's Dagster at its instance: ``DAGSTER_HOME`` = ``home``, ``DAGSTER_PG_URL`` = ``instance_url``.

    The one place the package writes ``os.environ``. Dagster reads both variables from the environment
    (``DagsterInstance.get()``, ``dagster.yaml``'s ``env: DAGSTER_PG_URL``), and so do the processes the
    CLI starts (``dagster dev``, its daemon, run workers), which inherit them.
    """
    os.environ["DAGSTER_PG_URL"] = instance_url
    os.environ["DAGSTER_HOME"] = str(home)
