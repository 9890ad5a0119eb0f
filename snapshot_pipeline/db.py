"""Database URLs and connections, with errors a user can act on.

Resolves the ledger and snapshot-index URLs from :class:`Settings` (starting the
embedded PostgreSQL when no URL is configured) and opens psycopg / ADBC
connections that fail with :class:`DatabaseUnavailable` naming the database.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.errors
import psycopg.sql

from snapshot_pipeline import embedded, parsing
from snapshot_pipeline.settings import Settings

if TYPE_CHECKING:  # imported where used: the ADBC driver pulls in pyarrow.dataset and pandas (~0.8 s)
    import adbc_driver_postgresql.dbapi as adbc

CONNECT_TIMEOUT_SECONDS = 10
DAGSTER_DATABASE = "dagster"


class DatabaseUnavailable(RuntimeError):
    """A configured database cannot be reached."""


def redact(url: str) -> str:
    """Hide the password of a URL for logs and error messages (:func:`snapshot_pipeline.parsing.redact`)."""
    return parsing.redact(url)


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def ledger_url(settings: Settings) -> str:
    """URL of the source ledger (the embedded default when ``LEDGER_DATABASE_URL`` is unset)."""
    if settings.ledger_database_url:
        return settings.ledger_database_url
    return embedded_url(settings.data_dir)


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
    import adbc_driver_postgresql.dbapi as adbc  # noqa: PLC0415 - heavy; keeps the CLI's start fast
    # libpq honours connect_timeout in the URL; add it unless the user set one.
    if "connect_timeout" not in url:
        url = url + ("&" if "?" in url else "?") + f"connect_timeout={CONNECT_TIMEOUT_SECONDS}"
    try:
        return adbc.connect(url, autocommit=True)
    except Exception as exc:  # adbc raises OperationalError/ProgrammingError depending on the failure
        raise DatabaseUnavailable(f"cannot connect to the {what} at {redact(url)}: {exc}".strip()) from exc


def sqlalchemy_psycopg2(url: str) -> str:
    """``url`` with the SQLAlchemy scheme ``postgresql+psycopg2``, as dagster-postgres needs it.

    Under SQLAlchemy 2.1 a bare ``postgresql://`` picks psycopg 3 when it is installed,
    and dagster-postgres then fails on its first run event (``NOTIFY run_events, $1``).
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise DatabaseUnavailable(f"{redact(url)} is not a postgresql:// URL")
    return "postgresql+psycopg2://" + rest


def scalar(conn: psycopg.Connection, query, params=None):
    """The first column of the one row a statement returns (an aggregate, ``to_regclass``, a lock probe)."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise RuntimeError("the statement returned no row")
    return row[0]


def embedded_url(data_dir: Path, database: str = embedded.EMBEDDED_DATABASE) -> str:
    """Start (or reuse) the embedded PostgreSQL under ``data_dir`` and return a URL for ``database``, creating it
    if missing."""
    admin_url = embedded.start(data_dir)
    ensure_database(admin_url, database)
    return with_database(admin_url, database)


def ensure_database(server_url: str, database: str) -> None:
    """Create ``database`` on the server of ``server_url`` unless it exists (safe against a concurrent create)."""
    with connect(server_url, autocommit=True, what="database server") as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            return
        try:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(database)))
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            pass  # created meanwhile by another process
        except psycopg.errors.InsufficientPrivilege as exc:
            raise DatabaseUnavailable(
                f"cannot create the database {database!r} on {redact(server_url)} ({exc}): create it, or set"
                " DAGSTER_PG_URL to a database the Dagster instance may use"
            ) from exc


def dagster_url(settings: Settings) -> str:
    """The Dagster instance's PostgreSQL, as a ``postgresql+psycopg2://`` URL for ``dagster.yaml``.

    ``DAGSTER_PG_URL`` when set; else the ``dagster`` database of the embedded
    PostgreSQL when no database URL is configured; else a ``dagster`` database on
    the server of the snapshot index (created if missing).
    """
    if settings.dagster_database_url:
        return sqlalchemy_psycopg2(settings.dagster_database_url)
    if not settings.snapshot_database_url:
        return sqlalchemy_psycopg2(embedded_url(settings.data_dir, DAGSTER_DATABASE))
    ensure_database(settings.snapshot_database_url, DAGSTER_DATABASE)
    return sqlalchemy_psycopg2(with_database(settings.snapshot_database_url, DAGSTER_DATABASE))
