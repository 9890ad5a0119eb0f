"""The retention job through Dagster: dry run, then the real thing, with its report as metadata."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from snapshot_pipeline import calendar, snapshot
from snapshot_pipeline.defs.maintenance.jobs import RETENTION_JOB
from snapshot_pipeline.defs.maintenance.schedules import RETENTION_SCHEDULE
from snapshot_pipeline.defs.snapshots.assets import ASSET_NAME
from snapshot_pipeline.store import catalog
from tests.conftest import definitions_for, make_settings
from tests.helpers import index_values
from tests.oracle import expected_snapshot, snapshot_values

DATES = calendar.days(dt.date(2026, 10, 29), dt.date(2026, 11, 2))


def run(defs, instance, **config):
    return defs.resolve_job_def(RETENTION_JOB).execute_in_process(
        instance=instance, run_config={"ops": {"apply_snapshot_retention": {"config": config}}})


def observation(result) -> dict:
    events = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert len(events) == 1
    data = events[0].event_specific_data.asset_observation
    assert data.asset_key == dg.AssetKey(ASSET_NAME)
    return {k: v.value for k, v in data.metadata.items()}


def test_retention_job_dry_run_then_apply(adversarial_url, make_database, tmp_path):
    settings = make_settings(adversarial_url, tmp_path / "store", index_url=make_database())
    for date in DATES:
        snapshot.take_snapshot(settings, date, 1000)
    defs = definitions_for(settings)
    schedule = defs.resolve_schedule_def(RETENTION_SCHEDULE)
    assert schedule.cron_schedule == "30 3 * * *" and schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    policy = {"retention_days": 2, "retention_months": 0, "reference_date": "2026-11-02"}
    with dg.instance_for_test() as instance:
        dry = observation(run(defs, instance, dry_run=True, **policy))
        assert dry["dry_run"] is True and dry["partitions_to_remove"] == 3 and dry["partitions_kept"] == 2
        assert all(catalog.exists(settings, d) for d in DATES)
        result = run(defs, instance, **policy)
        done = observation(result)
        assert done["partitions_removed"] == 3 and done["parquet_dirs_deleted"] == 3
        assert done["report"]["partitions_removed"] == ["2026-10-29", "2026-10-30", "2026-10-31"]
        assert result.output_for_node("apply_snapshot_retention")["partitions_kept"] == 2
    assert [d for d in DATES if catalog.exists(settings, d)] == DATES[3:]
    for date in DATES[3:]:
        got = snapshot_values(catalog.read_partition(settings, date))
        assert got == expected_snapshot(adversarial_url, calendar.cutoff(date, "UTC"))
        assert index_values(settings.snapshot_database_url, date, got) == got
