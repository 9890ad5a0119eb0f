"""``snapshot-pipeline retention`` as a real subprocess."""

from __future__ import annotations

import datetime as dt
import json

from snapshot_pipeline import snapshot
from snapshot_pipeline.store import catalog
from tests.conftest import make_settings
from tests.processes import cli


def test_retention_command_dry_run_then_apply(adversarial_url, make_database, tmp_path):
    index_url = make_database()
    settings = make_settings(adversarial_url, tmp_path / "store", index_url=index_url)
    for day in (dt.date(2026, 10, 29), dt.date(2026, 10, 30), dt.date(2026, 10, 31)):
        snapshot.take_snapshot(settings, day, 1000)
    env = {"LEDGER_DATABASE_URL": adversarial_url, "SNAPSHOT_DATABASE_URL": index_url,
           "SNAPSHOT_STORAGE_URI": str(tmp_path / "store"), "SNAPSHOT_HOME": str(tmp_path)}
    args = ["retention", "--days", "1", "--months", "0", "--reference-date", "2026-10-31"]
    plan = json.loads(cli(*args, "--dry-run", env=env).stdout)
    assert plan["dry_run"] and plan["partitions_to_remove"] == ["2026-10-29", "2026-10-30"]
    assert catalog.exists(settings, dt.date(2026, 10, 29))
    done = json.loads(cli(*args, env=env).stdout)
    assert done["partitions_removed"] == ["2026-10-29", "2026-10-30"]
    assert not catalog.exists(settings, dt.date(2026, 10, 29))
    bad = cli("retention", "--days", "0", env=env, check=False)
    assert bad.returncode == 2 and "must be an integer from 1" in bad.stderr
    env["SNAPSHOT_RETENTION_DAYS"] = "zero"
    bad = cli("retention", "--dry-run", env=env, check=False)
    assert bad.returncode == 2 and "SNAPSHOT_RETENTION_DAYS" in bad.stderr  # bad setting: exit 2
