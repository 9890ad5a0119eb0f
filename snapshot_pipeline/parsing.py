"""The rules of each configuration value: its parser, and the error that says what is allowed.

:mod:`snapshot_pipeline.settings` reads the environment and applies these; the CLI applies the same rules to
its arguments (``parse_int``, ``parse_date``). Nothing here reads ``os.environ``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

STATUSES = ("RUNNING", "STOPPED")
DATABASE_SCHEMES = ("postgresql", "postgres")
# SQLAlchemy-style driver suffixes accepted in DAGSTER_PG_URL (the CLI rewrites them to +psycopg2).
DAGSTER_DRIVERS = ("", "psycopg2", "psycopg")
# Object stores pyarrow.fs.FileSystem.from_uri opens; anything else with "://" is refused.
OBJECT_STORE_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "az", "hdfs", "viewfs")
DATABASE_URL_SHAPE = "postgresql://user:password@host:port/database"


class SettingsError(ValueError):
    """A configuration value is invalid; the message says which and what is allowed."""


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
