"""Database URLs and connections, with errors a user can act on.

Resolves the ledger and snapshot-index URLs from :class:`Settings` (starting the
embedded PostgreSQL when no URL is configured) and opens psycopg / ADBC
connections that fail with :class:`DatabaseUnavailable` naming the database.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import adbc_driver_postgresql.dbapi as adbc
import psycopg

from snapshot_pipeline import embedded
from snapshot_pipeline.settings import Settings

CONNECT_TIMEOUT_SECONDS = 10


class DatabaseUnavailable(RuntimeError):
    """A configured database cannot be reached."""


def redact(url: str) -> str:
    """Hide the password of a URL for logs and error messages."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def ledger_url(settings: Settings) -> str:
    """URL of the source ledger (the embedded default when ``LEDGER_DATABASE_URL`` is unset)."""
    if settings.ledger_database_url:
        return settings.ledger_database_url
    return embedded.ensure_running(settings.data_dir)


def snapshot_url(settings: Settings) -> str:
    """URL of the snapshot index (defaults to the ledger's database)."""
    if settings.snapshot_database_url:
        return settings.snapshot_database_url
    return ledger_url(settings)


def connect(url: str, *, autocommit: bool = False, what: str = "database") -> psycopg.Connection:
    """A psycopg connection, or :class:`DatabaseUnavailable` with the redacted URL."""
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to the {what} at {redact(url)}: {exc}".strip()) from exc


def connect_arrow(url: str, what: str = "ledger database") -> adbc.Connection:
    """An ADBC connection (autocommit; callers run explicit BEGIN/COMMIT) for Arrow-native reads."""
    # libpq honours connect_timeout in the URL; add it unless the user set one.
    if "connect_timeout" not in url:
        url = url + ("&" if "?" in url else "?") + f"connect_timeout={CONNECT_TIMEOUT_SECONDS}"
    try:
        return adbc.connect(url, autocommit=True)
    except Exception as exc:  # adbc raises OperationalError/ProgrammingError depending on the failure
        raise DatabaseUnavailable(f"cannot connect to the {what} at {redact(url)}: {exc}".strip()) from exc
