"""Environment -> one typed settings object.

This is the only module that reads ``os.environ``. Everything else receives a
:class:`Settings` (or the values it holds), which keeps the library testable.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_START_DATE = "2026-01-01"
DEFAULT_TIMEZONE = "UTC"
DEFAULT_DAGSTER_WEBSERVER_URL = "http://127.0.0.1:3000"
DEFAULT_RETENTION_DAYS = 730
DEFAULT_RETENTION_MONTHS = 84
DEFAULT_SCHEDULE_TIME = "00:10"
DEFAULT_MONTH_END_CLOSE_TIME = "02:00"
DEFAULT_AUTOMATION_STATUS = "RUNNING"
DEFAULT_RETENTION_STATUS = "STOPPED"
STATUSES = ("RUNNING", "STOPPED")


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
    dagster_webserver_url: str = DEFAULT_DAGSTER_WEBSERVER_URL
    api_key: str | None = dataclasses.field(default=None, repr=False)
    dagster_database_url: str | None = None  # DAGSTER_PG_URL: the Dagster instance's storage (None = derived)
    retention_days: int = DEFAULT_RETENTION_DAYS
    retention_months: int = DEFAULT_RETENTION_MONTHS
    alert_webhook_url: str | None = None
    schedule_time: dt.time = dt.time(0, 10)
    month_end_close_time: dt.time = dt.time(2, 0)
    automation_running: bool = True
    retention_running: bool = False

    @property
    def uses_embedded(self) -> bool:
        return self.ledger_database_url is None

    @property
    def data_dir(self) -> Path:
        return self.home / ".data"

    @property
    def tzinfo(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def with_overrides(self, **changes: object) -> "Settings":
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
    try:
        number = int(value)
    except ValueError:
        number = None
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


def parse_status(value: str, what: str) -> bool:
    """``RUNNING`` -> True, ``STOPPED`` -> False (case-insensitive)."""
    upper = value.strip().upper()
    if upper not in STATUSES:
        raise SettingsError(f"{what}={value!r} must be RUNNING or STOPPED")
    return upper == "RUNNING"


def parse_webhook(value: str | None) -> str | None:
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise SettingsError(f"SNAPSHOT_ALERT_WEBHOOK_URL={value!r} must be an http:// or https:// URL")
    return value


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read the documented environment variables (README, DESIGN §4).

    The HTTP service also reads ``DAGSTER_WEBSERVER_URL`` (the Dagster webserver whose GraphQL API
    launches snapshot runs) and ``SNAPSHOT_API_KEY`` (when set, requests need ``Authorization: Bearer``).
    """
    env = os.environ if environ is None else environ
    home = Path(env.get("SNAPSHOT_HOME") or os.getcwd()).resolve()
    ledger_url = env.get("LEDGER_DATABASE_URL") or None
    snapshot_url = env.get("SNAPSHOT_DATABASE_URL") or ledger_url
    storage = env.get("SNAPSHOT_STORAGE_URI") or str(home / ".data" / "snapshots")
    timezone = parse_timezone(env.get("SNAPSHOT_TIMEZONE") or DEFAULT_TIMEZONE)
    start = parse_date(env.get("SNAPSHOT_START_DATE") or DEFAULT_START_DATE, "SNAPSHOT_START_DATE")
    return Settings(
        ledger_database_url=ledger_url,
        snapshot_database_url=snapshot_url,
        storage_uri=storage,
        timezone=timezone,
        start_date=start,
        home=home,
        dagster_webserver_url=(env.get("DAGSTER_WEBSERVER_URL") or DEFAULT_DAGSTER_WEBSERVER_URL).rstrip("/"),
        api_key=env.get("SNAPSHOT_API_KEY") or None,
        dagster_database_url=env.get("DAGSTER_PG_URL") or None,
        retention_days=parse_int(env.get("SNAPSHOT_RETENTION_DAYS") or str(DEFAULT_RETENTION_DAYS),
                                 "SNAPSHOT_RETENTION_DAYS", 1, 100_000),
        retention_months=parse_int(env.get("SNAPSHOT_RETENTION_MONTHS") or str(DEFAULT_RETENTION_MONTHS),
                                   "SNAPSHOT_RETENTION_MONTHS", 0, 12_000),
        alert_webhook_url=parse_webhook(env.get("SNAPSHOT_ALERT_WEBHOOK_URL")),
        schedule_time=parse_time(env.get("SNAPSHOT_SCHEDULE_TIME") or DEFAULT_SCHEDULE_TIME,
                                 "SNAPSHOT_SCHEDULE_TIME"),
        month_end_close_time=parse_time(env.get("SNAPSHOT_MONTH_END_CLOSE_TIME") or DEFAULT_MONTH_END_CLOSE_TIME,
                                        "SNAPSHOT_MONTH_END_CLOSE_TIME"),
        automation_running=parse_status(env.get("SNAPSHOT_AUTOMATION_DEFAULT_STATUS") or DEFAULT_AUTOMATION_STATUS,
                                        "SNAPSHOT_AUTOMATION_DEFAULT_STATUS"),
        retention_running=parse_status(env.get("SNAPSHOT_RETENTION_DEFAULT_STATUS") or DEFAULT_RETENTION_STATUS,
                                       "SNAPSHOT_RETENTION_DEFAULT_STATUS"),
    )


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


def set_dagster_home(path: Path) -> None:
    os.environ["DAGSTER_HOME"] = str(path)
