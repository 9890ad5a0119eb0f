"""Gap filling as one Dagster backfill of ranged runs: the real daemon, and a failure in the middle of a range.

The first test runs `dagster-daemon` on the project's workspace and dagster.yaml (PostgreSQL storage):
only the gap sensor is started; it must request the holes as one backfill, which the backfill
daemon runs as ranged runs (the asset's backfill policy), each day exact against the SQL oracle,
balanced per currency, with its own materialization and its own passing check evaluations.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from snapshot_pipeline import calendar, db, snapshot
from snapshot_pipeline.defs.common.dagster_internals import BulkActionStatus
from snapshot_pipeline.defs.snapshots.assets import ASSET_NAME, DAYS_PER_BACKFILL_RUN
from snapshot_pipeline.defs.snapshots.gaps import last_due_day
from snapshot_pipeline.defs.snapshots.jobs import SNAPSHOT_JOB
from snapshot_pipeline.defs.snapshots.sensors import GAP_SENSOR
from snapshot_pipeline.store import catalog
from tests.conftest import definitions_for, make_settings
from tests.helpers import assert_balanced, insert_transaction, stop, two_balances
from tests.oracle import expected_snapshot, snapshot_values

ROOT = Path(__file__).resolve().parents[3]
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
WAIT_SECONDS = 420  # a bound on waiting for the daemon, not an assertion on speed
IN_FILE_CHECKS = {"row_count_matches_ledger", "balance_equals_credit_minus_debit", "double_entry_per_currency",
                  "parquet_matches_manifest", "sampled_recomputation_matches", "live_balances_match"}


def published_days(index_url: str) -> set[str]:
    with psycopg.connect(index_url) as conn:
        if conn.execute("SELECT to_regclass('snapshot_index.partitions')").fetchone()[0] is None:
            return set()
        return {d.isoformat() for (d,) in conn.execute("SELECT snapshot_date FROM snapshot_index.partitions")}


def check_evaluations(instance: dg.DagsterInstance, run_id: str) -> dict[tuple[str, str], bool]:
    """(check name, partition) -> passed, from the run's event log."""
    found = {}
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = record.dagster_event.event_specific_data
        found[(evaluation.check_name, evaluation.partition)] = evaluation.passed
    return found


def materialized_rows(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    """partition -> its materialization's dagster/row_count, from the run's event log."""
    rows = {}
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = record.dagster_event.event_specific_data.materialization
        rows[materialization.partition] = materialization.metadata["dagster/row_count"].value
    return rows


def test_the_gap_sensor_fills_holes_as_one_backfill_of_ranged_runs(adversarial_url, make_database, tmp_path,
                                                                 monkeypatch):
    last = last_due_day(make_settings(adversarial_url, tmp_path / "probe"), dt.datetime.now(dt.UTC))
    first = last - dt.timedelta(days=15)  # 16 days: one published in the middle, two ranges of holes
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    shutil.copyfile(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    index_url, instance_url = make_database(), db.sqlalchemy_psycopg2(make_database())
    settings = make_settings(adversarial_url, tmp_path / "store", start=first.isoformat(), index_url=index_url)
    published_day = first + dt.timedelta(days=5)
    snapshot.take_snapshot(settings, published_day, 1000)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "SNAPSHOT_", "DAGSTER_"))}
    env.update({"LEDGER_DATABASE_URL": adversarial_url, "SNAPSHOT_DATABASE_URL": index_url,
                "SNAPSHOT_STORAGE_URI": settings.storage_uri, "SNAPSHOT_START_DATE": first.isoformat(),
                "SNAPSHOT_TIMEZONE": "UTC", "SNAPSHOT_HOME": str(tmp_path), "DAGSTER_HOME": str(home),
                "DAGSTER_PG_URL": instance_url, "SNAPSHOT_AUTOMATION_DEFAULT_STATUS": "STOPPED"})
    workspace = ["-w", str(ROOT / "workspace.yaml")]
    started = subprocess.run([sys.executable, "-m", "dagster", "sensor", "start", GAP_SENSOR, *workspace],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr[-3000:]
    log = tmp_path / "daemon.log"
    with open(log, "w") as out:
        daemon = subprocess.Popen([sys.executable, "-m", "dagster._daemon", "run", *workspace], cwd=ROOT, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    monkeypatch.setenv("DAGSTER_PG_URL", instance_url)
    wanted = {d.isoformat() for d in calendar.days(first, last)}
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            deadline = time.monotonic() + WAIT_SECONDS
            while True:
                backfills = instance.get_backfills()
                done = backfills and all(b.status != BulkActionStatus.REQUESTED for b in backfills)
                if done and published_days(index_url) >= wanted:
                    break
                if daemon.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the gap was not filled: published {sorted(published_days(index_url))},"
                                f" backfills {[(b.backfill_id, b.status) for b in backfills]}\n"
                                f"{log.read_text()[-4000:]}")
                time.sleep(2)
            assert len(backfills) == 1, [b.backfill_id for b in backfills]  # one backfill for the whole gap
            backfill = backfills[0]
            assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS
            assert backfill.tags["snapshot_pipeline/trigger"] == "gap_fill"
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
            ranges = sorted((r.tags[RANGE_START], r.tags[RANGE_END]) for r in runs)
            holes = [(first, published_day - dt.timedelta(days=1)), (published_day + dt.timedelta(days=1), last)]
            assert ranges == [(a.isoformat(), b.isoformat()) for a, b in holes]  # one run per range of days
            assert all(len(calendar.days(*map(dt.date.fromisoformat, r))) <= DAYS_PER_BACKFILL_RUN for r in ranges)
            assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
            rows, checks = {}, {}
            for run in runs:
                rows.update(materialized_rows(instance, run.run_id))
                checks.update(check_evaluations(instance, run.run_id))
            # what the UI's per-partition check status reads: each day's evaluation is current (it checked
            # that day's latest materialization) and succeeded
            check_keys = [dg.AssetCheckKey(dg.AssetKey(ASSET_NAME), name) for name in sorted(IN_FILE_CHECKS)]
            status = {(info.check_key.name, info.partition_key): (
                          info.latest_execution_status.value,
                          info.latest_target_materialization_storage_id == info.latest_materialization_storage_id)
                      for info in instance.event_log_storage.get_asset_check_partition_info(check_keys)}
    finally:
        stop(daemon)
    filled = sorted(wanted - {published_day.isoformat()})
    assert sorted(rows) == filled  # each day its own materialization...
    for key in filled:
        date = dt.date.fromisoformat(key)
        table = catalog.read_partition(settings, date)
        assert rows[key] == table.num_rows  # ...with its own metadata
        assert snapshot_values(table) == expected_snapshot(adversarial_url, calendar.cutoff(date, "UTC")), key
        assert_balanced(table, date)
        for name in IN_FILE_CHECKS:  # and its own check evaluations, all passing
            assert checks.get((name, key)) is True, (name, key, checks.get((name, key)))
            assert status.get((name, key)) == ("SUCCEEDED", True), (name, key, status.get((name, key)))


def test_a_failure_in_the_middle_of_a_range_keeps_the_days_before_it(fresh_ledger, make_database, tmp_path):
    """Day 2 of a 3-day ranged run cannot be represented (an amount of 10^70): day 1 is committed, exact and
    materialized in Dagster; days 2 and 3 are neither published nor materialized; the run fails."""
    settings = make_settings(fresh_ledger, tmp_path / "store", start="2026-10-26", index_url=make_database())
    days = ["2026-11-01", "2026-11-02", "2026-11-03"]
    source, destination = two_balances(fresh_ledger)
    insert_transaction(fresh_ledger, source, destination, 10**70, created_at=dt.datetime(2026, 11, 2, 12))
    job = definitions_for(settings).resolve_job_def(SNAPSHOT_JOB)
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False,
                                        tags={RANGE_START: days[0], RANGE_END: days[-1]})
        assert not result.success
        materialized = [m.partition for m in result.asset_materializations_for_node(ASSET_NAME)]
        assert materialized == [days[0]]
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert source in str(failure.event_specific_data.error) or destination in str(
            failure.event_specific_data.error)
    assert published_days(settings.snapshot_database_url) == {days[0]}
    assert [catalog.exists(settings, dt.date.fromisoformat(d)) for d in days] == [True, False, False]
    table = catalog.read_partition(settings, dt.date(2026, 11, 1))
    assert snapshot_values(table) == expected_snapshot(fresh_ledger, calendar.cutoff(dt.date(2026, 11, 1), "UTC"))
