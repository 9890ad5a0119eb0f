"""The Dagster instance the CLI runs on: its ``DAGSTER_HOME`` (with a ``dagster.yaml``) and its PostgreSQL.

Also the preflight every command that launches work runs first: databases reachable, storage writable.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from snapshot_pipeline import db
from snapshot_pipeline.parsing import check_storage_writable, libpq_url
from snapshot_pipeline.settings import Settings, dagster_home, export_dagster_environment

MANAGED_MARKER = "# Dagster instance settings for snapshot_pipeline"
# Used when SNAPSHOT_HOME has no dagster.yaml; the same instance as the project's dagster.yaml.
DEFAULT_DAGSTER_YAML = f"""{MANAGED_MARKER} (written into $DAGSTER_HOME by the CLI).
storage:
  postgres:
    postgres_url:
      env: DAGSTER_PG_URL
telemetry:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: 4
    tag_concurrency_limits:  # the runs of a gap-fill backfill go one at a time, oldest range first
      - key: snapshot_pipeline/trigger
        value: gap_fill
        limit: 1
run_queue:
  dequeue_interval_seconds: 1  # the daemon starts a queued run within ~1 s (default 5 s)
run_retries:
  enabled: false
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  max_runtime_seconds: 21600
  poll_interval_seconds: 60
"""
_OLD_DEFAULT_DAGSTER_YAML = "telemetry:\n  enabled: false\n"


class DagsterInstanceHome(NamedTuple):
    """Where the instance lives: its ``DAGSTER_HOME`` and its storage (a ``postgresql+psycopg2://`` URL)."""

    home: Path
    postgres_url: str


def prepare_dagster_home(settings: Settings) -> DagsterInstanceHome:
    """Point ``DAGSTER_HOME`` at a directory with a ``dagster.yaml`` and ``DAGSTER_PG_URL`` at its storage.

    The file is the project's ``dagster.yaml`` (or the built-in equivalent), copied
    when missing and refreshed when an earlier copy written by this CLI differs; a
    ``dagster.yaml`` you wrote yourself (without the marker line) is left alone.
    The instance's PostgreSQL is :func:`snapshot_pipeline.db.dagster_url`; both variables are set by
    :func:`snapshot_pipeline.settings.export_dagster_environment`.
    """
    check_dagster_database(settings)  # before any file is written
    home = dagster_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    _write_dagster_yaml(settings, home / "dagster.yaml")
    instance = DagsterInstanceHome(home, db.dagster_url(settings))
    export_dagster_environment(instance.home, instance.postgres_url)
    return instance


def _write_dagster_yaml(settings: Settings, target: Path) -> None:
    """Copy the project's ``dagster.yaml`` (or :data:`DEFAULT_DAGSTER_YAML`) to ``target`` if this CLI manages it."""
    project_yaml = settings.home / "dagster.yaml"
    if project_yaml.exists() and project_yaml.resolve() == target.resolve():
        return  # DAGSTER_HOME is the project directory itself
    wanted = project_yaml.read_text() if project_yaml.exists() else DEFAULT_DAGSTER_YAML
    current = target.read_text() if target.exists() else None
    managed = current is None or current.startswith(MANAGED_MARKER) or current == _OLD_DEFAULT_DAGSTER_YAML
    if managed and current != wanted:
        target.write_text(wanted)


def preflight(settings: Settings) -> None:
    """Fail fast, before launching a run or writing a file: storage not writable, a database unreachable."""
    db.connect(db.ledger_url(settings), what="ledger database").close()
    db.connect(db.snapshot_url(settings), what="snapshot index database").close()
    check_dagster_database(settings)
    check_storage_writable(settings.storage_uri)  # last: it creates the storage root


def check_dagster_database(settings: Settings) -> None:
    """``DAGSTER_PG_URL``, when set, must answer now: else SQLAlchemy retries for ~16 s and ends in a traceback.

    (When unset, the instance's database is derived from the index's server, which is checked by
    :func:`snapshot_pipeline.db.dagster_url` itself.)
    """
    if settings.dagster_database_url:
        db.connect(libpq_url(settings.dagster_database_url),
                   what="Dagster instance database (DAGSTER_PG_URL)").close()
