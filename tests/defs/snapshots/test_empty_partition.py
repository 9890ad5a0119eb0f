"""An empty partition (0 balances: a day before the ledger's first row), run for real through Dagster.

The snapshot job (asset and every check) must succeed, and every report asset must materialize an
empty, typed partition. The ledger's oldest rows are 60 days before its 2026-10-25 start: July 2026
holds no balance.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from snapshot_pipeline import snapshot
from snapshot_pipeline.definitions import build_definitions
from snapshot_pipeline.defs.snapshots.jobs import SNAPSHOT_JOB
from tests.conftest import make_settings, store_resource_for
from tests.defs.snapshots.test_checks import ERROR_CHECKS, WARN_CHECKS, evaluations

EMPTY = ["2026-07-30", "2026-07-31"]


@pytest.fixture
def setup(adversarial_url, make_database, tmp_path):
    index_url = make_database()
    settings = make_settings(adversarial_url, tmp_path / "store", start="2026-07-01", index_url=index_url)
    resource = store_resource_for(settings)
    with dg.instance_for_test() as instance:
        yield settings, build_definitions(settings, resource), resource, instance


def test_empty_partition_run_succeeds_with_every_check_passing(setup):
    _, defs, _, instance = setup
    result = defs.resolve_job_def(SNAPSHOT_JOB).execute_in_process(partition_key=EMPTY[-1], instance=instance,
                                                                   raise_on_error=False)
    found = evaluations(result)
    assert set(found) == ERROR_CHECKS | WARN_CHECKS
    assert all(e.passed for e in found.values()), {k: e.passed for k, e in found.items()}
    assert result.success


def test_every_report_asset_materializes_an_empty_partition(setup):
    settings, defs, resource, instance = setup
    for day in EMPTY:
        assert snapshot.take_snapshot(settings, dt.date.fromisoformat(day)).rows == 0
    for selection, partition in ((["balance_movements", "ledger_currency_totals", "reconciliation_report"], EMPTY[-1]),
                                 (["month_end_balances"], "2026-07-01")):
        result = dg.materialize(list(defs.assets), selection=selection, partition_key=partition, instance=instance,
                                resources={"snapshot_store": resource})
        assert result.success
        for name in selection:
            event = result.asset_materializations_for_node(name)[0]
            assert event.metadata["dagster/row_count"].value == 0
