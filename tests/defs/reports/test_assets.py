"""The report assets, run for real through Dagster, and their automation conditions evaluated on a real instance."""

from __future__ import annotations

import datetime as dt
import os

import dagster as dg
import pytest

from snapshot_pipeline.definitions import build_definitions
from snapshot_pipeline.defs.reports.assets import NO_DRIFT_CHECK
from snapshot_pipeline.defs.reports.sensors import SENSOR_NAME
from snapshot_pipeline.defs.snapshots.assets import ASSET_NAME
from snapshot_pipeline.defs.snapshots.jobs import SNAPSHOT_JOB
from snapshot_pipeline.store import catalog, parquet
from snapshot_pipeline.store.location import Store
from tests.conftest import make_settings, store_resource_for
from tests.oracle import AMOUNTS, expected_snapshot

NY = "America/New_York"
MONTH_END = dg.AssetKey("month_end_balances")
# An evaluation instant in November 2026: October is the latest closed month in New York.
NOVEMBER_10 = dt.datetime(2026, 11, 10, 12, tzinfo=dt.UTC)


@pytest.fixture
def setup(adversarial_url, make_database, tmp_path):
    index_url = make_database()
    settings = make_settings(adversarial_url, tmp_path / "store", NY, start="2026-10-25", index_url=index_url)
    resource = store_resource_for(settings)
    defs = build_definitions(settings, resource)
    with dg.instance_for_test() as instance:
        yield settings, defs, resource, instance


def snapshot_days(defs, instance, *days: str) -> None:
    job = defs.resolve_job_def(SNAPSHOT_JOB)
    for day in days:
        assert job.execute_in_process(partition_key=day, instance=instance).success


def materialize(defs, resource, instance, selection: list[str], partition: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(list(defs.assets), selection=selection, partition_key=partition, instance=instance,
                          resources={"snapshot_store": resource})


def metadata_of(result, asset: str) -> dict:
    event = result.asset_materializations_for_node(asset)[0]
    return {k: v.value for k, v in event.metadata.items()}


def test_report_assets_materialize_with_metadata(setup, adversarial_url):
    settings, defs, resource, instance = setup
    snapshot_days(defs, instance, "2026-10-31", "2026-11-01")
    result = materialize(defs, resource, instance,
                         ["balance_movements", "ledger_currency_totals", "reconciliation_report"], "2026-11-01")
    assert result.success
    rows = len(expected_snapshot(adversarial_url, dt.datetime(2026, 11, 2, 5)))
    moves = metadata_of(result, "balance_movements")
    assert moves["dagster/row_count"] == rows and moves["opening_source"] == "balance_snapshots 2026-10-31"
    assert moves["legs"] > 0 and os.path.exists(moves["path"])
    sums = metadata_of(result, "ledger_currency_totals")
    assert sums["dagster/row_count"] == 12 and sums["balances"] == rows
    assert isinstance(sums["ldg_customers/USD balance_sum"], float)
    assert isinstance(sums["ldg_treasury/EUR balances"], int)
    assert len(sums["totals"].records) == 12
    drift = metadata_of(result, "reconciliation_report")
    assert drift["drifting_balances"] == 0 and drift["balances_checked"] == 1500
    check = result.get_asset_check_evaluations()[0]
    assert check.check_name == NO_DRIFT_CHECK and check.passed

    snapshot_days(defs, instance, *[f"2026-10-{d}" for d in range(25, 31)])
    month = materialize(defs, resource, instance, ["month_end_balances"], "2026-10-01")
    assert month.success
    meta = metadata_of(month, "month_end_balances")
    assert meta["snapshot_date"] == "2026-10-31" and meta["cutoff"] == "2026-11-01T04:00:00Z"
    assert os.path.exists(meta["csv_path"]) and os.path.exists(meta["path"])
    table = catalog.read_partition(settings, dt.date(2026, 10, 31))
    assert meta["dagster/row_count"] == table.num_rows
    expected = expected_snapshot(adversarial_url, dt.datetime(2026, 11, 1, 4))
    assert sum(v["balance"] for v in expected.values()) == sum(
        int(v) for v in meta["balance_by_currency"].values())
    assert set(AMOUNTS) <= set(table.column_names)
    partitions = instance.get_materialized_partitions(MONTH_END)
    assert partitions == {"2026-10-01"}


def test_a_report_whose_snapshot_is_missing_fails_clearly(setup):
    _, defs, resource, instance = setup
    with pytest.raises(dg.Failure, match="needs balance_snapshots 2026-11-02"):
        materialize(defs, resource, instance, ["ledger_currency_totals"], "2026-11-02")


def test_monthly_report_is_not_requested_before_its_last_day_exists(setup):
    """The automation condition, evaluated for real: month_end_balances waits for the month's last day."""
    _, defs, resource, instance = setup
    month_end = dg.AssetSelection.assets(MONTH_END)

    def evaluate(cursor=None):
        return dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=month_end,
                                                 evaluation_time=NOVEMBER_10, cursor=cursor)

    result = evaluate()
    assert result.get_requested_partitions(MONTH_END) == set()
    # Every day of October that is a partition (from the start date, 10-25) but the last one.
    snapshot_days(defs, instance, *[f"2026-10-{d}" for d in range(25, 31)])
    result = evaluate(result.cursor)
    assert result.get_requested_partitions(MONTH_END) == set()
    # November's days exist too: still no month-end for October, and none for November (not closed).
    snapshot_days(defs, instance, "2026-11-01", "2026-11-02")
    result = evaluate(result.cursor)
    assert result.total_requested == 0
    snapshot_days(defs, instance, "2026-10-31")
    result = evaluate(result.cursor)
    assert result.get_requested_partitions(MONTH_END) == {"2026-10-01"}
    # once materialized, it is not requested again until a snapshot of the month changes
    assert materialize(defs, resource, instance, ["month_end_balances"], "2026-10-01").success
    result = evaluate(result.cursor)
    assert result.total_requested == 0
    snapshot_days(defs, instance, "2026-10-31")  # repaired / re-materialized
    result = evaluate(result.cursor)
    assert result.get_requested_partitions(MONTH_END) == {"2026-10-01"}


def test_daily_reports_are_requested_for_the_snapshotted_days(setup):
    """Snapshots taken before automation is first evaluated (make demo, then make ui) still get their reports."""
    settings, defs, resource, instance = setup
    daily = dg.AssetSelection.assets("balance_movements", "ledger_currency_totals", "reconciliation_report")
    now = dt.datetime(2026, 11, 4, 12, tzinfo=dt.UTC)  # 11-03 is the latest closed day in New York

    def evaluate(cursor=None):
        return dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=daily,
                                                 evaluation_time=now, cursor=cursor)

    snapshot_days(defs, instance, "2026-11-01", "2026-11-02", "2026-11-03")
    result = evaluate()
    # movements need D-1 too: 11-01's predecessor (10-31) is a partition that is missing
    assert result.get_requested_partitions(dg.AssetKey("balance_movements")) == {"2026-11-02", "2026-11-03"}
    assert result.get_requested_partitions(dg.AssetKey("ledger_currency_totals")) == {
        "2026-11-01", "2026-11-02", "2026-11-03"}
    # reconciliation: the latest day only
    assert result.get_requested_partitions(dg.AssetKey("reconciliation_report")) == {"2026-11-03"}
    # A report run that fails (its snapshot file was lost) is not requested again on every tick.
    parquet.delete_partition(Store.at(settings.storage_uri), dt.date(2026, 11, 3))
    failed = dg.materialize(list(defs.assets), selection=["ledger_currency_totals"], partition_key="2026-11-03",
                            instance=instance, resources={"snapshot_store": resource}, raise_on_error=False)
    assert not failed.success
    result = evaluate(result.cursor)
    assert result.get_requested_partitions(dg.AssetKey("ledger_currency_totals")) == {"2026-11-01", "2026-11-02"}
    # ... until the snapshot is materialized again
    snapshot_days(defs, instance, "2026-11-03")
    result = evaluate(result.cursor)
    assert "2026-11-03" in result.get_requested_partitions(dg.AssetKey("ledger_currency_totals"))


def test_reports_sensor_targets_the_reports_and_runs_by_default(setup):
    _, defs, _, _ = setup
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    keys = sensor.asset_selection.resolve(defs.resolve_asset_graph())
    assert {k.to_user_string() for k in keys} == {
        "balance_movements", "ledger_currency_totals", "month_end_balances", "reconciliation_report"}
    assert ASSET_NAME not in {k.to_user_string() for k in keys}
