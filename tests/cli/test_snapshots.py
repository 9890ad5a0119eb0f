"""The commands that make snapshots (``snapshot``, ``seed-ledger``, ``demo``) and ``--help``, as a real subprocess."""

from __future__ import annotations

import datetime as dt
import json
import os

import dagster as dg
import psycopg
import pytest

from snapshot_pipeline import db
from snapshot_pipeline.cli import snapshots
from snapshot_pipeline.settings import load_settings
from tests.conftest import ADVERSARIAL, make_settings
from tests.helpers import insert_transaction
from tests.processes import cli


def open_instance(env: dict[str, str], monkeypatch) -> dg.DagsterInstance:
    """The CLI's Dagster instance, on the PostgreSQL the CLI derived for it."""
    url = db.dagster_url(load_settings(env))
    assert url.startswith("postgresql+psycopg2://") and url.split("?")[0].endswith("/dagster")
    monkeypatch.setenv("DAGSTER_PG_URL", url)
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    return instance


@pytest.fixture
def cli_env(adversarial_url, make_database, tmp_path):
    return {
        "LEDGER_DATABASE_URL": adversarial_url,
        "SNAPSHOT_DATABASE_URL": make_database(),
        "SNAPSHOT_STORAGE_URI": str(tmp_path / "store"),
        "SNAPSHOT_START_DATE": "2026-10-01",
        "SNAPSHOT_HOME": str(tmp_path),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }


def test_snapshot_command_runs_through_dagster_and_prints_json(cli_env, tmp_path, monkeypatch):
    """On a database server: the Dagster instance lives in a `dagster` database on the index's server."""
    proc = cli("snapshot", "--date", "2026-11-02", "--batch-size", "300", env=cli_env)
    out = json.loads(proc.stdout)
    assert out["snapshot_date"] == "2026-11-02" and out["batch_size"] == 300
    for key in ("dagster/row_count", "balances_changed", "index_rows_written", "duration_ms",
                "snapshots_per_second", "bytes_written", "path", "cutoff", "watermark", "run_id"):
        assert key in out
    assert os.path.exists(out["path"])
    assert "postgres_url" in (tmp_path / "dagster_home" / "dagster.yaml").read_text()
    with open_instance(cli_env, monkeypatch) as instance:
        record = instance.get_run_record_by_id(out["run_id"])
        assert record.dagster_run.job_name == "balance_snapshots_job"
        assert record.dagster_run.tags["dagster/partition"] == "2026-11-02"


def _sessions(url: str) -> int:
    """Connections made to ``url``'s database so far (this one included: PostgreSQL counts a session as it
    starts)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]


def test_a_cli_run_keeps_its_dagster_connections_instead_of_one_per_event(cli_env, make_database):
    """dagster-postgres connects once per stored event (~130 connections for this run, 0.5-0.8 s of the
    command); the CLI keeps each storage's connection open for the run instead."""
    dagster_db = make_database()
    env = {**cli_env, "DAGSTER_PG_URL": db.sqlalchemy_psycopg2(dagster_db)}
    cli("doctor", env=env)  # the instance's tables, created once
    before = _sessions(dagster_db)
    out = json.loads(cli("snapshot", "--date", "2026-11-02", env=env).stdout)
    made = _sessions(dagster_db) - before - 1  # the count's own session
    assert out["checks"] and all(v == "passed" for v in out["checks"].values()), out["checks"]
    assert 0 < made <= 40, f"{made} connections to the Dagster instance's database for one run"


def test_snapshot_command_merges_shards_on_request(cli_env, adversarial_url):
    """`--shards 3`: three part files of one partition, exactly the journal; `--shards 0` is refused."""
    from snapshot_pipeline import calendar
    from snapshot_pipeline.settings import load_settings
    from snapshot_pipeline.store import catalog
    from tests.oracle import expected_snapshot, snapshot_values

    out = json.loads(cli("snapshot", "--date", "2026-11-02", "--shards", "3", env=cli_env).stdout)
    settings = load_settings(cli_env)
    assert len(catalog.paths(settings, dt.date(2026, 11, 2))) == 3
    assert snapshot_values(catalog.read_partition(settings, dt.date(2026, 11, 2))) == expected_snapshot(
        adversarial_url, calendar.cutoff(dt.date(2026, 11, 2), settings.timezone))
    assert out["dagster/row_count"] == catalog.read_partition(settings, dt.date(2026, 11, 2)).num_rows
    proc = cli("snapshot", "--date", "2026-11-02", "--shards", "0", env=cli_env, check=False)
    assert proc.returncode == 2 and "--shards" in proc.stderr and proc.stdout == ""


def test_cli_errors_go_to_stderr_with_nonzero_exit(cli_env):
    proc = cli("snapshot", "--date", "2026-11-02", "--batch-size", "0", env=cli_env, check=False)
    assert proc.returncode == 2 and "from 1 to 1,000,000" in proc.stderr and proc.stdout == ""
    proc = cli("snapshot", "--date", "2026-13-40", env=cli_env, check=False)
    assert proc.returncode == 2 and "YYYY-MM-DD" in proc.stderr
    proc = cli("snapshot", "--date", "2025-01-01", env=cli_env, check=False)
    assert proc.returncode == 1 and "not a partition" in proc.stderr and "(SNAPSHOT_START_DATE)" in proc.stderr
    bad = {**cli_env, "LEDGER_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none",
           "SNAPSHOT_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}
    proc = cli("snapshot", "--date", "2026-11-02", env=bad, check=False)
    assert proc.returncode == 1 and "cannot connect to the ledger database" in proc.stderr
    proc = cli("snapshot", "--date", "2026-11-02", env={**cli_env, "SNAPSHOT_TIMEZONE": "Mars/Olympus"},
               check=False)
    assert proc.returncode == 2 and "not a known IANA time zone" in proc.stderr  # bad setting: exit 2


def test_seed_ledger_is_deterministic_and_refuses_to_overwrite(make_database, tmp_path):
    urls = [make_database(), make_database()]
    args = ["seed-ledger", "--balances", "300", "--transactions", "4000", "--days", "5", "--seed", "9",
            "--start-date", "2026-10-20", "--no-progress"]
    for url in urls:
        out = json.loads(cli(*args, env={"LEDGER_DATABASE_URL": url}).stdout)
        assert out["balances"] == 300 and out["transactions"] >= 4000
    digests = []
    for url in urls:
        with psycopg.connect(url) as conn:
            digests.append(conn.execute(
                "SELECT md5(string_agg(concat_ws('|', transaction_id, source, destination, precise_amount, status,"
                " created_at, effective_date, parent_transaction), ',' ORDER BY id)) FROM blnk.transactions"
            ).fetchone()[0])
    assert digests[0] == digests[1]
    proc = cli(*args, env={"LEDGER_DATABASE_URL": urls[0]}, check=False)
    assert proc.returncode == 1 and "--replace" in proc.stderr
    cli(*args, "--replace", env={"LEDGER_DATABASE_URL": urls[0]})


def test_help_lists_commands():
    proc = cli("--help", env={})
    for command in ("demo", "seed-ledger", "snapshot", "ui"):
        assert command in proc.stdout
    assert ADVERSARIAL.balances > 0


def test_demo_on_the_embedded_default_is_idempotent(tmp_path, monkeypatch):
    """No database URL: the CLI starts its own PostgreSQL in .data/, seeds, snapshots; a rerun changes nothing.

    The Dagster instance's runs are in the `dagster` database of that embedded PostgreSQL.
    """
    env = {"SNAPSHOT_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster_home"),
           "SNAPSHOT_START_DATE": "2026-01-01"}
    try:
        args = ["demo", "--days", "2", "--balances", "400", "--transactions", "3000", "--seed-days", "5"]
        first = cli(*args, env=env)
        assert first.stdout.count("materialized") == 2, first.stdout
        files = sorted((tmp_path / ".data" / "snapshots" / "balance_snapshots").rglob("*.parquet"))
        assert len(files) == 2
        stamps = [f.stat().st_mtime_ns for f in files]
        second = cli(*args, env=env)
        assert second.stdout.count("up to date") == 2, second.stdout
        assert [f.stat().st_mtime_ns for f in files] == stamps
        with open_instance(env, monkeypatch) as instance:
            runs = instance.get_runs(dg.RunsFilter(job_name="balance_snapshots_job"))
            assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
            assert "host=" in os.environ["DAGSTER_PG_URL"]  # the embedded server's socket directory
    finally:
        stopped = cli("embedded-db", "stop", env=env, check=False)
    assert json.loads(stopped.stdout) == {"stopped": True}


def test_the_demos_example_balance_exists_at_every_hints_instant(fresh_ledger, tmp_path):
    """The hints show a balance that exists at their instant and on every day of their history, even when the
    latest transaction comes from a balance created at the end of the last day."""
    settings = make_settings(fresh_ledger, tmp_path / "snapshots", start="2026-10-25")
    day = dt.date(2026, 11, 3)
    with psycopg.connect(fresh_ledger, autocommit=True) as conn:
        conn.execute("INSERT INTO blnk.balances (balance_id, currency, ledger_id, created_at)"
                     " VALUES ('bln_test_created_last', 'USD', 'ldg_customers', '2026-11-03 23:50')")
        other = conn.execute("SELECT balance_id FROM blnk.balances ORDER BY id LIMIT 1").fetchone()[0]
    insert_transaction(fresh_ledger, "bln_test_created_last", other, 5, created_at=dt.datetime(2026, 11, 3, 23, 55))
    chosen = snapshots._example_balance(settings, day)
    with psycopg.connect(fresh_ledger) as conn:
        created = conn.execute("SELECT created_at FROM blnk.balances WHERE balance_id = %s", (chosen,)).fetchone()[0]
    assert created < dt.datetime(2026, 10, 29)  # before the end of the history's first day, Oct 28
