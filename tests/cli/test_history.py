"""``history``: a partition with no version says why on stderr (its JSON stays the list, empty)."""

from __future__ import annotations

import json

from tests.processes import cli


def test_a_partition_without_versions_lists_none_and_says_why(adversarial_url, make_database, tmp_path):
    env = {"LEDGER_DATABASE_URL": adversarial_url, "SNAPSHOT_DATABASE_URL": make_database(),
           "SNAPSHOT_STORAGE_URI": str(tmp_path / "store"), "SNAPSHOT_START_DATE": "2026-10-01",
           "SNAPSHOT_HOME": str(tmp_path), "SNAPSHOT_HISTORY_DAYS": "7"}
    proc = cli("history", "--date", "2026-09-01", env=env)
    assert json.loads(proc.stdout)["versions"] == []
    assert "no version of 2026-09-01" in proc.stderr and "SNAPSHOT_HISTORY_DAYS=7" in proc.stderr
    assert "partitions run from 2026-10-01" in proc.stderr
