"""Asset checks run for real in Dagster: pass on good data, fail on data corrupted on purpose."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from snapshot_pipeline.defs.maintenance.jobs import AUDIT_JOB
from snapshot_pipeline.defs.snapshots.assets import ASSET_NAME
from snapshot_pipeline.defs.snapshots.jobs import SNAPSHOT_JOB
from snapshot_pipeline.ledger import generator
from snapshot_pipeline.store import catalog, parquet
from tests.conftest import definitions_for, make_settings
from tests.helpers import insert_transaction

D1, D2 = "2026-10-30", "2026-10-31"
ERROR_CHECKS = {"row_count_matches_ledger", "balance_equals_credit_minus_debit", "double_entry_per_currency",
                "parquet_matches_manifest", "sampled_recomputation_matches"}
WARN_CHECKS = {"live_balances_match"}
AUDIT = "parquet_matches_index"  # the audit asset's check: its own job, not part of the snapshot runs


class Setup:
    def __init__(self, url: str, storage, instance):
        self.url = url
        self.settings = make_settings(url, storage)
        self.defs = definitions_for(self.settings)
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

    def audit(self, partition: str):
        """Materialize the audit asset of one partition (its own job); returns (result, {name: evaluation})."""
        result = self.defs.resolve_job_def(AUDIT_JOB).execute_in_process(
            partition_key=partition, instance=self.instance, raise_on_error=False)
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
    path = catalog.paths(settings, dt.date.fromisoformat(partition))[0]
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
    assert meta(live)["drifting_balances"] == 0 and meta(live)["evaluated"] is True
    m = meta(evals["parquet_matches_manifest"])
    assert m["checksum_matches"] is True and m["index_rows"] == m["manifest_index_rows"]
    assert meta(evals["sampled_recomputation_matches"])["sampled"] == m["parquet_rows"]  # k >= rows: all of them
    double = meta(evals["double_entry_per_currency"])
    assert double["unbalanced_currencies"] == 0 and double["currencies"] >= 2
    assert {r["imbalance"] for r in (rec.data for rec in double["per_currency"].records)} == {"0"}
    # numbers are numeric metadata (they plot in the UI); flags and settings are not
    assert isinstance(evals["row_count_matches_ledger"].metadata["parquet_rows"], dg.IntMetadataValue)
    assert isinstance(evals["parquet_matches_manifest"].metadata["checksum_matches"], dg.BoolMetadataValue)
    # the diff audit is its own job: two full reads, not in every snapshot run
    _, audit = setup.audit(D2)
    a = meta(audit[AUDIT])
    assert audit[AUDIT].passed and a["index_rows_missing"] == a["index_rows_unexpected"] == 0
    assert audit[AUDIT].partition == D2  # recorded per partition, like the in-run checks
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
        return table.set_column(column, table.schema.field("balance"), pa.array(balance, parquet.AMOUNT)), balance_id

    wrong = rewrite_parquet(setup.settings, D2, corrupt)
    result, evals = setup.checks(D2)
    assert not result.success  # a blocking ERROR check failed
    identity = evals["balance_equals_credit_minus_debit"]
    assert not identity.passed and meta(identity)["rows_violating"] == 1
    assert meta(identity)["violating_balance_ids"] == [wrong]
    assert not evals["parquet_matches_manifest"].passed
    assert meta(evals["parquet_matches_manifest"])["checksum_matches"] is False
    _, audit = setup.audit(D2)
    agree = audit[AUDIT]
    assert not agree.passed and meta(agree)["checksum_matches"] is False
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
    result, evals = setup.checks(D2, {"row_count_matches_ledger", "parquet_matches_manifest"})
    assert not result.success
    count = meta(evals["row_count_matches_ledger"])
    assert not evals["row_count_matches_ledger"].passed
    assert count["missing_rows"] == 1
    assert count["parquet_rows"] == count["ledger_balances_at_cutoff"] - 1 + count["rows_created_after_cutoff"]
    assert not evals["parquet_matches_manifest"].passed
    _, audit = setup.audit(D2)
    assert not audit[AUDIT].passed


def test_a_wrong_index_row_fails_parquet_matches_index(setup):
    with psycopg.connect(setup.url) as conn:
        balance_id = conn.execute(
            "SELECT balance_id FROM snapshot_index.balance_snapshots WHERE snapshot_date = %s ORDER BY 1 LIMIT 1",
            (dt.date.fromisoformat(D2),)).fetchone()[0]
        conn.execute("UPDATE snapshot_index.balance_snapshots SET balance = balance + 1"
                     " WHERE balance_id = %s AND snapshot_date = %s", (balance_id, dt.date.fromisoformat(D2)))
    result, evals = setup.audit(D2)
    agree = evals[AUDIT]
    assert not result.success and not agree.passed
    m = meta(agree)
    assert m["checksum_matches"] is True  # the file is fine; the index is not
    assert (m["index_rows_missing"], m["index_rows_unexpected"]) == (1, 1)
    assert m["differing_balance_ids"] == [balance_id]


def test_live_balance_drift_is_a_warning_naming_the_balance(setup):
    with psycopg.connect(setup.url) as conn:  # a balance that changed in D2 (an index row of the partition)
        balance_id = conn.execute("SELECT balance_id FROM snapshot_index.balance_snapshots WHERE snapshot_date = %s"
                                  " ORDER BY balance_id OFFSET 3 LIMIT 1", (dt.date.fromisoformat(D2),)).fetchone()[0]
        conn.execute("UPDATE blnk.balances SET credit_balance = credit_balance + 7, balance = balance + 7"
                     " WHERE balance_id = %s", (balance_id,))
    result, evals = setup.checks(D2, {"live_balances_match"})
    live = evals["live_balances_match"]
    assert result.success  # WARN does not fail the run
    assert not live.passed and live.severity == dg.AssetCheckSeverity.WARN
    m = meta(live)
    assert m["drifting_balances"] == 1 and m["drifting_balance_ids"] == [balance_id]
    assert m["total_absolute_balance_drift"] == 7


def test_the_live_check_reports_the_runs_own_comparison_while_the_partition_is_that_publication(setup):
    with psycopg.connect(setup.url) as conn:  # a drift the run's own view sees
        balance_id = conn.execute("SELECT balance_id FROM snapshot_index.balance_snapshots WHERE snapshot_date = %s"
                                  " ORDER BY balance_id OFFSET 5 LIMIT 1", (dt.date.fromisoformat(D2),)).fetchone()[0]
        conn.execute("UPDATE blnk.balances SET credit_balance = credit_balance + 9, balance = balance + 9"
                     " WHERE balance_id = %s", (balance_id,))
    result = setup.materialize(D2)
    assert result.success
    materialized = result.asset_materializations_for_node(ASSET_NAME)[0].metadata
    assert materialized["live_drift"].value["drifting_balance_ids"] == [balance_id]
    live = evaluations(result)["live_balances_match"]
    m = meta(live)
    assert not live.passed and m["compared_in"] == "run" and m["drifting_balance_ids"] == [balance_id]
    assert m["total_absolute_balance_drift"] == 9 and m["balances_compared"] == meta_of(result)["balances_changed"]
    # the check alone, from the Checks tab: compared now, in a new view (the live row repaired meanwhile)
    with psycopg.connect(setup.url) as conn:
        conn.execute("UPDATE blnk.balances SET credit_balance = credit_balance - 9, balance = balance - 9"
                     " WHERE balance_id = %s", (balance_id,))
    _, alone = setup.checks(D2, {"live_balances_match"})
    assert alone["live_balances_match"].passed and meta(alone["live_balances_match"])["compared_in"] == "check"
    # a run without the live check does not compare
    quiet = setup.job.get_subset(asset_selection={dg.AssetKey(ASSET_NAME)}, asset_check_selection=set())
    done = quiet.execute_in_process(partition_key=D2, instance=setup.instance)
    assert "live_drift" not in done.asset_materializations_for_node(ASSET_NAME)[0].metadata


def meta_of(result) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(ASSET_NAME)[0].metadata.items()}


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


def test_double_entry_passes_on_a_balanced_ledger_and_blocks_with_the_imbalance(make_database, tmp_path):
    url = make_database()
    clean_ledger(url)
    with dg.instance_for_test() as instance:
        s = Setup(url, tmp_path / "store", instance)
        result = s.materialize(D1)
        assert result.success
        evals = evaluations(result)
        assert all(e.passed for e in evals.values()), {n: e.description for n, e in evals.items() if not e.passed}
        assert meta(evals["double_entry_per_currency"])["currencies"] == 2
        assert s.materialize(D2).success

        def unbalance(table):  # +777 on one USD row's credit and balance: identity holds, double entry does not
            position = table["balance_id"].to_pylist().index("bal_a")
            for name in ("credit_balance", "balance"):
                values = table[name].to_pylist()
                values[position] += 777
                column = table.schema.get_field_index(name)
                table = table.set_column(column, table.schema.field(name), pa.array(values, parquet.AMOUNT))
            return table, "bal_a"

        rewrite_parquet(s.settings, D2, unbalance)
        result, evals = s.checks(D2, {"double_entry_per_currency", "balance_equals_credit_minus_debit"})
        assert not result.success  # blocking ERROR: a snapshot that does not balance is wrong
        assert evals["balance_equals_credit_minus_debit"].passed
        double = evals["double_entry_per_currency"]
        assert not double.passed and double.severity == dg.AssetCheckSeverity.ERROR and double.blocking
        m = meta(double)
        assert m["unbalanced_currencies"] == 1 and m["total_absolute_imbalance"] == 777
        per_currency = {r.data["currency"]: r.data for r in m["per_currency"].records}
        assert {c: r["imbalance"] for c, r in per_currency.items()} == {"EUR": "0", "USD": "777"}
        assert per_currency["USD"]["balance"] == "777" and per_currency["EUR"]["credit"] == str(10**30)
        assert "USD (credit − debit = 777, Σ balance = 777)" in double.description


# ------------------------------------------------------------------------------------------ empty partition


def test_every_check_passes_on_an_empty_partition(make_database, tmp_path):
    """A day before any balance exists: 0 rows; every check evaluates (no crash) and passes."""
    url = make_database()
    with psycopg.connect(url, autocommit=True) as conn:
        generator.create_schema(conn)
        conn.execute("INSERT INTO blnk.ledgers (ledger_id, name) VALUES ('ldg_main', 'main')")
        conn.execute("INSERT INTO blnk.balances (balance_id, currency, ledger_id, created_at)"
                     " VALUES ('bal_later', 'USD', 'ldg_main', '2026-11-15')")
    with dg.instance_for_test() as instance:
        s = Setup(url, tmp_path / "store", instance)
        result = s.materialize(D1)
        assert result.success
        evals = evaluations(result)
        assert set(evals) == ERROR_CHECKS | WARN_CHECKS
        assert all(e.passed for e in evals.values()), {n: e.description for n, e in evals.items() if not e.passed}
        assert meta(evals["row_count_matches_ledger"])["parquet_rows"] == 0
        assert meta(evals["sampled_recomputation_matches"])["sampled"] == 0
        assert meta(evals["double_entry_per_currency"])["currencies"] == 0
        assert meta(evals["live_balances_match"])["balances_compared"] == 0
        _, audit = s.audit(D1)
        assert audit[AUDIT].passed, audit[AUDIT].description


# ------------------------------------------------------------------------------------------------- cost shape


def test_in_run_checks_follow_the_days_activity_not_the_ledgers_size(setup):
    """Cost shape, not time: the live-drift check compares exactly the partition's changed balances (its index
    rows), the sample is bounded, the diff audit is not in the snapshot job, and the job runs in one process."""
    with psycopg.connect(setup.url) as conn:
        changed = conn.execute("SELECT index_rows, row_count FROM snapshot_index.partitions WHERE snapshot_date = %s",
                               (dt.date.fromisoformat(D2),)).fetchone()
    result = setup.job.execute_in_process(partition_key=D2, instance=setup.instance, raise_on_error=False)
    evals = evaluations(result)
    assert result.success and AUDIT not in evals
    live = meta(evals["live_balances_match"])
    assert live["balances_compared"] == changed[0] < changed[1]  # the day's changes, not every balance
    assert meta(evals["sampled_recomputation_matches"])["sampled"] == 20  # the default k
    assert setup.job.executor_def.name == "in_process"
    check_steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert len(check_steps) == 4  # the asset, the file checks (one pass), the sample, the drift
    too_big = setup.job.execute_in_process(partition_key=D2, instance=setup.instance, raise_on_error=False,
                                           run_config=setup.sample_config(10_001))
    assert not too_big.success  # k is bounded (MAX_SAMPLE_SIZE)


def test_a_balance_deleted_after_its_legs_keeps_its_row_and_passes_row_count(setup):
    """The contract gives a row to every balance a counted leg touches, also one whose ledger row is gone; the
    blocking row-count check agrees (it used to count ledger rows only and fail the run on a correct partition)."""
    with psycopg.connect(setup.url, autocommit=True) as conn:
        # a balance with legs, none dated on D2: D2 carries D1's row for it, with its created_at
        gone = conn.execute(
            "SELECT b.balance_id FROM blnk.balances b WHERE b.created_at < %(d1)s"
            " AND EXISTS (SELECT 1 FROM blnk.transactions t WHERE t.source = b.balance_id)"
            " AND NOT EXISTS (SELECT 1 FROM blnk.transactions t WHERE b.balance_id IN (t.source, t.destination)"
            "                 AND COALESCE(t.effective_date, t.created_at) >= %(d1)s"
            "                 AND COALESCE(t.effective_date, t.created_at) < %(d2)s)"
            " ORDER BY b.balance_id LIMIT 1", {"d1": dt.datetime(2026, 10, 31), "d2": dt.datetime(2026, 11, 1)}
        ).fetchone()[0]
        conn.execute("DELETE FROM blnk.balances WHERE balance_id = %s", (gone,))
    result = setup.materialize(D2)  # rolled forward from D1, which has its row
    assert result.success
    evals = evaluations(result)
    count = meta(evals["row_count_matches_ledger"])
    assert evals["row_count_matches_ledger"].passed, count
    assert count["missing_rows"] == 0 and count["rows_without_ledger_row"] == 1, count
