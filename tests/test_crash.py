"""Real crashes: `kill -9` of `snapshot-pipeline snapshot` at each phase of a materialization.

Each test publishes a partition, changes the ledger (so the re-materialization writes a different
file), starts the CLI with a pause point, waits for its marker, sends SIGKILL, and checks:

- what a reader sees of the partition (through the manifest, as every reader of the package and
  the query engine resolve files) is exactly the files the manifest names, whole; in the `visible`
  phase, where the kill falls between the move of the new file to its run-unique name and the
  index COMMIT, the new file is an orphan no manifest names, removed by the crash_recovery_sensor
  tick; after any recovery the partition's directory holds only the manifest's files, so a
  dataset reader globbing the directory sees the same;
- the killed run is marked FAILURE in the Dagster instance, with the reason, by the next holder of
  the partition's lock (the next CLI run) or the sensor tick, nobody acting by hand;
- after the next run nothing is left in the store's staging or publish areas nor in temp.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psycopg
import pyarrow.dataset as ds
import pytest

from snapshot_pipeline.store import publish
from tests.conftest import seed
from tests.helpers import insert_transaction, two_balances
from tests.test_cli import cli, open_instance

DATE = dt.date(2026, 11, 2)


@pytest.fixture(scope="module")
def crash_ledger(make_database) -> str:
    """A seeded ledger of this module's own (tests add backdated rows to it)."""
    url = make_database()
    seed(url)
    return url


@pytest.fixture
def env(crash_ledger, make_database, tmp_path) -> dict[str, str]:
    return {
        "LEDGER_DATABASE_URL": crash_ledger,
        "SNAPSHOT_DATABASE_URL": make_database(),
        "SNAPSHOT_STORAGE_URI": str(tmp_path / "store"),
        "SNAPSHOT_START_DATE": "2026-10-01",
        "SNAPSHOT_HOME": str(tmp_path),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }


def backdate_a_transfer(url: str) -> None:
    """A new APPLIED leg dated inside DATE: the next materialization of DATE writes different values."""
    source, destination = two_balances(url)
    moment = dt.datetime.combine(DATE, dt.time(12, 0))
    insert_transaction(url, source, destination, 1234, created_at=moment, effective_date=moment)


def start_paused(env: dict[str, str], phase: str, marker: Path) -> subprocess.Popen:
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("LEDGER_", "SNAPSHOT_")) and k != "DAGSTER_HOME"}
    full_env.update(env, SNAPSHOT_PAUSE_AT=phase, SNAPSHOT_PAUSE_MARKER=str(marker))
    return subprocess.Popen([sys.executable, "-m", "snapshot_pipeline.cli", "snapshot", "--date", DATE.isoformat(),
                             "--batch-size", "200"], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_at(env: dict[str, str], phase: str, tmp_path: Path) -> None:
    """Run the snapshot until it pauses at ``phase``, then SIGKILL it (a real kill -9)."""
    marker = tmp_path / f"paused-{phase}"
    proc = start_paused(env, phase, marker)
    deadline = time.monotonic() + 240
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before pausing at {phase}: {proc.stderr.read().decode()[-3000:]}")
        assert time.monotonic() < deadline, f"no pause at {phase}"
        time.sleep(0.1)
    pid = int(marker.read_text())
    assert pid == proc.pid
    os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.stdout.close()
    proc.stderr.close()


def manifest_checksum(env: dict[str, str]) -> tuple[str, int] | None:
    with psycopg.connect(env["SNAPSHOT_DATABASE_URL"]) as conn:
        row = conn.execute("SELECT checksum, row_count FROM snapshot_index.partitions WHERE snapshot_date = %s",
                           (DATE,)).fetchone()
    return (row[0], int(row[1])) if row else None


def _settings(env: dict[str, str]):
    from snapshot_pipeline.settings import load_settings

    return load_settings(env)


def reader_view(env: dict[str, str]) -> tuple[str, int] | None:
    """What a reader finds for DATE through the manifest: (partition sha256 of its files, rows read)."""
    from snapshot_pipeline.store import parquet as store
    from snapshot_pipeline.store import published

    settings = _settings(env)
    paths = published.paths(settings, DATE)
    if paths is None:
        return None
    fs, _ = store.resolve(settings.storage_uri)
    return store.files_checksum(fs, paths)[1], published.read_partition(settings, DATE).num_rows


def directory_view(env: dict[str, str]) -> tuple[str, int] | None:
    """What a dataset reader globbing the directory finds for DATE (fails if it holds more than one run)."""
    root = Path(env["SNAPSHOT_STORAGE_URI"]) / "balance_snapshots"
    files = sorted((root / f"snapshot_date={DATE.isoformat()}").glob("*"))
    if not files:
        return None
    assert len(files) == 1, files
    dataset = ds.dataset(str(root), format="parquet", partitioning="hive")
    rows = dataset.to_table(filter=ds.field("snapshot_date") == DATE.isoformat()).num_rows
    return hashlib.sha256(files[0].read_bytes()).hexdigest(), rows


def part_files(env: dict[str, str]) -> list[str]:
    root = Path(env["SNAPSHOT_STORAGE_URI"]) / "balance_snapshots" / f"snapshot_date={DATE.isoformat()}"
    return sorted(p.name for p in root.glob("*"))


def leftovers(env: dict[str, str], work_dirs: list[str]) -> list[str]:
    store = Path(env["SNAPSHOT_STORAGE_URI"])
    found = [str(p) for d in (publish.STAGING_DIR, publish.CONTROL_DIR) for p in (store / d).glob("*")]
    return found + [d for d in work_dirs if os.path.exists(d)]


def holder_record(env: dict[str, str]) -> dict:
    path = Path(publish.holder_path(env["SNAPSHOT_STORAGE_URI"], DATE))
    return json.loads(path.read_text())


def run_status(env: dict[str, str], run_id: str, monkeypatch) -> tuple[dg.DagsterRunStatus, str | None]:
    with open_instance(env, monkeypatch) as instance:
        status = instance.get_run_by_id(run_id).status
        failures = [r.event_log_entry.dagster_event.message
                    for r in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records]
    return status, (failures[-1] if failures else None)


@pytest.mark.parametrize("phase", ["read", "staged", "committed"])
def test_kill_then_next_run_reports_and_cleans(env, tmp_path, monkeypatch, phase):
    """Kill at a phase where the directory always matches the manifest; the next CLI run cleans up."""
    cli("snapshot", "--date", DATE.isoformat(), env=env)
    before = manifest_checksum(env)
    backdate_a_transfer(env["LEDGER_DATABASE_URL"])

    kill_at(env, phase, tmp_path)
    holder = holder_record(env)
    assert reader_view(env) == manifest_checksum(env)
    if phase == "committed":
        assert manifest_checksum(env) != before  # the commit point passed: the new file is the partition
    else:
        assert manifest_checksum(env) == before  # nothing published: readers still see the old partition
    assert run_status(env, holder["run_id"], monkeypatch)[0] == dg.DagsterRunStatus.STARTED
    assert leftovers(env, [holder["work_dir"]])  # the dead run left staging, records and its work dir

    out = json.loads(cli("snapshot", "--date", DATE.isoformat(), env=env).stdout)
    status, message = run_status(env, holder["run_id"], monkeypatch)
    assert status == dg.DagsterRunStatus.FAILURE
    assert "died without finishing" in message and DATE.isoformat() in message
    assert run_status(env, out["run_id"], monkeypatch)[0] == dg.DagsterRunStatus.SUCCESS
    assert reader_view(env) == manifest_checksum(env) == directory_view(env)
    assert leftovers(env, [holder["work_dir"]]) == []


def test_kill_between_visible_file_and_commit_is_rolled_back_by_the_sensor_tick(env, tmp_path, monkeypatch):
    """The one window where the directory runs ahead of the manifest: resolved without anyone acting."""
    from snapshot_pipeline.definitions import build_definitions
    from snapshot_pipeline.defs.recovery import RECOVERY_SENSOR
    from snapshot_pipeline.settings import load_settings

    cli("snapshot", "--date", DATE.isoformat(), env=env)
    before = manifest_checksum(env)
    backdate_a_transfer(env["LEDGER_DATABASE_URL"])

    kill_at(env, "visible", tmp_path)
    holder = holder_record(env)
    assert manifest_checksum(env) == before  # the index transaction died with the process
    assert reader_view(env) == before  # readers see the committed partition, whole
    assert len(part_files(env)) == 2  # beside it, the uncommitted file under its own run-unique name

    settings = load_settings(env)
    sensor = build_definitions(settings).get_sensor_def(RECOVERY_SENSOR)
    with open_instance(env, monkeypatch) as instance:
        with dg.build_sensor_context(instance=instance, resources={"snapshot_store": _store(env)}) as context:
            result = sensor(context)
    assert "recovered 1 partition" in str(result)
    assert reader_view(env) == manifest_checksum(env) == directory_view(env) == before  # the orphan is gone
    status, message = run_status(env, holder["run_id"], monkeypatch)
    assert status == dg.DagsterRunStatus.FAILURE and "died without finishing" in message
    assert leftovers(env, [holder["work_dir"]]) == []

    cli("snapshot", "--date", DATE.isoformat(), env=env)
    assert reader_view(env) == manifest_checksum(env) == directory_view(env) != before
    assert leftovers(env, [holder["work_dir"]]) == []


def test_doctor_resolves_a_kill_between_visible_file_and_commit_on_a_new_partition(env, tmp_path, monkeypatch):
    """First publish of a partition killed after the rename: `doctor` removes the file no manifest row names."""
    kill_at(env, "visible", tmp_path)
    holder = holder_record(env)
    assert manifest_checksum(env) is None and reader_view(env) is None and len(part_files(env)) == 1
    out = json.loads(cli("doctor", env=env).stdout)
    assert [r["publish"] for r in out["recovered"]] == ["rolled_back"]
    assert out["recovered"][0]["dead_run"]["run_id"] == holder["run_id"]
    assert reader_view(env) is None and manifest_checksum(env) is None and part_files(env) == []
    assert run_status(env, holder["run_id"], monkeypatch)[0] == dg.DagsterRunStatus.FAILURE
    assert leftovers(env, [holder["work_dir"]]) == []
    assert json.loads(cli("doctor", env=env).stdout) == {"recovered": []}
    with open_instance(env, monkeypatch) as instance:  # daemon/webserver runs: Dagster's run monitoring
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_start_timeout_seconds == 180
        assert instance.run_monitoring_max_runtime_seconds == 21600


def _store(env: dict[str, str]):
    from snapshot_pipeline.defs.resources import SnapshotStoreResource

    return SnapshotStoreResource(ledger_database_url=env["LEDGER_DATABASE_URL"],
                                 snapshot_database_url=env["SNAPSHOT_DATABASE_URL"],
                                 storage_uri=env["SNAPSHOT_STORAGE_URI"])


def test_next_day_never_rolls_forward_from_an_uncommitted_file(env, tmp_path):
    """D killed between the move to its final name and COMMIT, then D+1 runs first: it rolls forward
    from the files D's manifest names, and the orphan is swept before D+1 reads its base.

    D's uncommitted file already holds the backdated leg; the manifest's watermark for D does not.
    Read as D+1's base, that leg would be counted twice; D+1 must equal the journal exactly.
    """
    from snapshot_pipeline import calendar, snapshot
    from snapshot_pipeline.settings import load_settings
    from tests.oracle import expected_snapshot, snapshot_values

    cli("snapshot", "--date", DATE.isoformat(), env=env)
    before = manifest_checksum(env)
    backdate_a_transfer(env["LEDGER_DATABASE_URL"])
    kill_at(env, "visible", tmp_path)
    assert len(part_files(env)) == 2

    settings = load_settings(env)
    following = DATE + dt.timedelta(days=1)
    result = snapshot.take_snapshot(settings, following, 300)
    assert result.mode == "incremental" and result.base_date == DATE
    got = snapshot_values(ds.dataset(result.path, format="parquet").to_table())
    expected = expected_snapshot(env["LEDGER_DATABASE_URL"], calendar.cutoff(following, settings.timezone))
    assert got == expected
    assert reader_view(env) == manifest_checksum(env) == directory_view(env) == before  # D's orphan swept first
