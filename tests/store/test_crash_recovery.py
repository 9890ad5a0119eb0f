"""Real crashes: `kill -9` of `snapshot-pipeline snapshot` at each phase of the Delta publication (DESIGN §8).

Each test publishes partition D (generation 1), adds a backdated leg to the ledger (so the next
materialization of D writes different values: the oracle at the old and at the new ledger state),
starts the CLI with a pause point, waits for its marker and sends a real SIGKILL. Phases, in order
(``faults.PHASES``): read, staged, visible (inside the index transaction) | committed (the index
COMMIT, the commit point, made; no Delta commit) | delta (the Delta commit made, its version not
recorded) | published (both agree, before the checks) | checks (inside the run's asset checks).

Right after the kill, every reader (DuckDB ``delta_scan``, ``deltalake``, our manifest reader
``catalog.read_partition``) sees exactly the old partition or exactly the new one, whole: the
Delta readers switch at the Delta commit, our own reader at the index COMMIT. Then one recovery
path (the next CLI run of D, the ``crash_recovery_sensor`` tick, ``snapshot-pipeline doctor``, or
the next day's run) converges: the Delta table's current files of D are the manifest's, no
generation is left unsynced, every reader sees the same partition, the files no generation names
(orphans) are gone, no file a recorded generation names was ever deleted, and the killed run is
FAILURE in the Dagster instance with the reason, whatever phase it died in.

A glob of the partition's directory is not a supported reader any more: superseded files stay
there for the history window by design (docs/reading.md).

On S3 (moto on loopback, issue 9 item 2), a kill at ``visible`` or ``read`` leaves the previous partition
readable and correct, and ``doctor`` removes the orphan object.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psycopg
import pyarrow.fs as pafs
import pytest

from snapshot_pipeline import calendar
from snapshot_pipeline.store import catalog, delta, generations, index, location, parquet, publication, recovery
from snapshot_pipeline.store import records as store_records
from snapshot_pipeline.store.location import Store
from tests.conftest import seed
from tests.helpers import insert_transaction, two_balances
from tests.oracle import expected_snapshot, snapshot_values
from tests.processes import cli
from tests.readers import duckdb_connection, via_deltalake, via_duckdb
from tests.storage import staged_files

DATE = dt.date(2026, 11, 2)
TIMEZONE = "UTC"


@pytest.fixture(scope="module")
def crash_ledger(make_database) -> str:
    """A seeded ledger of this module's own (tests add backdated rows to it; each computes its oracle first)."""
    url = make_database()
    seed(url)
    return url


@pytest.fixture
def env(crash_ledger, make_database, tmp_path) -> dict[str, str]:
    """The CLI's environment, with a Dagster instance of the test's own: the instance a server's tests share
    by default (a `dagster` database) also holds other tests' runs, which their own recoveries report."""
    return {
        "LEDGER_DATABASE_URL": crash_ledger,
        "SNAPSHOT_DATABASE_URL": make_database(),
        "DAGSTER_PG_URL": make_database(),
        "SNAPSHOT_STORAGE_URI": str(tmp_path / "store"),
        "SNAPSHOT_START_DATE": "2026-10-01",
        "SNAPSHOT_TIMEZONE": TIMEZONE,
        "SNAPSHOT_HOME": str(tmp_path),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }


def _settings(env: dict[str, str]):
    from snapshot_pipeline.settings import load_settings

    return load_settings(env)


def oracle(env: dict[str, str], date: dt.date = DATE) -> dict[str, dict[str, int]]:
    return expected_snapshot(env["LEDGER_DATABASE_URL"], calendar.cutoff(date, TIMEZONE))


def backdate_a_transfer(url: str) -> None:
    """A new APPLIED leg dated inside DATE: the next materialization of DATE writes different values."""
    source, destination = two_balances(url)
    moment = dt.datetime.combine(DATE, dt.time(12, 0))
    insert_transaction(url, source, destination, 1234, created_at=moment, effective_date=moment)


# ------------------------------------------------------------------------------------------- the kill


def start_paused(env: dict[str, str], phase: str, marker: Path) -> subprocess.Popen:
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("LEDGER_", "SNAPSHOT_")) and k != "DAGSTER_HOME"}
    full_env.update(env, SNAPSHOT_PAUSE_AT=phase, SNAPSHOT_PAUSE_MARKER=str(marker))
    return subprocess.Popen([sys.executable, "-m", "snapshot_pipeline.cli", "snapshot", "--date", DATE.isoformat(),
                             "--batch-size", "200"], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_at(env: dict[str, str], phase: str, tmp_path: Path) -> int:
    """Run the snapshot until it pauses at ``phase``, SIGKILL it (a real kill -9); returns its pid."""
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
    wait_for_dead_sessions(env)
    return pid


def wait_for_dead_sessions(env: dict[str, str], timeout: float = 30) -> None:
    """Until the server has ended the killed process's sessions: its open index transaction rolled back and
    its partition lock (a session advisory lock) free, as they are for whoever comes next."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(env["SNAPSHOT_DATABASE_URL"], autocommit=True) as conn:
        while conn.execute("SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                           " WHERE l.locktype = 'advisory' AND d.datname = current_database()"
                           " AND l.pid <> pg_backend_pid()").fetchone()[0]:
            assert time.monotonic() < deadline, "the killed run's sessions outlived it"
            time.sleep(0.1)


# ------------------------------------------------------------------------------------------- readers


def readers(env: dict[str, str], date: dt.date = DATE) -> dict[str, dict[str, dict[str, int]] | None]:
    """What each reader sees of ``date``: balance_id -> six amounts (None: the reader finds no partition).

    Fails when a reader sees a balance twice (a partition read twice is a wrong total, not a dict key).
    """
    settings = _settings(env)
    uri = env["SNAPSHOT_STORAGE_URI"]
    tables = {}
    if delta.exists(Store.at(uri), delta.SNAPSHOTS):
        con = duckdb_connection()
        try:
            tables["duckdb"] = via_duckdb(con, uri, date)
        finally:
            con.close()
        tables["deltalake"] = via_deltalake(uri, date)
    else:
        tables["duckdb"] = tables["deltalake"] = None
    tables["manifest"] = catalog.read_partition(settings, date) if catalog.exists(settings, date) else None
    seen = {}
    for name, table in tables.items():
        if table is None or table.num_rows == 0:
            seen[name] = None
            continue
        values = snapshot_values(table)
        assert len(values) == table.num_rows, f"{name} sees a balance of {date} more than once"
        seen[name] = values
    return seen


def assert_readers_see(env: dict[str, str], *, delta_readers, manifest, date: dt.date = DATE) -> None:
    """Each reader sees exactly the expected partition (an oracle dict, or None for no partition)."""
    seen = readers(env, date)
    for name, expected in (("duckdb", delta_readers), ("deltalake", delta_readers), ("manifest", manifest)):
        got = seen[name]
        assert got == expected, (f"{name} sees {len(got) if got else 0} balances of {date}, not the expected"
                                 f" {len(expected) if expected else 0} (or different values)")


def manifest_checksum(env: dict[str, str]) -> tuple[str, int] | None:
    """(checksum, rows) of DATE's manifest row (also used by the test on S3)."""
    with psycopg.connect(env["SNAPSHOT_DATABASE_URL"]) as conn:
        row = conn.execute("SELECT checksum, row_count FROM snapshot_index.partitions WHERE snapshot_date = %s",
                           (DATE,)).fetchone()
    return (row[0], int(row[1])) if row else None


def reader_view(env: dict[str, str]) -> tuple[str, int] | None:
    """What our reader finds for DATE through the manifest: (sha256 of its files, rows read); compared with
    :func:`manifest_checksum` (also used by the test on S3)."""
    settings = _settings(env)
    paths = catalog.paths(settings, DATE)
    if paths is None:
        return None
    fs = Store.at(settings.storage_uri).fs
    return parquet.files_checksum(fs, paths)[1], catalog.read_partition(settings, DATE).num_rows


def delta_files(env: dict[str, str], date: dt.date = DATE) -> list[str]:
    """Base names of the files the Delta table's current version names for ``date``."""
    table = delta.load(Store.at(env["SNAPSHOT_STORAGE_URI"]), delta.SNAPSHOTS)
    if table is None:
        return []
    return sorted(path.rsplit("/", 1)[1] for path, _ in delta.partition_files(table, delta.SNAPSHOTS, date))


def index_state(env: dict[str, str], date: dt.date = DATE):
    """(manifest entry, every recorded generation, unsynced dates) from the snapshot index."""
    with psycopg.connect(env["SNAPSHOT_DATABASE_URL"]) as conn:
        if not index.ready(conn):
            return None, [], []
        return index.manifest(conn, date), generations.versions(conn, date), generations.unsynced_dates(conn)


def named_files(env: dict[str, str], date: dt.date = DATE) -> set[str]:
    """The paths of every file some recorded generation of ``date`` names."""
    _, versions, _ = index_state(env, date)
    return {p for v in versions for p in Store.at(env["SNAPSHOT_STORAGE_URI"]).partition_paths(date, list(v.files))}


def orphans(env: dict[str, str], date: dt.date = DATE) -> set[str]:
    """Part files in ``date``'s directory that no recorded generation names."""
    return set(parquet.list_partition(Store.at(env["SNAPSHOT_STORAGE_URI"]), date)) - named_files(env, date)


def assert_log_agrees_with_index(env: dict[str, str], date: dt.date = DATE) -> None:
    """Converged: the Delta table's current files of ``date`` are the manifest's, the manifest and the latest
    generation name the Delta version carrying them, its app transaction is the generation, nothing unsynced."""
    entry, versions, unsynced = index_state(env, date)
    assert entry is not None and versions and entry.generation == versions[-1].generation
    assert delta_files(env, date) == sorted(name.rsplit("/", 1)[1] for name in entry.files)
    assert entry.delta_version is not None and versions[-1].delta_version == entry.delta_version
    assert delta.transaction_version(Store.at(env["SNAPSHOT_STORAGE_URI"]), delta.SNAPSHOTS,
                                     publication.app_id(date)) == entry.generation
    assert unsynced == []


def leftovers(env: dict[str, str], work_dirs: list[str]) -> list[str]:
    root = Path(env["SNAPSHOT_STORAGE_URI"])
    found = [str(p) for d in (location.STAGING_DIR, location.CONTROL_DIR) for p in (root / d).glob("*")]
    return found + [d for d in work_dirs if os.path.exists(d)]


def holder_record(env: dict[str, str]) -> dict | None:
    path = Path(recovery.holder_path(Store.at(env["SNAPSHOT_STORAGE_URI"]), DATE))
    return json.loads(path.read_text()) if path.exists() else None


# ------------------------------------------------------------------------------------------- Dagster


def open_instance(env: dict[str, str], monkeypatch) -> dg.DagsterInstance:
    """The CLI's Dagster instance (its dagster.yaml in DAGSTER_HOME, its storage the test's DAGSTER_PG_URL)."""
    from snapshot_pipeline import db

    monkeypatch.setenv("DAGSTER_PG_URL", db.dagster_url(_settings(env)))
    return dg.DagsterInstance.from_config(env["DAGSTER_HOME"])


def killed_run_id(env: dict[str, str], pid: int, monkeypatch) -> str:
    """The Dagster run the killed CLI process executed (tagged with its pid and host)."""
    from snapshot_pipeline.defs.snapshots.recovery import CLI_HOST_TAG, CLI_PID_TAG

    with open_instance(env, monkeypatch) as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={CLI_PID_TAG: str(pid),
                                                             CLI_HOST_TAG: socket.gethostname()}), limit=1)
    assert runs, f"no Dagster run tagged with pid {pid}"
    return runs[0].run_id


def run_status(env: dict[str, str], run_id: str, monkeypatch) -> tuple[dg.DagsterRunStatus, str | None]:
    with open_instance(env, monkeypatch) as instance:
        status = instance.get_run_by_id(run_id).status
        failures = [r.event_log_entry.dagster_event.message
                    for r in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records]
    return status, (failures[-1] if failures else None)


def assert_reported_failed(env: dict[str, str], run_id: str, monkeypatch) -> None:
    status, message = run_status(env, run_id, monkeypatch)
    assert status == dg.DagsterRunStatus.FAILURE, status
    assert message and "died without finishing" in message and DATE.isoformat() in message, message


def ours(doctor_output: dict, run_id: str) -> list[dict]:
    """The entries of `doctor`'s output about the killed run (the Dagster instance is shared with other tests:
    doctor also reports their dead CLI runs)."""
    return [r for r in doctor_output["recovered"] if (r.get("dead_run") or {}).get("run_id") == run_id]


def nothing_left(doctor_output: dict, run_id: str) -> bool:
    """A second `doctor`: nothing about this store or this run (only, maybe, other tests' dead CLI runs)."""
    return all(r["dead_run"] and r["dead_run"]["run_id"] != run_id and r["publish"] == "none" and not r["removed"]
               and r["delta_version"] is None for r in doctor_output["recovered"])


def _store(env: dict[str, str]):
    from snapshot_pipeline.defs.common.resources import SnapshotStoreResource

    return SnapshotStoreResource(ledger_database_url=env["LEDGER_DATABASE_URL"],
                                 snapshot_database_url=env["SNAPSHOT_DATABASE_URL"],
                                 storage_uri=env["SNAPSHOT_STORAGE_URI"])


def sensor_tick(env: dict[str, str], monkeypatch) -> str:
    """One tick of the crash_recovery_sensor on the CLI's instance; returns its skip reason."""
    from snapshot_pipeline.definitions import build_definitions
    from snapshot_pipeline.defs.snapshots.recovery import RECOVERY_SENSOR

    sensor = build_definitions(_settings(env)).get_sensor_def(RECOVERY_SENSOR)
    with open_instance(env, monkeypatch) as instance:
        with dg.build_sensor_context(instance=instance, resources={"snapshot_store": _store(env)}) as context:
            return str(sensor(context))


# ------------------------------------------------------------------------------------------- the tests

# phase -> what every reader sees right after the kill: (Delta readers, our manifest reader), old or new
AFTER_KILL = {
    "read": ("old", "old"),
    "staged": ("old", "old"),
    "visible": ("old", "old"),  # the index transaction died with the process
    "committed": ("old", "new"),  # the commit point passed; the Delta commit is the recovery's to replay
    "delta": ("new", "new"),  # the Delta commit made; its version not recorded in the index yet
    "published": ("new", "new"),
    "checks": ("new", "new"),
}
# each recovery path covers phases before, between and after the two commits
CASES = [
    ("read", "cli"),
    ("staged", "sensor"),
    ("visible", "sensor"),
    ("committed", "cli"),
    ("committed", "sensor"),
    ("delta", "doctor"),
    ("published", "sensor"),
    ("checks", "cli"),
    ("checks", "doctor"),
]


@pytest.mark.parametrize(("phase", "recovery"), CASES, ids=[f"{p}-{r}" for p, r in CASES])
def test_kill_then_recovery_converges(env, tmp_path, monkeypatch, phase, recovery):
    from snapshot_pipeline import snapshot

    settings = _settings(env)
    old = oracle(env)
    snapshot.take_snapshot(settings, DATE, 300)  # generation 1 (the old partition)
    assert_log_agrees_with_index(env)
    assert_readers_see(env, delta_readers=old, manifest=old)
    backdate_a_transfer(env["LEDGER_DATABASE_URL"])
    new = oracle(env)
    assert new != old
    named = named_files(env)

    pid = kill_at(env, phase, tmp_path)
    run_id = killed_run_id(env, pid, monkeypatch)
    holder = holder_record(env)
    states = {"old": old, "new": new}
    delta_sees, manifest_sees = AFTER_KILL[phase]
    assert_readers_see(env, delta_readers=states[delta_sees], manifest=states[manifest_sees])
    named |= named_files(env)
    entry, versions, unsynced = index_state(env)
    assert [v.generation for v in versions] == ([1] if manifest_sees == "old" else [1, 2])
    assert unsynced == ([DATE] if phase in ("committed", "delta") else [])
    # the Delta table's current files of DATE are exactly one recorded generation's: never a mix
    assert delta_files(env) in [sorted(f.rsplit("/", 1)[1] for f in v.files) for v in versions]
    if phase in ("staged", "visible"):
        assert orphans(env)  # the dead run's complete file, no generation names it: no reader sees it
    assert run_status(env, run_id, monkeypatch)[0] == dg.DagsterRunStatus.STARTED
    if phase == "checks":
        assert holder is None  # the claim was released when take_snapshot returned; the checks run after
    else:
        assert holder is not None and holder["run_id"] == run_id
    work_dirs = [holder["work_dir"]] if holder else []

    if recovery == "cli":
        out = json.loads(cli("snapshot", "--date", DATE.isoformat(), env=env).stdout)
        assert run_status(env, out["run_id"], monkeypatch)[0] == dg.DagsterRunStatus.SUCCESS
        # blocking checks pass (live_balances_match WARNs: the backdated leg did not move blnk.balances)
        assert out["checks"] and not [k for k, v in out["checks"].items() if "ERROR" in v], out["checks"]
        converged = new
    elif recovery == "sensor":
        assert re.search(r"recovered [1-9]\d* partition", sensor_tick(env, monkeypatch))
        converged = states[manifest_sees]
    else:
        found = ours(json.loads(cli("doctor", env=env).stdout), run_id)
        assert [r["snapshot_date"] for r in found] == [DATE.isoformat()]
        assert found[0]["publish"] == ("completed" if phase in ("committed", "delta") else "none")
        assert nothing_left(json.loads(cli("doctor", env=env).stdout), run_id)
        converged = states[manifest_sees]

    named |= named_files(env)
    assert_log_agrees_with_index(env)
    assert_readers_see(env, delta_readers=converged, manifest=converged)
    assert orphans(env) == set()
    assert all(os.path.exists(p) for p in named), sorted(p for p in named if not os.path.exists(p))
    assert_reported_failed(env, run_id, monkeypatch)
    assert leftovers(env, work_dirs) == []

    if converged is old:  # the dead run never committed: the next run publishes the new values
        snapshot.take_snapshot(settings, DATE, 300)
        named |= named_files(env)
        assert_log_agrees_with_index(env)
        assert_readers_see(env, delta_readers=new, manifest=new)
        assert all(os.path.exists(p) for p in named)
        assert orphans(env) == set()
    # every generation stays readable by time travel (history window): the first is the old partition
    first = index_state(env)[1][0]
    assert snapshot_values(via_deltalake(env["SNAPSHOT_STORAGE_URI"], DATE, first.delta_version)) == old


def test_doctor_resolves_a_kill_between_visible_file_and_commit_on_a_new_partition(env, tmp_path, monkeypatch):
    """First publish of a partition killed inside its index transaction: no reader sees anything of it, and
    `doctor` removes the file no generation names and reports the run."""
    pid = kill_at(env, "visible", tmp_path)
    run_id = killed_run_id(env, pid, monkeypatch)
    holder = holder_record(env)
    assert holder["run_id"] == run_id
    assert_readers_see(env, delta_readers=None, manifest=None)
    assert index_state(env)[1] == [] and len(orphans(env)) == 1
    out = json.loads(cli("doctor", env=env).stdout)
    assert [r["publish"] for r in ours(out, run_id)] == ["rolled_back"]
    assert_readers_see(env, delta_readers=None, manifest=None)
    assert orphans(env) == set() and index_state(env)[1] == [] and delta_files(env) == []
    assert_reported_failed(env, run_id, monkeypatch)
    assert leftovers(env, [holder["work_dir"]]) == []
    assert nothing_left(json.loads(cli("doctor", env=env).stdout), run_id)
    with open_instance(env, monkeypatch) as instance:  # daemon/webserver runs: Dagster's run monitoring
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_start_timeout_seconds == 180
        assert instance.run_monitoring_max_runtime_seconds == 21600


@pytest.mark.parametrize("phase", ["visible", "committed"])
def test_next_day_rolls_forward_from_the_committed_generation(env, tmp_path, phase):
    """D killed before (visible) or after (committed) its commit point, then D+1 runs first: D+1 rolls forward
    from the generation D's index names, after its claim resolved D (orphan removed, or the Delta commit
    replayed), and equals the journal exactly.

    At ``visible`` D's uncommitted file already holds the backdated leg and the manifest's watermark for D
    does not: read as D+1's base, that leg would be counted twice.
    """
    from snapshot_pipeline import snapshot

    settings = _settings(env)
    old = oracle(env)
    snapshot.take_snapshot(settings, DATE, 300)
    backdate_a_transfer(env["LEDGER_DATABASE_URL"])
    new = oracle(env)
    named = named_files(env)
    kill_at(env, phase, tmp_path)
    named |= named_files(env)
    committed = phase == "committed"
    assert_readers_see(env, delta_readers=old, manifest=new if committed else old)

    following = DATE + dt.timedelta(days=1)
    result = snapshot.take_snapshot(settings, following, 300)
    assert result.mode == "incremental" and result.base_date == DATE
    expected = oracle(env, following)
    assert_readers_see(env, delta_readers=expected, manifest=expected, date=following)
    assert_log_agrees_with_index(env, following)
    # D was resolved by D+1's claim before D+1 chose its base
    assert_log_agrees_with_index(env)
    current = new if committed else old
    assert_readers_see(env, delta_readers=current, manifest=current)
    assert orphans(env) == set()
    assert all(os.path.exists(p) for p in named | named_files(env))
    assert holder_record(env) is None  # the dead holder's record went with D's recovery


# ------------------------------------------------------------------------------------------- on S3


@pytest.fixture
def s3_env(s3_storage, fresh_ledger, make_database, tmp_path) -> dict[str, str]:
    """The CLI's environment on S3: the storage URI and the standard AWS_* variables of the moto server."""
    env = {"LEDGER_DATABASE_URL": fresh_ledger, "SNAPSHOT_DATABASE_URL": make_database(),
           "SNAPSHOT_STORAGE_URI": s3_storage, "SNAPSHOT_START_DATE": "2026-10-01",
           "SNAPSHOT_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    return env


def _s3_listing(env: dict[str, str]) -> list[str]:
    """The partition prefix of DATE listed with pyarrow's S3FileSystem directly (every object, any name)."""
    fs = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], region="us-east-1", scheme="http",
                           access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"])
    prefix = Store.at(env["SNAPSHOT_STORAGE_URI"]).partition_dir(DATE)
    selector = pafs.FileSelector(prefix, allow_not_found=True, recursive=True)
    return sorted(i.path for i in fs.get_file_info(selector) if i.type == pafs.FileType.File)


def _holder(env: dict[str, str]) -> dict:
    store = Store.at(env["SNAPSHOT_STORAGE_URI"])
    return store_records.read_json(store.fs, recovery.holder_path(store, DATE))


@pytest.mark.parametrize("phase", ["visible", "read"])
def test_kill_9_on_s3_leaves_the_old_partition_and_is_cleaned_up(s3_env, tmp_path, monkeypatch, phase):
    """A real SIGKILL of `snapshot-pipeline snapshot` on S3: readers (through the manifest) still get the old
    partition exactly; at `visible` an orphan object sits under the partition prefix until `doctor` removes
    it; the dead run is marked failed; the next run publishes the new partition, exact, alone."""
    from snapshot_pipeline.settings import load_settings

    settings = load_settings(s3_env)
    cli("snapshot", "--date", DATE.isoformat(), "--batch-size", "200", env=s3_env)
    before, old_objects = manifest_checksum(s3_env), _s3_listing(s3_env)
    old_table = catalog.read_partition(settings, DATE)
    assert len(old_objects) == 1 and old_objects == catalog.paths(settings, DATE)
    assert snapshot_values(old_table) == expected_snapshot(s3_env["LEDGER_DATABASE_URL"],
                                                           calendar.cutoff(DATE, settings.timezone))
    backdate_a_transfer(s3_env["LEDGER_DATABASE_URL"])

    kill_at(s3_env, phase, tmp_path)
    holder = _holder(s3_env)
    assert holder is not None and holder["run_id"]
    assert manifest_checksum(s3_env) == before and reader_view(s3_env) == before
    assert catalog.read_partition(settings, DATE).equals(old_table)  # the previous partition, whole and exact
    listing = _s3_listing(s3_env)
    if phase == "visible":
        orphans = sorted(set(listing) - set(old_objects))
        assert len(orphans) == 1 and parquet.is_part_name(os.path.basename(orphans[0]))  # the uncommitted object
    else:
        assert listing == old_objects  # nothing of the new run under the partition prefix

    out = json.loads(cli("doctor", env=s3_env).stdout)
    assert [r["dead_run"]["run_id"] for r in out["recovered"]] == [holder["run_id"]]
    if phase == "visible":
        assert out["recovered"][0]["publish"] == "rolled_back"
    assert _s3_listing(s3_env) == old_objects  # the orphan object is gone, the committed one kept
    assert staged_files(settings) == [] and _holder(s3_env) is None
    assert reader_view(s3_env) == before
    status, message = run_status(s3_env, holder["run_id"], monkeypatch)
    assert status == dg.DagsterRunStatus.FAILURE and "died without finishing" in message

    result = json.loads(cli("snapshot", "--date", DATE.isoformat(), "--batch-size", "200", env=s3_env).stdout)
    assert run_status(s3_env, result["run_id"], monkeypatch)[0] == dg.DagsterRunStatus.SUCCESS
    after = manifest_checksum(s3_env)
    assert after != before and reader_view(s3_env) == after
    new_objects = _s3_listing(s3_env)
    current = catalog.paths(settings, DATE)
    # the superseded object stays for the history window; the Delta table names only the new one
    assert new_objects == sorted(old_objects + current) and len(current) == 1 and current != old_objects
    assert via_deltalake(settings.storage_uri, DATE).num_rows == catalog.read_partition(settings, DATE).num_rows
    assert snapshot_values(catalog.read_partition(settings, DATE)) == expected_snapshot(
        s3_env["LEDGER_DATABASE_URL"], calendar.cutoff(DATE, settings.timezone))
    assert staged_files(settings) == [] and _holder(s3_env) is None
