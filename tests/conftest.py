"""Shared fixtures: a real PostgreSQL, throwaway databases and stores, seeded ledgers.

The server is the one named by ``SNAPSHOT_TEST_DATABASE_URL`` (an admin URL, e.g.
``postgresql://postgres@127.0.0.1:5432/test``) or, when unset, an embedded
PostgreSQL started for the session in a temporary directory.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from snapshot_pipeline import db, embedded
from snapshot_pipeline.ledger import generator
from snapshot_pipeline.settings import Settings, load_settings
from tests.s3 import s3_endpoint, s3_storage  # noqa: F401 - the loopback S3 server's fixtures, for every test

ADVERSARIAL = generator.LedgerSpec(balances=1500, transactions=30_000, days=12, seed=11,
                                   start_date=dt.date(2026, 10, 25))


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory) -> Iterator[str]:
    url = os.environ.get("SNAPSHOT_TEST_DATABASE_URL")
    if url:
        yield url
        return
    # Not under pytest's basetemp: pytest keeps only its 3 newest basetemps, so another pytest session
    # started meanwhile on the machine would delete a running server's data directory.
    data_dir = Path(tempfile.mkdtemp(prefix="snapshot-pipeline-test-pg-"))
    try:
        yield db.embedded_url(data_dir, "postgres")
        embedded.stop(data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def make_database(pg_admin_url) -> Iterator[Callable[[], str]]:
    """Factory of empty throwaway databases, all dropped at the end of the session."""
    created: list[str] = []

    def make() -> str:
        name = f"sp_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return db.with_database(pg_admin_url, name)

    yield make
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        for name in created:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def seed(url: str, spec: generator.LedgerSpec = ADVERSARIAL) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        return generator.generate(conn, spec, progress=False)


def make_settings(url: str, storage: Path | str, timezone: str = "UTC", start: str = "2026-10-01",
                  index_url: str | None = None, home: Path | None = None) -> Settings:
    """Settings for a test: ``storage`` a directory or an ``s3://`` URI (then give ``home``)."""
    return load_settings({
        "LEDGER_DATABASE_URL": url,
        "SNAPSHOT_DATABASE_URL": index_url or url,
        "SNAPSHOT_STORAGE_URI": str(storage),
        "SNAPSHOT_TIMEZONE": timezone,
        "SNAPSHOT_START_DATE": start,
        "SNAPSHOT_HOME": str(home or Path(storage).parent),
    })


def store_resource_for(settings: Settings):
    """The code location's store resource on the ledger, index and storage of ``settings``."""
    from snapshot_pipeline.defs.common.resources import SnapshotStoreResource

    return SnapshotStoreResource(ledger_database_url=settings.ledger_database_url,
                                 snapshot_database_url=settings.snapshot_database_url,
                                 storage_uri=settings.storage_uri)


def definitions_for(settings: Settings):
    """The code location's definitions on ``settings``, with :func:`store_resource_for`'s resource."""
    from snapshot_pipeline.definitions import build_definitions

    return build_definitions(settings, store_resource_for(settings))


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path) -> str:
    """A storage URI: a local directory, or ``s3://<fresh bucket>/snapshots`` on the loopback server."""
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_storage")


@pytest.fixture
def settings(backend, fresh_ledger, make_database, tmp_path) -> Settings:
    """Settings on both backends (local disk, S3) over a fresh adversarial ledger and index of the test's own."""
    return make_settings(fresh_ledger, backend, index_url=make_database(), home=tmp_path)


@pytest.fixture(scope="session")
def adversarial_template(pg_admin_url, make_database) -> str:
    """The name of a database seeded once per session with the adversarial ledger, used as a template:
    ``CREATE DATABASE ... TEMPLATE`` copies it in a fraction of the time the generator takes."""
    url = make_database()
    seed(url)
    return psycopg.conninfo.conninfo_to_dict(url)["dbname"]


def clone_database(pg_admin_url: str, template: str, make_database) -> str:
    """A new throwaway database that starts as a copy of ``template`` (dropped with the others)."""
    url = make_database()
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    return url


@pytest.fixture(scope="module")
def adversarial_url(pg_admin_url, adversarial_template, make_database) -> str:
    """A seeded adversarial ledger shared by a module's read-only tests."""
    return clone_database(pg_admin_url, adversarial_template, make_database)


@pytest.fixture
def fresh_ledger(pg_admin_url, adversarial_template, make_database) -> str:
    """A seeded adversarial ledger of the test's own (tests that write to the journal)."""
    return clone_database(pg_admin_url, adversarial_template, make_database)
