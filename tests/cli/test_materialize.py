"""The CLI's per-day progress bar, drawn on a real terminal (a pseudo-terminal)."""

from __future__ import annotations

import datetime as dt
import os
import select
import sys
import time

import psycopg
import pytest
from psycopg import sql

from snapshot_pipeline.cli.common import CliError
from snapshot_pipeline.cli.instance import prepare_dagster_home
from snapshot_pipeline.cli.materialize import DayProgress, _check_partition, _storage_connections_kept
from snapshot_pipeline.settings import load_settings


def _drawn(master: int) -> str:
    """Everything written to the terminal so far."""
    out = b""
    while select.select([master], [], [], 0.2)[0]:
        out += os.read(master, 65536)
    return out.decode()


def test_the_bar_draws_the_runs_final_report_however_soon_it_follows_the_last(monkeypatch):
    """A short day sends its first progress report and its final one within tqdm's minimum interval (0.2 s):
    the bar still shows 100% before it is replaced by the day's line."""
    master, secondary = os.openpty()
    terminal = os.fdopen(secondary, "w")
    monkeypatch.setattr(sys, "stderr", terminal)
    try:
        bar = DayProgress("2026-12-05", None)
        bar.update_to(1000, 18836)  # the run's estimate
        bar.update_to(19374, 19374)  # its final report: the exact row count
        drawn = _drawn(master)
        bar.close()
    finally:
        terminal.close()
        os.close(master)
    assert "100%" in drawn and "19374/19374" in drawn


def test_a_date_before_the_partitions_says_where_their_first_day_came_from(tmp_path):
    settings = load_settings({"SNAPSHOT_HOME": str(tmp_path)})  # no SNAPSHOT_START_DATE, no seeded ledger
    assert settings.start_date_source == "default"
    with pytest.raises(CliError, match=r"\(the default; set SNAPSHOT_START_DATE\)"):
        _check_partition(settings, settings.start_date - dt.timedelta(days=1))
    settings = load_settings({"SNAPSHOT_HOME": str(tmp_path), "SNAPSHOT_START_DATE": "2026-10-01"})
    with pytest.raises(CliError, match=r"\(SNAPSHOT_START_DATE\)"):
        _check_partition(settings, dt.date(2026, 9, 30))


def _connections(url: str, database: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                            (database,)).fetchone()[0]


def test_the_runs_kept_connections_keep_the_databases_timeout_and_are_closed_after(make_database, tmp_path,
                                                                                 monkeypatch):
    """The kept connections get the statement_timeout the instance's database gives (not none), and none of
    them is left open afterwards (``demo`` opens an instance a day in one process)."""
    import dagster as dg

    url = make_database()
    with psycopg.connect(url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute(sql.SQL("ALTER DATABASE {} SET statement_timeout = '7s'").format(sql.Identifier(name)))
    for variable in ("DAGSTER_HOME", "DAGSTER_PG_URL"):  # restored after the test
        monkeypatch.setenv(variable, "")
    prepare_dagster_home(load_settings({"LEDGER_DATABASE_URL": url, "SNAPSHOT_DATABASE_URL": url,
                                        "SNAPSHOT_HOME": str(tmp_path), "DAGSTER_PG_URL": url}))
    with dg.DagsterInstance.get() as instance:
        with _storage_connections_kept(instance):
            assert instance.get_runs() == []
            engine = instance.event_log_storage._engine  # the pool the run's events go through
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "7s"
            assert _connections(url, name) >= 1
        deadline = time.monotonic() + 10
        while _connections(url, name) and time.monotonic() < deadline:  # a backend ends just after its client
            time.sleep(0.1)
        assert _connections(url, name) == 0
