"""Asset checks run for real in Dagster: pass on good data, fail on data corrupted on purpose."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from snapshot_pipeline.definitions import build_definitions
from snapshot_pipeline.defs.assets import ASSET_NAME
from snapshot_pipeline.defs.jobs import SNAPSHOT_JOB
from snapshot_pipeline.defs.resources import SnapshotStoreResource
from snapshot_pipeline.ledger import generator
from snapshot_pipeline.store import parquet as store
from tests.conftest import make_settings
from tests.helpers import insert_transaction

D1, D2 = "2026-10-30", "2026-10-31"
ERROR_CHECKS = {"row_count_matches_ledger", "balance_equals_credit_minus_debit", "parquet_matches_index",
                "sampled_recomputation_matches"}
WARN_CHECKS = {"double_entry_per_currency", "live_balances_match"}


class Setup:
    def __init__(self, url: str, storage, instance):
        self.url = url
        self.settings = make_settings(url, storage)
        resource = SnapshotStoreResource(ledger_database_url=url, snapshot_database_url=url,
                                         storage_uri=self.settings.storage_uri)
        self.defs = build_definitions(self.settings, resource)
        self.instance = instance
        self.job = self.defs.resolve_job_def(SNAPSHOT_JOB)

    def materialize(self, partition: str):
        return self.job.execute_in_process(partition_key=partition, instance=self.instance, raise_on_error=False,
                                           run_config=self.sample_config(10_000))

    @staticmethod
    def sample_config(k: int, seed: int = 7) -> dict:
        return {"ops": {f"{ASSET_NAME}_sampled_recomputation_matches": {"config": {"sample_size": k, "seed": seed}}}}

    def checks(self, partition: str, names=None, sample_size: int = 10_000):
        """Run only the checks (no materialization) on one partition; returns (result, {name: evaluation})."""
        keys = {key for key in self.defs.resolve_asset_graph().asset_check_keys
                if key.asset_key == dg.AssetKey(ASSET_NAME) and (names is None or key.name in names)}
        subset = self.job.get_subset(asset_selection=set(), asset_check_selection=keys)
        config = self.sample_config(sample_size) if any(k.name == "sampled_recomputation_matches" for k in keys) \
            else None
        result = subset.execute_in_process(partition_key=partition, instance=self.instance, raise_on_error=False,
                                           run_config=config)
        return result, evaluations(result)


def evaluations(result) -> dict:
    return {e.event_specific_data.check_name: e.event_specific_data
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def meta(evaluation) -> dict:
    return {k: v.value for k, v in evaluation.metadata.items()}


@pytest.fixture
def setup(fresh_ledger, tmp_path):
    with dg.instance_for_test() as instance:
        s = Setup(fresh_ledger, tmp_path / "store", instance)
        for partition in (D1, D2):
            assert s.materialize(partition).success
        yield s


def rewrite_parquet(settings, partition: str, change) -> str:
    """Replace the partition's Parquet file by ``change(table)`` (same schema and metadata); returns a balance id."""
    path = store.partition_file(settings.storage_uri, dt.date.fromisoformat(partition))
    table = pq.read_table(path)
    new_table, balance_id = change(table)
    pq.write_table(new_table.replace_schema_metadata(table.schema.metadata), path, compression="zstd")
    return balance_id


def test_checks_run_with_every_materialization_and_pass_on_good_data(setup):
    result = setup.materialize(D2)
    assert result.success
    evals = evaluations(result)
    assert set(evals) == ERROR_CHECKS | WARN_CHECKS
    for name in ERROR_CHECKS:
        assert evals[name].passed, (name, evals[name].description)
        assert evals[name].blocking and evals[name].severity == dg.AssetCheckSeverity.ERROR
        assert evals[name].partition == D2
    live = evals["live_balances_match"]
    assert live.passed and live.severity == dg.AssetCheckSeverity.WARN
    assert meta(live)["drifting_balances"] == 0 and meta(live)["evaluated"] == 1
    m = meta(evals["parquet_matches_index"])
    assert m["index_rows_missing"] == m["index_rows_unexpected"] == 0 and m["checksum_matches"] == 1
    assert meta(evals["sampled_recomputation_matches"])["sampled"] == m["parquet_rows"]  # k >= rows: all of them
    # numbers are numeric metadata (they plot in the UI)
    assert isinstance(evals["row_count_matches_ledger"].metadata["parquet_rows"], dg.IntMetadataValue)
    # the live check only evaluates the latest partition
    _, older = setup.checks(D1, {"live_balances_match"})
    assert older["live_balances_match"].passed and meta(older["live_balances_match"])["evaluated"] == 0


def test_one_wrong_amount_fails_the_error_checks_and_blocks(setup):
    def corrupt(table):
        position = 100
        balance_id = table["balance_id"][position].as_py()
        balance = table["balance"].to_pylist()
        balance[position] += 1
        column = table.schema.get_field_index("balance")
        return table.set_column(column, table.schema.field("balance"), pa.array(balance, store.AMOUNT)), balance_id

    wrong = rewrite_parquet(setup.settings, D2, corrupt)
    result, evals = setup.checks(D2)
    assert not result.success  # a blocking ERROR check failed
    identity = evals["balance_equals_credit_minus_debit"]
    assert not identity.passed and meta(identity)["rows_violating"] == 1
    assert meta(identity)["violating_balance_ids"] == [wrong]
    agree = evals["parquet_matches_index"]
    assert not agree.passed and meta(agree)["checksum_matches"] == 0
    assert meta(agree)["index_rows_missing"] == 1 and meta(agree)["differing_balance_ids"] == [wrong]
    sampled = evals["sampled_recomputation_matches"]
    assert not sampled.passed and meta(sampled)["mismatching_balance_ids"] == [wrong]
    assert meta(sampled)["mismatches_from_late_rows"] == 0
    assert evals["row_count_matches_ledger"].passed


def test_one_missing_row_fails_row_count(setup):
    def drop_row(table):
        balance_id = table["balance_id"][5].as_py()
        return table.filter(pc.not_equal(table["balance_id"], balance_id)), balance_id

    rewrite_parquet(setup.settings, D2, drop_row)
    result, evals = setup.checks(D2, {"row_count_matches_ledger", "parquet_matches_index"})
    assert not result.success
    count = meta(evals["row_count_matches_ledger"])
    assert not evals["row_count_matches_ledger"].passed
    assert count["missing_rows"] == 1 and count["parquet_rows"] == count["ledger_balances_at_cutoff"] - 1
    assert not evals["parquet_matches_index"].passed


def test_a_wrong_index_row_fails_parquet_matches_index(setup):
    with psycopg.connect(setup.url) as conn:
        balance_id = conn.execute(
            "SELECT balance_id FROM snapshot_index.balance_snapshots WHERE snapshot_date = %s ORDER BY 1 LIMIT 1",
            (dt.date.fromisoformat(D2),)).fetchone()[0]
        conn.execute("UPDATE snapshot_index.balance_snapshots SET balance = balance + 1"
                     " WHERE balance_id = %s AND snapshot_date = %s", (balance_id, dt.date.fromisoformat(D2)))
    result, evals = setup.checks(D2, {"parquet_matches_index"})
    agree = evals["parquet_matches_index"]
    assert not result.success and not agree.passed
    m = meta(agree)
    assert m["checksum_matches"] == 1  # the file is fine; the index is not
    assert (m["index_rows_missing"], m["index_rows_unexpected"]) == (1, 1)
    assert m["differing_balance_ids"] == [balance_id]


def test_live_balance_drift_is_a_warning_naming_the_balance(setup):
    with psycopg.connect(setup.url) as conn:
        balance_id = conn.execute("SELECT balance_id FROM blnk.balances WHERE created_at < '2026-10-31'"
                                  " ORDER BY balance_id OFFSET 3 LIMIT 1").fetchone()[0]
        conn.execute("UPDATE blnk.balances SET credit_balance = credit_balance + 7, balance = balance + 7"
                     " WHERE balance_id = %s", (balance_id,))
    result, evals = setup.checks(D2, {"live_balances_match"})
    live = evals["live_balances_match"]
    assert result.success  # WARN does not fail the run
    assert not live.passed and live.severity == dg.AssetCheckSeverity.WARN
    m = meta(live)
    assert m["drifting_balances"] == 1 and m["drifting_balance_ids"] == [balance_id]
    assert m["total_absolute_balance_drift"] == 7


def test_stale_partition_fails_sampled_recomputation_explained_by_late_rows(setup):
    with psycopg.connect(setup.url) as conn:
        source, destination = [r[0] for r in conn.execute(
            "SELECT balance_id FROM blnk.balances WHERE currency = 'USD' AND created_at < '2026-10-01'"
            " ORDER BY balance_id LIMIT 2")]
    insert_transaction(setup.url, source, destination, 5000, created_at=dt.datetime(2026, 11, 20),
                       effective_date=dt.datetime(2026, 10, 31, 12))
    _, evals = setup.checks(D2, {"sampled_recomputation_matches"})
    sampled = evals["sampled_recomputation_matches"]
    assert not sampled.passed
    m = meta(sampled)
    assert sorted(m["mismatching_balance_ids"]) == sorted([source, destination])
    assert m["mismatches_from_late_rows"] == 2


def test_sample_size_is_configurable(setup):
    result, evals = setup.checks(D2, {"sampled_recomputation_matches"}, sample_size=3)
    assert result.success and meta(evals["sampled_recomputation_matches"])["sampled"] == 3


# ------------------------------------------------------------------------------------ double entry (WARN)


def clean_ledger(url: str) -> None:
    """A small ledger where every leg is between balances that exist before it: double entry holds."""
    with psycopg.connect(url, autocommit=True) as conn:
        generator.create_schema(conn)
        conn.execute("INSERT INTO blnk.ledgers (ledger_id, name) VALUES ('ldg_main', 'main')")
        for name, currency in [("bal_a", "USD"), ("bal_b", "USD"), ("bal_c", "USD"), ("bal_e", "EUR"),
                               ("bal_f", "EUR")]:
            conn.execute("INSERT INTO blnk.balances (balance_id, currency, ledger_id, created_at)"
                         " VALUES (%s, %s, 'ldg_main', '2026-10-01')", (name, currency))
    for source, destination, amount, currency in [("bal_a", "bal_b", 1000, "USD"), ("bal_b", "bal_c", 300, "USD"),
                                                  ("bal_c", "bal_a", 50, "USD"), ("bal_e", "bal_f", 10**30, "EUR")]:
        insert_transaction(url, source, destination, amount, created_at=dt.datetime(2026, 10, 30, 12),
                           currency=currency)
    with psycopg.connect(url) as conn:  # live rows the way Blnk keeps them: every APPLIED leg counted
        conn.execute(
            "UPDATE blnk.balances b SET"
            " credit_balance = (SELECT COALESCE(sum(precise_amount), 0) FROM blnk.transactions"
            "                   WHERE destination = b.balance_id AND status = 'APPLIED'),"
            " debit_balance = (SELECT COALESCE(sum(precise_amount), 0) FROM blnk.transactions"
            "                  WHERE source = b.balance_id AND status = 'APPLIED')")
        conn.execute("UPDATE blnk.balances SET balance = credit_balance - debit_balance")


def test_double_entry_passes_on_a_balanced_ledger_and_warns_with_the_imbalance(make_database, tmp_path):
    url = make_database()
    clean_ledger(url)
    with dg.instance_for_test() as instance:
        s = Setup(url, tmp_path / "store", instance)
        result = s.materialize(D1)
        assert result.success
        evals = evaluations(result)
        assert all(e.passed for e in evals.values()), {n: e.description for n, e in evals.items() if not e.passed}
        assert meta(evals["double_entry_per_currency"])["currencies"] == 2
        # a leg from a balance that is not in blnk.balances: money appears from nowhere in USD
        insert_transaction(url, "bal_ghost", "bal_a", 777, created_at=dt.datetime(2026, 10, 31, 9))
        result = s.materialize(D2)
        assert result.success  # WARN: the ledger is wrong, not the snapshot
        double = evaluations(result)["double_entry_per_currency"]
        assert not double.passed and double.severity == dg.AssetCheckSeverity.WARN
        m = meta(double)
        assert m["unbalanced_currencies"] == 1 and m["total_absolute_imbalance"] == 777
        assert {r["currency"]: r["imbalance"] for r in m["per_currency"]} == {"EUR": "0", "USD": "777"}
        assert "USD (credit − debit = 777)" in double.description
