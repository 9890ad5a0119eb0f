"""The publish protocol's recovery and sweep on real files and a real index (no process killed here)."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path

import psycopg

from snapshot_pipeline.store import index, location, recovery
from snapshot_pipeline.store.location import Store

D = dt.date(2026, 11, 2)
E = dt.date(2026, 11, 3)


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_recover_removes_only_the_dead_runs_leftovers_of_that_partition(make_database, tmp_path):
    storage = tmp_path / "store"
    store = Store.at(str(storage))
    url = make_database()
    staging = storage / location.STAGING_DIR
    dead_staging = _touch(staging / f"snapshot-{D}-{'a' * 32}.parquet")
    orphan = _touch(storage / "balance_snapshots" / f"snapshot_date={D}" / f"part-00000-{'b' * 16}.parquet")
    live_orphan = _touch(storage / "balance_snapshots" / f"snapshot_date={E}" / f"part-00000-{'e' * 16}.parquet")
    other_day = _touch(staging / f"snapshot-{E}-{'c' * 32}.parquet")
    report = _touch(staging / f"report-{D}-{'d' * 32}.parquet")
    work_dir = Path(tempfile.mkdtemp(prefix=f"snapshot-{D}-"))
    _touch(work_dir / "index-2026-11-02.csv")
    foreign = Path(tempfile.mkdtemp(prefix="unrelated-"))
    record = {"run_id": "run-1", "pid": 1, "host": "h", "started_at": "t", "work_dir": str(work_dir)}
    _touch(Path(recovery.holder_path(store, D)), json.dumps(record))
    _touch(Path(recovery.holder_path(store, E)), json.dumps({**record, "work_dir": str(foreign)}))

    reported = []
    with psycopg.connect(url, autocommit=True) as conn, psycopg.connect(url, autocommit=True) as live:
        index.migrate(conn)
        index.lock_partition(live, E)  # E's holder is alive: nothing of E may be touched
        assert recovery.pending_dates(store) == [D, E]
        found = recovery.recover_all(store, conn, on_dead_run=reported.append)
    assert [r.snapshot_date for r in found] == [D]
    assert [d.run_id for d in reported] == ["run-1"] and "died without finishing" in reported[0].reason()
    assert not dead_staging.exists() and not orphan.exists() and not work_dir.exists()
    assert other_day.exists() and report.exists() and foreign.exists() and live_orphan.exists()
    assert not os.path.exists(recovery.holder_path(store, D))
    assert os.path.exists(recovery.holder_path(store, E))
    foreign.rmdir()


def test_a_corrupted_holder_record_cannot_point_the_sweep_elsewhere(make_database, tmp_path):
    storage = tmp_path / "store"
    store = Store.at(str(storage))
    outside = tmp_path / "precious"
    _touch(outside / "keep.txt")
    record = {"run_id": None, "pid": 1, "host": "h", "started_at": "t", "work_dir": str(outside)}
    _touch(Path(recovery.holder_path(store, D)), json.dumps(record))
    with psycopg.connect(make_database(), autocommit=True) as conn:
        index.migrate(conn)
        index.lock_partition(conn, D)
        found = recovery.recover(store, conn, D)
    assert found.dead_run is not None and (outside / "keep.txt").exists()


def test_claim_names_its_work_dir_in_the_holder_record_and_release_removes_both(make_database, tmp_path):
    storage = tmp_path / "store"
    store = Store.at(str(storage))
    with psycopg.connect(make_database(), autocommit=True) as conn:
        index.migrate(conn)
        index.lock_partition(conn, D)
        claim = recovery.claim(store, conn, D, run_id="run-2")
        record = json.loads(Path(recovery.holder_path(store, D)).read_text())
        assert record["run_id"] == "run-2" and record["work_dir"] == str(claim.work_dir) and claim.work_dir.is_dir()
        assert record["pid"] == os.getpid()
        claim.release()
    assert not claim.work_dir.exists() and not os.path.exists(recovery.holder_path(store, D))
