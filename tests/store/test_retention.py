"""Tiered retention against a real index and real Parquet: exactly the right partitions go, answers stay exact."""

from __future__ import annotations

import datetime as dt
import shutil

import psycopg
import pytest

from snapshot_pipeline import calendar, quality, snapshot
from snapshot_pipeline.calendar import is_month_end
from snapshot_pipeline.store import catalog as partitions
from snapshot_pipeline.store import index
from snapshot_pipeline.store.location import Store
from snapshot_pipeline.store.retention import Policy, RetentionError, apply_retention
from tests.conftest import make_settings
from tests.helpers import index_values
from tests.oracle import expected_snapshot, snapshot_values

D = dt.date
REFERENCE = D(2026, 11, 5)
ALL = calendar.days(D(2026, 10, 26), REFERENCE)


def test_policy_tiers():
    policy = Policy(days=3, months=2)
    assert [d for d in ALL if policy.keeps(d, REFERENCE)] == [D(2026, 10, 31), D(2026, 11, 3), D(2026, 11, 4),
                                                               D(2026, 11, 5)]
    assert [d for d in ALL if Policy(3, 1).keeps(d, REFERENCE)] == [D(2026, 11, 3), D(2026, 11, 4), D(2026, 11, 5)]
    assert Policy(730, 84).keeps(D(2024, 11, 6), D(2026, 11, 5))  # 729 days back: daily tier
    assert not Policy(730, 84).keeps(D(2024, 11, 5), D(2026, 11, 5))
    assert Policy(730, 84).keeps(D(2019, 12, 31), D(2026, 11, 5))  # month-end, 83 months back
    assert not Policy(730, 84).keeps(D(2019, 11, 30), D(2026, 11, 5))  # 84 months back
    assert is_month_end(D(2028, 2, 29)) and not is_month_end(D(2028, 2, 28))
    for bad in ((0, 1), (1, -1), (True, 1)):
        with pytest.raises(RetentionError):
            Policy(*bad)


def state(settings) -> dict:
    with psycopg.connect(settings.snapshot_database_url) as conn:
        return {
            "manifest": [r[0] for r in conn.execute("SELECT snapshot_date FROM snapshot_index.partitions ORDER BY 1")],
            "index_dates": [r[0] for r in conn.execute(
                "SELECT DISTINCT snapshot_date FROM snapshot_index.balance_snapshots ORDER BY 1")],
            "index_rows": conn.execute("SELECT count(*) FROM snapshot_index.balance_snapshots").fetchone()[0],
            "months": sorted(r[0] for r in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'balance_snapshots'")),
            "parquet": [d for d in ALL if partitions.exists(settings, d)],
        }


def assert_answers_exact(settings, url: str, dates) -> None:
    """Every retained partition: Parquet = journal, the index answers it for every balance, index rows = diff."""
    for date in dates:
        expected = expected_snapshot(url, calendar.cutoff(date, settings.timezone))
        got = snapshot_values(partitions.read_partition(settings, date))
        assert got == expected, date
        assert index_values(settings.snapshot_database_url, date, got) == got, f"index answers at {date}"
        agree = quality.parquet_matches_index(settings, date)
        assert agree.passed, (date, agree.description)


@pytest.fixture
def published(fresh_ledger, tmp_path):
    settings = make_settings(fresh_ledger, tmp_path / "store")
    for date in ALL:
        snapshot.take_snapshot(settings, date, 1000)
    return settings


def test_dry_run_reports_the_plan_and_changes_nothing(published):
    before = state(published)
    report = apply_retention(published, reference=REFERENCE, dry_run=True, policy=Policy(3, 2))
    assert state(published) == before
    assert report["dry_run"] is True
    assert report["partitions_to_remove"] == ["2026-10-26", "2026-10-27", "2026-10-28", "2026-10-29",
                                              "2026-10-30", "2026-11-01", "2026-11-02"]
    assert report["partitions_kept"] == 4 and report["oldest_kept"] == "2026-10-31"
    assert [(g["previous"], g["anchor"], g["anchor_kind"]) for g in report["groups"]] == [
        (None, "2026-10-31", "full"), ("2026-10-31", "2026-11-03", "re-diff")]
    with psycopg.connect(published.snapshot_database_url) as conn:
        entries = {e.snapshot_date: e for e in index.all_partitions(conn)}
    removed = [D.fromisoformat(d) for d in report["partitions_to_remove"]]
    assert report["bytes_to_free"] == sum(entries[d].bytes for d in removed)
    assert report["index_rows_to_delete"] == sum(entries[d].index_rows for d in removed)


def test_retention_removes_exactly_what_it_should_and_answers_stay_exact(published, fresh_ledger):
    kept = [D(2026, 10, 31), D(2026, 11, 3), D(2026, 11, 4), D(2026, 11, 5)]
    before = state(published)
    report = apply_retention(published, reference=REFERENCE, policy=Policy(3, 2))
    after = state(published)
    assert report["partitions_removed"] == ["2026-10-26", "2026-10-27", "2026-10-28", "2026-10-29", "2026-10-30",
                                            "2026-11-01", "2026-11-02"]
    assert report["partitions_skipped"] == []
    assert after["manifest"] == after["index_dates"] == after["parquet"] == kept
    assert report["manifest_rows_deleted"] == 7 and report["parquet_dirs_deleted"] == 7
    # October keeps its month-end: rows deleted, the monthly index partition stays
    assert report["index_partitions_dropped"] == [] and after["months"] == before["months"]
    assert {a["date"]: a["previous"] for a in report["anchors_rewritten"]} == {"2026-10-31": None,
                                                                              "2026-11-03": "2026-10-31"}
    assert report["index_rows_deleted"] > 0
    anchors = report["anchors_rewritten"]
    assert after["index_rows"] == (before["index_rows"] - report["index_rows_deleted"]
                                   - sum(a["index_rows_before"] for a in anchors)
                                   + sum(a["index_rows"] for a in anchors))
    assert_answers_exact(published, fresh_ledger, kept)
    # the oldest retained partition is a full anchor: one index row per balance
    with psycopg.connect(published.snapshot_database_url) as conn:
        anchor_rows = conn.execute("SELECT count(*) FROM snapshot_index.balance_snapshots"
                                   " WHERE snapshot_date = '2026-10-31'").fetchone()[0]
    assert anchor_rows == partitions.read_partition(published, D(2026, 10, 31)).num_rows
    # idempotent: nothing left to do
    again = apply_retention(published, reference=REFERENCE, policy=Policy(3, 2))
    assert again["partitions_removed"] == [] and state(published) == after

    # a stricter policy drops October entirely: its monthly index partition goes whole
    report = apply_retention(published, reference=REFERENCE, policy=Policy(3, 1))
    assert report["partitions_removed"] == ["2026-10-31"]
    assert report["index_partitions_dropped"] == ["balance_snapshots_2026_10"]
    assert state(published)["months"] == ["balance_snapshots_2026_11"]
    assert_answers_exact(published, fresh_ledger, kept[1:])

    # the pipeline carries on: a new day is incremental from the newest, an old one re-materializes cleanly
    assert snapshot.take_snapshot(published, D(2026, 11, 6), 1000).mode == "incremental"
    snapshot.take_snapshot(published, D(2026, 11, 3), 1000)
    assert_answers_exact(published, fresh_ledger, [D(2026, 11, 3), D(2026, 11, 4), D(2026, 11, 5), D(2026, 11, 6)])


def test_orphan_directories_and_busy_partitions(published, fresh_ledger):
    # an orphan Parquet directory (a crash after the index commit) outside the policy is removed
    report = apply_retention(published, reference=REFERENCE, policy=Policy(11, 0))  # keeps all 11 days
    assert report["partitions_removed"] == [] and report["partitions_kept"] == 11
    shutil.copytree(Store.at(published.storage_uri).partition_dir(D(2026, 10, 27)),
                    Store.at(published.storage_uri).partition_dir(D(2026, 10, 20)))
    # a partition being materialized (its lock held) is skipped, and its whole group with it
    with psycopg.connect(published.snapshot_database_url, autocommit=True) as holder:
        index.lock_partition(holder, D(2026, 10, 27))
        report = apply_retention(published, reference=REFERENCE, policy=Policy(8, 0))
        assert report["partitions_removed"] == []
        assert report["partitions_skipped"] == ["2026-10-26", "2026-10-27", "2026-10-28"]
        assert "being materialized" in report["groups"][0]["status"]
        assert report["orphan_parquet_dirs_deleted"] == 1
        assert not partitions.exists(published, D(2026, 10, 20))
    report = apply_retention(published, reference=REFERENCE, policy=Policy(8, 0))
    assert report["partitions_removed"] == ["2026-10-26", "2026-10-27", "2026-10-28"]
    assert_answers_exact(published, fresh_ledger, calendar.days(D(2026, 10, 29), REFERENCE))
