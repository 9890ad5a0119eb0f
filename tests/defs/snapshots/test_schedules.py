"""Schedules evaluated for real (build_schedule_context on a test instance), in UTC and America/New_York."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from snapshot_pipeline.definitions import build_definitions
from snapshot_pipeline.defs.common.resources import SnapshotStoreResource
from snapshot_pipeline.defs.maintenance.schedules import RETENTION_SCHEDULE
from snapshot_pipeline.defs.maintenance.sensors import FAILURE_SENSOR
from snapshot_pipeline.defs.snapshots.assets import ASSET_NAME
from snapshot_pipeline.defs.snapshots.schedules import DAILY_SCHEDULE, MONTH_END_SCHEDULE
from snapshot_pipeline.defs.snapshots.sensors import GAP_SENSOR, REPAIR_SENSOR
from snapshot_pipeline.parsing import SettingsError
from snapshot_pipeline.settings import load_settings

UTC = dt.UTC


def defs_for(timezone: str, **env: str) -> dg.Definitions:
    settings = load_settings({"SNAPSHOT_TIMEZONE": timezone, "SNAPSHOT_START_DATE": "2026-01-01",
                              "LEDGER_DATABASE_URL": "postgresql://unused@127.0.0.1:1/none", **env})
    return build_definitions(settings, SnapshotStoreResource(ledger_database_url=settings.ledger_database_url))


def tick(defs: dg.Definitions, name: str, instance, when: dt.datetime):
    schedule = defs.resolve_schedule_def(name)
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when,
                                        repository_def=defs.get_repository_def())
    return schedule.evaluate_tick(context)


def requested(data) -> list[str]:
    return [r.partition_key for r in data.run_requests or []]


@pytest.mark.parametrize(
    ("timezone", "tick_utc", "expected"),
    [
        ("UTC", dt.datetime(2026, 11, 2, 0, 10, tzinfo=UTC), "2026-11-01"),
        ("UTC", dt.datetime(2026, 3, 9, 0, 10, tzinfo=UTC), "2026-03-08"),
        ("UTC", dt.datetime(2027, 1, 1, 0, 10, tzinfo=UTC), "2026-12-31"),
        # 00:10 EST on Nov 2 = 05:10 UTC: the 25-hour DST day Nov 1 just closed
        ("America/New_York", dt.datetime(2026, 11, 2, 5, 10, tzinfo=UTC), "2026-11-01"),
        # 00:10 EDT on Nov 1 = 04:10 UTC: Oct 31 closed (Nov 1 is still open)
        ("America/New_York", dt.datetime(2026, 11, 1, 4, 10, tzinfo=UTC), "2026-10-31"),
        # 00:10 EDT on Mar 9 = 04:10 UTC: the 23-hour DST day Mar 8 just closed
        ("America/New_York", dt.datetime(2026, 3, 9, 4, 10, tzinfo=UTC), "2026-03-08"),
        # 00:10 EST on Mar 8 = 05:10 UTC: Mar 7 closed
        ("America/New_York", dt.datetime(2026, 3, 8, 5, 10, tzinfo=UTC), "2026-03-07"),
    ],
)
def test_daily_schedule_requests_the_day_that_just_closed(timezone, tick_utc, expected):
    defs = defs_for(timezone)
    schedule = defs.resolve_schedule_def(DAILY_SCHEDULE)
    assert schedule.cron_schedule == "10 0 * * *"
    assert schedule.execution_timezone == timezone
    with dg.instance_for_test() as instance:
        data = tick(defs, DAILY_SCHEDULE, instance, tick_utc.astimezone(ZoneInfo(timezone)))
    assert requested(data) == [expected]
    assert data.run_requests[0].tags["snapshot_pipeline/trigger"] == "daily_schedule"


def test_daily_schedule_run_materializes_the_requested_dst_day(adversarial_url, make_database, tmp_path):
    """The request of the New York tick after the DST change runs, and covers the 25-hour local day."""
    from tests.conftest import definitions_for, make_settings

    index_url = make_database()
    settings = make_settings(adversarial_url, tmp_path / "store", "America/New_York", index_url=index_url)
    defs = definitions_for(settings)
    with dg.instance_for_test() as instance:
        data = tick(defs, DAILY_SCHEDULE, instance,
                    dt.datetime(2026, 11, 2, 0, 10, tzinfo=ZoneInfo("America/New_York")))
        request = data.run_requests[0]
        result = defs.resolve_job_def(request.job_name or "balance_snapshots_job").execute_in_process(
            partition_key=request.partition_key, tags=request.tags, instance=instance)
        assert result.success
        metadata = result.asset_materializations_for_node(ASSET_NAME)[0].metadata
        assert metadata["cutoff"].value == "2026-11-02T05:00:00+00:00"


def test_schedule_time_is_configurable():
    defs = defs_for("America/New_York", SNAPSHOT_SCHEDULE_TIME="06:45", SNAPSHOT_MONTH_END_CLOSE_TIME="07:30")
    assert defs.resolve_schedule_def(DAILY_SCHEDULE).cron_schedule == "45 6 * * *"
    assert defs.resolve_schedule_def(MONTH_END_SCHEDULE).cron_schedule == "30 7 1 * *"
    with dg.instance_for_test() as instance:
        # 06:45 local on Nov 2 is still the closing of Nov 1
        at = dt.datetime(2026, 11, 2, 6, 45, tzinfo=ZoneInfo("America/New_York"))
        data = tick(defs, DAILY_SCHEDULE, instance, at)
    assert requested(data) == ["2026-11-01"]
    for bad in ("6:45", "25:00", "06:45:10", "noon"):
        with pytest.raises(SettingsError, match="SNAPSHOT_SCHEDULE_TIME"):
            load_settings({"SNAPSHOT_SCHEDULE_TIME": bad})


@pytest.mark.parametrize("timezone", ["UTC", "America/New_York"])
def test_month_end_close_requests_the_last_day_of_the_closed_month(timezone):
    defs = defs_for(timezone)
    schedule = defs.resolve_schedule_def(MONTH_END_SCHEDULE)
    assert schedule.cron_schedule == "0 2 1 * *"
    assert schedule.execution_timezone == timezone
    zone = ZoneInfo(timezone)
    with dg.instance_for_test() as instance:
        for when, expected in [(dt.datetime(2026, 11, 1, 2, 0, tzinfo=zone), "2026-10-31"),
                               (dt.datetime(2026, 3, 1, 2, 0, tzinfo=zone), "2026-02-28"),
                               (dt.datetime(2026, 12, 1, 2, 0, tzinfo=zone), "2026-11-30")]:
            data = tick(defs, MONTH_END_SCHEDULE, instance, when)
            assert requested(data) == [expected]
            request = data.run_requests[0]
            assert request.run_key == f"month-end-close:{expected}"
            assert request.tags["snapshot_pipeline/month"] == expected[:7]
        # the month before SNAPSHOT_START_DATE has no partition: skipped, not an error
        data = tick(defs, MONTH_END_SCHEDULE, instance, dt.datetime(2026, 1, 1, 2, 0, tzinfo=zone))
        assert requested(data) == [] and "not a partition" in data.skip_message


def statuses(defs: dg.Definitions) -> dict[str, str]:
    out = {s.name: s.default_status.value for s in defs.schedules}
    out.update({s.name: s.default_status.value for s in defs.sensors})
    return out


def test_default_statuses_are_configurable():
    automation = [DAILY_SCHEDULE, MONTH_END_SCHEDULE, REPAIR_SENSOR, GAP_SENSOR, FAILURE_SENSOR]
    default = statuses(defs_for("UTC"))
    assert {default[n] for n in automation} == {"RUNNING"}
    assert default[RETENTION_SCHEDULE] == "STOPPED"  # deleting history is opt-in
    flipped = statuses(defs_for("UTC", SNAPSHOT_AUTOMATION_DEFAULT_STATUS="stopped",
                                SNAPSHOT_RETENTION_DEFAULT_STATUS="RUNNING"))
    assert {flipped[n] for n in automation} == {"STOPPED"}
    assert flipped[RETENTION_SCHEDULE] == "RUNNING"
    with pytest.raises(SettingsError, match="RUNNING or STOPPED"):
        load_settings({"SNAPSHOT_AUTOMATION_DEFAULT_STATUS": "yes"})


def test_freshness_policy_follows_the_schedule():
    defs = defs_for("America/New_York", SNAPSHOT_SCHEDULE_TIME="00:10")
    spec = next(iter(defs.resolve_assets_def(ASSET_NAME).specs))
    policy = spec.freshness_policy
    assert policy.deadline_cron == "10 2 * * *"
    assert policy.timezone == "America/New_York"
    assert policy.lower_bound_delta == dt.timedelta(hours=2, minutes=10)
