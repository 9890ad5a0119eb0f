"""What a new user sees in the Dagster UI after `make demo`: no queued or failed runs, checks passing, plots.

The demo runs as a subprocess (the CLI, as `make demo` does) on a small ledger ending yesterday, then a
webserver on the project's workspace and dagster.yaml serves the same instance, read through GraphQL
and, when Debian's chromium is installed, in a headless browser.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys

import psycopg
import pytest

from snapshot_pipeline import calendar, db
from snapshot_pipeline.ledger import generator
from tests.helpers import stop
from tests.processes import (
    ROOT,
    dagster_ui_page,
    free_port,
    graphql,
    require_chromium,
    wait_for_server,
)

DEMO_DAYS = 3
CHECKS = {"row_count_matches_ledger", "balance_equals_credit_minus_debit", "double_entry_per_currency",
          "parquet_matches_manifest", "sampled_recomputation_matches", "live_balances_match"}

RUNS_QUERY = """
query { runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED, FAILURE, CANCELED]}) {
  __typename ... on Runs { results { runId status jobName } } } }
"""
CHECKS_QUERY = """
query { assetNodeOrError(assetKey: {path: ["balance_snapshots"]}) { __typename ... on AssetNode {
  assetChecksOrError { __typename ... on AssetChecks { checks { name description
    executionForLatestMaterialization { status partition } } } } } } }
"""


@pytest.fixture(scope="module")
def demo(make_database, tmp_path_factory):
    """`snapshot-pipeline demo --days 3` on a small ledger (SNAPSHOT_START_DATE unset: the project default)."""
    tmp = tmp_path_factory.mktemp("demo")
    ledger = make_database()
    last = calendar.last_closed_day("UTC")
    with psycopg.connect(ledger, autocommit=True) as conn:
        generator.generate(conn, generator.LedgerSpec(300, 3000, 6, 5, last - dt.timedelta(days=5)), progress=False)
    home = tmp / "dagster_home"
    shutil.copyfile(ROOT / "dagster.yaml", tmp / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "SNAPSHOT_", "DAGSTER_"))}
    env.update({"LEDGER_DATABASE_URL": ledger, "SNAPSHOT_DATABASE_URL": make_database(),
                "SNAPSHOT_STORAGE_URI": str(tmp / "store"), "SNAPSHOT_HOME": str(tmp), "DAGSTER_HOME": str(home),
                "SNAPSHOT_AUTOMATION_DEFAULT_STATUS": "STOPPED",
                "DAGSTER_PG_URL": db.sqlalchemy_psycopg2(make_database())})  # an instance of this test's own
    proc = subprocess.run([sys.executable, "-m", "snapshot_pipeline.cli", "demo", "--days", str(DEMO_DAYS)],
                          env=env, cwd=tmp, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"env": env, "tmp": tmp, "stdout": proc.stdout, "stderr": proc.stderr}


@pytest.fixture(scope="module")
def webserver(demo):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = demo["tmp"] / "webserver.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port),
                                    "-w", str(ROOT / "workspace.yaml")],
                                   cwd=ROOT, env=demo["env"], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_server(base, process, log)
        yield base
    finally:
        stop(process)


def test_demo_output_is_quiet_one_line_per_day_and_hints_that_work(demo):
    lines = demo["stdout"].splitlines()
    days = [line for line in lines if "materialized" in line]
    assert len(days) == DEMO_DAYS and all(f"{len(CHECKS)}/{len(CHECKS)}" in line for line in days), demo["stdout"]
    assert "Warning" not in demo["stderr"] and "INFO" not in demo["stderr"], demo["stderr"][-3000:]
    hint = next(line for line in lines if " snapshot --date " in line).split()[0]
    assert os.access(hint, os.X_OK) or os.access(os.path.join(demo["tmp"], hint), os.X_OK), hint


def test_ui_after_the_demo_shows_no_queued_or_failed_runs_and_passing_checks(webserver):
    runs = graphql(webserver, RUNS_QUERY)["runsOrError"]["results"]
    assert runs == []
    node = graphql(webserver, CHECKS_QUERY)["assetNodeOrError"]
    checks = {c["name"]: c for c in node["assetChecksOrError"]["checks"]}
    assert set(checks) == CHECKS
    for name, check in checks.items():
        assert check["description"], name
        assert check["executionForLatestMaterialization"]["status"] == "SUCCEEDED", (name, check)
        assert check["executionForLatestMaterialization"]["partition"] == calendar.last_closed_day("UTC").isoformat()


def test_browser_shows_passing_checks_and_their_plots(webserver):
    require_chromium()
    from playwright.sync_api import expect

    with dagster_ui_page(f"{webserver}/assets/balance_snapshots?view=checks") as page:
        for name in CHECKS:  # names are middle-truncated: a hidden measuring copy holds the full text
            expect(page.get_by_text(name).first).to_be_attached(timeout=60_000)
        expect(page.get_by_text("Passed").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Failed", exact=True)).to_have_count(0)
        page.screenshot(path=str(checks_shot := os.path.join(ROOT, ".pytest_cache", "checks.png")), full_page=True)
        # the check's measures plotted over its executions
        expect(page.get_by_text("Plots", exact=True).first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("rows_checked").first).to_be_visible()
        expect(page.locator("canvas").first).to_be_attached(timeout=60_000)
        page.screenshot(path=str(webserver_shot := os.path.join(ROOT, ".pytest_cache", "plots.png")),
                        full_page=True)
    assert os.path.getsize(webserver_shot) > 10_000 and os.path.getsize(checks_shot) > 10_000


AUTOMATION_QUERY = """
query { workspaceOrError { ... on Workspace { locationEntries { locationOrLoadError {
  ... on RepositoryLocation { repositories {
    schedules { name description metadataEntries { label ... on TextMetadataEntry { text } } }
    sensors { name description } } } } } } } }
"""


def test_every_schedule_and_sensor_has_a_description_and_schedules_name_their_partitions(webserver):
    (entry,) = graphql(webserver, AUTOMATION_QUERY)["workspaceOrError"]["locationEntries"]
    (repository,) = entry["locationOrLoadError"]["repositories"]
    for item in repository["schedules"] + repository["sensors"]:
        assert item["description"], item["name"]
    # Dagster 1.13 always shows "Partition set: None" (its schedule snapshot has partition_set_name=None),
    # so the partitioned schedules say which partitions they target in their metadata
    metadata = {s["name"]: {m["label"]: m.get("text") for m in s["metadataEntries"]} for s in repository["schedules"]}
    for name in ("daily_snapshot_schedule", "month_end_close_schedule", "snapshot_audit_schedule"):
        assert "daily partitions from" in metadata[name]["partition_set"], name
