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
    )


def dagster_home(settings: Settings) -> Path:
    """``DAGSTER_HOME`` if set, else ``<home>/.dagster_home``."""
    value = os.environ.get("DAGSTER_HOME")
    return Path(value).resolve() if value else settings.home / ".dagster_home"


def set_dagster_home(path: Path) -> None:
    os.environ["DAGSTER_HOME"] = str(path)
