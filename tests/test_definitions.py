"""The Dagster UI for real: dagster-webserver on the project's workspace, then headless Chromium on it.

One webserver (on a free loopback port, against a Dagster instance on PostgreSQL
configured by the project's dagster.yaml) serves both tests. Partitions are
materialized by the CLI, a separate process writing to the same instance.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from snapshot_pipeline import calendar, db
from tests.helpers import stop
from tests.processes import (
    IN_CI,
    ROOT,
    dagster_ui_page,
    free_port,
    graphql,
    require_chromium,
    wait_for_server,
)

MATERIALIZED = ("2026-11-01", "2026-11-02")
START_DATE = "2026-10-25"


@pytest.fixture(scope="module")
def ui(adversarial_url, make_database, tmp_path_factory):
    """A running dagster-webserver on the project's workspace.yaml and dagster.yaml (PostgreSQL storage)."""
    tmp = tmp_path_factory.mktemp("ui")
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    shutil.copyfile(ROOT / "dagster.yaml", tmp / "dagster.yaml")  # SNAPSHOT_HOME's, as the CLI expects
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "SNAPSHOT_", "DAGSTER_"))}
    env.update({
        "LEDGER_DATABASE_URL": adversarial_url,
        "SNAPSHOT_DATABASE_URL": make_database(),
        "SNAPSHOT_STORAGE_URI": str(tmp / "store"),
        "SNAPSHOT_START_DATE": START_DATE,
        "SNAPSHOT_TIMEZONE": "UTC",
        "SNAPSHOT_HOME": str(tmp),
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": db.sqlalchemy_psycopg2(make_database()),
    })
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp / "webserver.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port),
             "-w", str(ROOT / "workspace.yaml")],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        info = wait_for_server(base, process, log)
        partitions = (calendar.last_closed_day("UTC") - dt.date.fromisoformat(START_DATE)).days + 1
        yield {"base": base, "env": env, "info": info, "tmp": tmp, "log": log, "partitions": partitions}
    finally:
        stop(process)


@pytest.fixture(scope="module")
def materialized(ui):
    """Two partitions of balance_snapshots, materialized by the CLI on the webserver's instance."""
    runs = []
    for day in MATERIALIZED:
        proc = subprocess.run([sys.executable, "-m", "snapshot_pipeline.cli", "snapshot", "--date", day,
                               "--batch-size", "500"], env=ui["env"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(proc.stdout))
    return runs


WORKSPACE_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
          ... on RepositoryLocation {
            repositories {
              name
              jobs { name }
              sensors { name sensorState { status } }
              assetNodes { assetKey { path } groupName isPartitioned }
            }
          }
        }
      }
    }
  }
}
"""

ASSET_QUERY = """
query Asset($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    __typename
    ... on AssetNode {
      partitionStats { numMaterialized numPartitions numFailed }
      assetPartitionStatuses {
        __typename
        ... on TimePartitionStatuses { ranges { status startKey endKey } }
      }
      assetMaterializations(limit: 10) {
        partition
        runId
        metadataEntries {
          label
          __typename
          ... on FloatMetadataEntry { floatValue }
          ... on IntMetadataEntry { intValue intRepr }
        }
      }
    }
  }
}
"""


def test_webserver_serves_the_workspace_and_the_materialized_partitions(ui, materialized):
    assert "dagster_webserver_version" in ui["info"]
    workspace = graphql(ui["base"], WORKSPACE_QUERY)["workspaceOrError"]
    assert workspace["__typename"] == "Workspace"
    (entry,) = workspace["locationEntries"]
    assert entry["name"] == "snapshot_pipeline" and entry["loadStatus"] == "LOADED"
    location = entry["locationOrLoadError"]
    assert location["__typename"] == "RepositoryLocation", location
    (repository,) = location["repositories"]
    assets = {"/".join(a["assetKey"]["path"]): a for a in repository["assetNodes"]}
    assert set(assets) >= {"balance_snapshots", "balance_movements", "ledger_currency_totals",
                           "month_end_balances", "reconciliation_report"}
    assert assets["balance_snapshots"]["isPartitioned"] and assets["month_end_balances"]["groupName"] == "reports"
    assert "balance_snapshots_job" in {j["name"] for j in repository["jobs"]}
    sensors = {s["name"]: s["sensorState"]["status"] for s in repository["sensors"]}
    assert sensors.get("reports_automation_sensor") == "RUNNING"

    node = graphql(ui["base"], ASSET_QUERY, {"path": ["balance_snapshots"]})["assetNodeOrError"]
    assert node["__typename"] == "AssetNode"
    assert node["partitionStats"]["numMaterialized"] == len(MATERIALIZED)
    assert node["partitionStats"]["numFailed"] == 0
    assert node["partitionStats"]["numPartitions"] == ui["partitions"]
    ranges = node["assetPartitionStatuses"]["ranges"]
    assert [(r["status"], r["startKey"], r["endKey"]) for r in ranges] == [
        ("MATERIALIZED", MATERIALIZED[0], MATERIALIZED[-1])]
    events = {e["partition"]: e for e in node["assetMaterializations"]}
    assert set(events) == set(MATERIALIZED)
    for run in materialized:
        event = events[run["snapshot_date"]]
        assert event["runId"] == run["run_id"]
        entries = {m["label"]: m for m in event["metadataEntries"]}
        assert entries["snapshots_per_second"]["__typename"] == "FloatMetadataEntry"
        assert entries["snapshots_per_second"]["floatValue"] == pytest.approx(run["snapshots_per_second"])
        assert entries["dagster/row_count"]["__typename"] == "IntMetadataEntry"
        assert int(entries["dagster/row_count"]["intRepr"]) == run["dagster/row_count"] > 0


def test_browser_shows_the_asset_page_with_partitions_and_metrics(ui, materialized):
    require_chromium()
    try:
        from playwright.sync_api import expect
    except ImportError:
        if IN_CI:
            raise
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    screenshot = ui["tmp"] / "balance_snapshots_asset.png"
    latest = materialized[-1]
    url = f"{ui['base']}/assets/balance_snapshots?view=partitions&partition={latest['snapshot_date']}"
    with dagster_ui_page(url) as page:
        # the partitions: the status counts of the partition list
        expect(page.get_by_text(f"Materialized ({len(MATERIALIZED)})").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text(f"Missing ({ui['partitions'] - len(MATERIALIZED)})").first).to_be_visible()
        expect(page.get_by_text(latest["snapshot_date"]).first).to_be_visible()
        # the metrics of the selected (latest) partition's materialization
        expect(page.get_by_text("snapshots_per_second").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("dagster/row_count").first).to_be_visible(timeout=60_000)
        page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    target = os.environ.get("SNAPSHOT_UI_SCREENSHOT_DIR")
    if target:  # refresh docs/ with: SNAPSHOT_UI_SCREENSHOT_DIR=docs pytest tests/test_definitions.py
        shutil.copyfile(screenshot, Path(target) / screenshot.name)
