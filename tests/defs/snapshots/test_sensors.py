"""Repair and gap-filling sensors, evaluated for real and their run requests executed."""

from __future__ import annotations

import datetime as dt
import time

import dagster as dg
import psycopg
import pytest

from snapshot_pipeline import calendar, snapshot
from snapshot_pipeline.definitions import build_definitions
from snapshot_pipeline.defs.common.partitions import daily_partitions
from snapshot_pipeline.defs.snapshots.assets import DAYS_PER_BACKFILL_RUN
from snapshot_pipeline.defs.snapshots.gaps import ledger_first_day, missing_days
from snapshot_pipeline.defs.snapshots.jobs import SNAPSHOT_JOB
from snapshot_pipeline.defs.snapshots.sensors import GAP_SENSOR, REPAIR_SENSOR, build_gap_sensor
from snapshot_pipeline.ledger import generator
from snapshot_pipeline.quality import lateness
from snapshot_pipeline.store import catalog
from tests.conftest import make_settings, store_resource_for
from tests.helpers import index_values, insert_transaction, two_balances
from tests.oracle import expected_snapshot, snapshot_values

UTC = dt.UTC


def day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


class Harness:
    """Definitions, a real test instance, and helpers to tick sensors and run what they request."""

    def __init__(self, settings, instance, sensor_factory=None):
        self.settings = settings
        self.resource = store_resource_for(settings)
        self.defs = build_definitions(settings, self.resource)
        if sensor_factory is not None:  # the same definitions, with one sensor replaced (e.g. a fixed clock)
            sensor = sensor_factory(next(j for j in self.defs.jobs if j.name == SNAPSHOT_JOB))
            self.defs = dg.Definitions(
                assets=self.defs.assets, asset_checks=self.defs.asset_checks, jobs=self.defs.jobs,
                sensors=[sensor, *(s for s in self.defs.sensors if s.name != sensor.name)],
                resources=self.defs.resources,
            )
        self.instance = instance
        self.job = self.defs.resolve_job_def(SNAPSHOT_JOB)
        self.cursors: dict[str, str | None] = {}

    def tick(self, name: str):
        sensor = self.defs.resolve_sensor_def(name)
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursors.get(name),
                                          definitions=self.defs, resources={"snapshot_store": self.resource},
                                          sensor_name=name)
        data = sensor.evaluate_tick(context)
        if data.cursor is not None:
            self.cursors[name] = data.cursor
        return data

    def execute(self, requests) -> list[str]:
        done = []
        for request in requests:
            if request.asset_graph_subset is not None:
                done.extend(self.execute_backfill(request))
                continue
            result = self.job.execute_in_process(
                partition_key=request.partition_key, instance=self.instance, raise_on_error=False,
                tags={**request.tags, "dagster/run_key": request.run_key or ""},
            )
            assert result.success, request.partition_key
            done.append(request.partition_key)
        return done


    def execute_backfill(self, request) -> list[str]:
        """Run a backfill request's days as the backfill daemon does: ranged runs of at most
        DAYS_PER_BACKFILL_RUN consecutive days (the asset's backfill policy), in process."""
        keys = sorted(key.partition_key for key in request.asset_graph_subset.iterate_asset_partitions())
        runs: list[list[str]] = []
        for key in keys:
            if runs and len(runs[-1]) < DAYS_PER_BACKFILL_RUN and day(key) - day(runs[-1][-1]) == dt.timedelta(1):
                runs[-1].append(key)
            else:
                runs.append([key])
        for days in runs:
            result = self.job.execute_in_process(
                instance=self.instance, raise_on_error=False,
                tags={**request.tags, "dagster/asset_partition_range_start": days[0],
                      "dagster/asset_partition_range_end": days[-1]},
            )
            assert result.success, days
        return keys


def requested(data) -> list[str]:
    """The partition keys a tick requested: of its runs, or of its backfill (the gap filler's one request)."""
    keys = []
    for request in data.run_requests or []:
        if request.asset_graph_subset is not None:
            keys.extend(sorted(key.partition_key for key in request.asset_graph_subset.iterate_asset_partitions()))
        else:
            keys.append(request.partition_key)
    return keys


def assert_exact(settings, url: str, date: dt.date) -> None:
    expected = expected_snapshot(url, calendar.cutoff(date, settings.timezone))
    got = snapshot_values(catalog.read_partition(settings, date))
    assert got == expected, f"{date}: Parquet differs from the journal"
    assert index_values(settings.snapshot_database_url, date, got) == got, f"{date}: index answers differ"


# --------------------------------------------------------------------------------------------- repair


def add_balance(url: str, balance_id: str, created_at: dt.datetime) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO blnk.balances (balance_id, currency, ledger_id, created_at)"
                     " VALUES (%s, 'USD', 'ldg_customers', %s)", (balance_id, created_at))


def test_repair_sensor_requests_exactly_the_affected_partitions_and_values_become_exact(fresh_ledger, tmp_path):
    settings = make_settings(fresh_ledger, tmp_path / "store")
    dates = [day(d) for d in ("2026-10-28", "2026-10-29", "2026-10-30", "2026-10-31", "2026-11-01")]
    for date in dates:
        snapshot.take_snapshot(settings, date, 500)
    with dg.instance_for_test() as instance:
        h = Harness(settings, instance)
        first = h.tick(REPAIR_SENSOR)
        assert requested(first) == [] and "no late rows" in first.skip_message
        h.tick(REPAIR_SENSOR)  # the journal position read by the first tick becomes final
        wait_until_finished(fresh_ledger, cursor_snapshot(h.cursors[REPAIR_SENSOR]))
        unchanged = h.tick(REPAIR_SENSOR)
        assert requested(unchanged) == [] and "journal unchanged" in unchanged.skip_message

        source, destination = two_balances(fresh_ledger)
        recorded = dt.datetime(2026, 11, 20, 9)
        # backdated into Oct 29 (late for every partition from Oct 29 on), late-applied on Oct 31,
        # a balance created on Oct 30 but added now, and a row dated after every cutoff (late for none)
        insert_transaction(fresh_ledger, source, destination, 12345, created_at=recorded,
                           effective_date=dt.datetime(2026, 10, 29, 12))
        insert_transaction(fresh_ledger, destination, source, 678, created_at=recorded,
                           effective_date=dt.datetime(2026, 10, 31, 23, 59, 59))
        add_balance(fresh_ledger, "bal_late_created", dt.datetime(2026, 10, 30, 6))
        insert_transaction(fresh_ledger, source, destination, 999, created_at=recorded,
                           effective_date=dt.datetime(2026, 11, 10))
        # a partition materialized after those rows saw them: not affected
        snapshot.take_snapshot(settings, day("2026-11-02"), 500)

        data = h.tick(REPAIR_SENSOR)
        assert requested(data) == ["2026-10-29", "2026-10-30", "2026-10-31", "2026-11-01"]  # earliest first
        keys = [r.run_key for r in data.run_requests]
        assert len(set(keys)) == 4 and all(k.startswith("late-repair:2026-") for k in keys)
        assert all(r.tags["snapshot_pipeline/trigger"] == "late_transaction_repair" for r in data.run_requests)
        for request in data.run_requests:
            assert lateness.staleness(settings, day(request.partition_key))  # stale indeed
        assert lateness.staleness(settings, day("2026-10-28")) == {}

        # more lateness before the repairs ran: the partitions already requested are not requested
        # twice; Nov 2 (whose read came before this row) is now affected too
        insert_transaction(fresh_ledger, source, destination, 4242, created_at=recorded,
                           effective_date=dt.datetime(2026, 10, 30, 8))
        again = h.tick(REPAIR_SENSOR)
        assert requested(again) == ["2026-11-02"]
        assert requested(h.tick(REPAIR_SENSOR)) == []
        insert_transaction(fresh_ledger, destination, source, 77, created_at=recorded,
                           effective_date=dt.datetime(2026, 10, 31, 5))  # late for requested ones only
        quiet = h.tick(REPAIR_SENSOR)
        assert requested(quiet) == [] and "already requested" in quiet.skip_message

        h.execute([*data.run_requests, *again.run_requests])
        for date in [*dates, day("2026-11-02")]:
            assert_exact(settings, fresh_ledger, date)
            assert lateness.staleness(settings, date) == {}
        after = h.tick(REPAIR_SENSOR)
        assert requested(after) == [] and "no late rows" in after.skip_message


def test_repair_scan_is_incremental(fresh_ledger, tmp_path):
    """An unchanged journal examines nothing; new rows are examined from the previous head only."""
    settings = make_settings(fresh_ledger, tmp_path / "store")
    for date in (day("2026-10-30"), day("2026-10-31")):
        snapshot.take_snapshot(settings, date, 1000)
    first = lateness.scan(settings, lateness.ScanState())
    assert first.examined and first.findings == []
    head = first.stats["head_transaction_id"]
    assert first.stats["rows_scanned_from"] == min(p.max_transaction_id for p in _partitions(settings))
    wait_until_finished(fresh_ledger, first.state.snapshot)
    settle = lateness.scan(settings, first.state)  # makes the first head final
    wait_until_finished(fresh_ledger, settle.state.snapshot)
    quiet = lateness.scan(settings, settle.state)
    assert not quiet.examined and quiet.stats["rows_scanned_from"] is None
    source, destination = two_balances(fresh_ledger)
    insert_transaction(fresh_ledger, source, destination, 1, created_at=dt.datetime(2026, 11, 20),
                       effective_date=dt.datetime(2026, 10, 31, 1))
    moved = lateness.scan(settings, quiet.state)
    assert moved.stats["rows_scanned_from"] == max(head - lateness.OVERLAP_IDS,
                                                   min(p.max_transaction_id for p in _partitions(settings)))
    assert [f.date for f in moved.new_requests] == [day("2026-10-31")]
    finding = moved.new_requests[0]
    assert finding.late_transactions == 1 and "dated before its cutoff 2026-11-01T00:00:00Z" in finding.reason()
    # the state survives a JSON round trip (it is the sensor cursor) and stays small
    text = moved.state.to_json()
    assert lateness.ScanState.from_json(text) == moved.state and len(text) < 2000
    assert lateness.scan(settings, lateness.ScanState.from_json(text)).new_requests == []


def _partitions(settings):
    from snapshot_pipeline import db
    from snapshot_pipeline.store import index

    with db.connect(settings.snapshot_database_url) as conn:
        return index.all_partitions(conn)


def wait_until_finished(url: str, pg_snapshot: str, limit_seconds: float = 120) -> None:
    """Wait until every transaction in flight at ``pg_snapshot`` has finished (other sessions of a shared
    server may hold one open for a while; xids are cluster-wide)."""
    deadline = time.monotonic() + limit_seconds
    with psycopg.connect(url, autocommit=True) as conn:
        while not lateness.finished(pg_snapshot, *lateness.activity(conn.cursor())[2:]):
            if time.monotonic() > deadline:
                pytest.skip("another session keeps a transaction open on the shared server")
            time.sleep(0.2)


def cursor_snapshot(cursor: str) -> str:
    return lateness.ScanState.from_json(cursor).snapshot


def test_repair_sensor_finds_rows_committed_out_of_id_order(fresh_ledger, tmp_path):
    settings = make_settings(fresh_ledger, tmp_path / "store")
    snapshot.take_snapshot(settings, day("2026-10-30"), 1000)
    with dg.instance_for_test() as instance:
        h = Harness(settings, instance)
        assert requested(h.tick(REPAIR_SENSOR)) == []
        source, destination = two_balances(fresh_ledger)
        slow = psycopg.connect(fresh_ledger)  # takes a lower id, commits after the partition's read
        slow.execute(
            "INSERT INTO blnk.transactions (transaction_id, source, destination, amount, precise_amount, precision,"
            " currency, status, created_at, effective_date) VALUES ('txn_slow', %s, %s, 1, 100, 100, 'USD',"
            " 'APPLIED', '2026-11-20', '2026-10-31 10:00')", (source, destination))
        insert_transaction(fresh_ledger, source, destination, 5, created_at=dt.datetime(2026, 11, 20),
                           effective_date=dt.datetime(2026, 11, 22))
        snapshot.take_snapshot(settings, day("2026-10-31"), 1000)
        slow.commit()
        slow.close()
        entry = next(p for p in _partitions(settings) if p.snapshot_date == day("2026-10-31"))
        wait_until_finished(fresh_ledger, entry.pg_snapshot)
        data = h.tick(REPAIR_SENSOR)
        assert requested(data) == ["2026-10-31"]  # Oct 30's cutoff is before the row: not affected
        finding = lateness.scan(settings, lateness.ScanState()).findings[0]
        assert finding.prefix_changed == 1 and "out of id order" in finding.reason()
        h.execute(data.run_requests)
        assert_exact(settings, fresh_ledger, day("2026-10-31"))
        assert lateness.staleness(settings, day("2026-10-31")) == {}


# ------------------------------------------------------------------------------------------ gap filling


def gap_harness(settings, instance, now: dt.datetime, **kwargs) -> Harness:
    partitions_def = daily_partitions(settings)
    return Harness(settings, instance, lambda job: build_gap_sensor(partitions_def, settings,
                                                                    clock=lambda: now, **kwargs))


def test_gap_filler_requests_exactly_the_holes_oldest_first(adversarial_url, make_database, tmp_path):
    settings = make_settings(adversarial_url, tmp_path / "store", start="2026-10-26", index_url=make_database())
    for date in (day("2026-10-27"), day("2026-10-30")):
        snapshot.take_snapshot(settings, date, 1000)
    now = dt.datetime(2026, 11, 4, 12, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        h = gap_harness(settings, instance, now, max_days_per_tick=4)
        data = h.tick(GAP_SENSOR)
        assert len(data.run_requests) == 1 and data.run_requests[0].requires_backfill_daemon()  # one backfill
        assert requested(data) == ["2026-10-26", "2026-10-28", "2026-10-29", "2026-10-31"]
        assert data.run_requests[0].tags["snapshot_pipeline/trigger"] == "gap_fill"
        h.execute(data.run_requests)
        # a snapshot run of Nov 1 is in progress (e.g. launched from the UI): not requested again
        running = instance.create_run_for_job(h.job, status=dg.DagsterRunStatus.STARTED,
                                             tags={"dagster/partition": "2026-11-01"})
        data = h.tick(GAP_SENSOR)
        assert requested(data) == ["2026-11-02", "2026-11-03"]
        h.execute(data.run_requests)
        instance.delete_run(running.run_id)
        data = h.tick(GAP_SENSOR)
        assert requested(data) == ["2026-11-01"]
        h.execute(data.run_requests)
        done = h.tick(GAP_SENSOR)
        assert requested(done) == [] and "no missing partitions" in done.skip_message
        for date in calendar.days(day("2026-10-26"), day("2026-11-03")):
            assert catalog.exists(settings, date)
        assert_exact(settings, adversarial_url, day("2026-11-01"))


def test_gap_filler_leaves_the_just_closed_day_to_the_schedule_and_gives_up_after_failures(
        adversarial_url, make_database, tmp_path):
    settings = make_settings(adversarial_url, tmp_path / "store", start="2026-11-01", index_url=make_database())
    snapshot.take_snapshot(settings, day("2026-11-02"), 1000)
    # 00:30 UTC on Nov 4: Nov 3 closed 30 minutes ago; the daily schedule (00:10) has it for an hour
    early = dt.datetime(2026, 11, 4, 0, 30, tzinfo=UTC)
    assert missing_days(settings, {day("2026-11-02")}, early) == [day("2026-11-01")]
    with dg.instance_for_test() as instance:
        h = gap_harness(settings, instance, early, max_failures=2)
        for _ in range(2):
            instance.create_run_for_job(h.job, status=dg.DagsterRunStatus.FAILURE,
                                        tags={"dagster/partition": "2026-11-01",
                                              "snapshot_pipeline/trigger": "gap_fill"})
        data = h.tick(GAP_SENSOR)
        assert requested(data) == [] and "1 gave up" in data.skip_message
    later = dt.datetime(2026, 11, 4, 1, 30, tzinfo=UTC)
    assert missing_days(settings, {day("2026-11-02")}, later) == [day("2026-11-01"), day("2026-11-03")]
    with dg.instance_for_test() as instance:
        h = gap_harness(settings, instance, later)
        assert requested(h.tick(GAP_SENSOR)) == ["2026-11-01", "2026-11-03"]


def test_a_failed_ranged_run_counts_against_its_first_unpublished_day_only(adversarial_url, make_database, tmp_path):
    """A gap-fill run over Nov 1..5 that committed Nov 1 and failed on Nov 2, three times: Nov 2 is given up;
    Nov 3..5, never attempted, are still requested."""
    settings = make_settings(adversarial_url, tmp_path / "store", start="2026-11-01", index_url=make_database())
    snapshot.take_snapshot(settings, day("2026-11-01"), 1000)
    now = dt.datetime(2026, 11, 6, 12, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        h = gap_harness(settings, instance, now, max_failures=3)
        for _ in range(3):
            instance.create_run_for_job(h.job, status=dg.DagsterRunStatus.FAILURE, tags={
                "snapshot_pipeline/trigger": "gap_fill", "dagster/asset_partition_range_start": "2026-11-01",
                "dagster/asset_partition_range_end": "2026-11-05"})
        data = h.tick(GAP_SENSOR)
        assert requested(data) == ["2026-11-03", "2026-11-04", "2026-11-05"]


def test_published_days_dagster_never_heard_of_are_recorded(adversarial_url, make_database, tmp_path):
    """A day committed by a run that died before reporting it (here: published outside Dagster) gets one
    materialization in Dagster, recorded from the manifest; a day of a run still in flight does not."""
    settings = make_settings(adversarial_url, tmp_path / "store", start="2026-11-01", index_url=make_database())
    for date in (day("2026-11-01"), day("2026-11-02")):
        snapshot.take_snapshot(settings, date, 1000)
    now = dt.datetime(2026, 11, 4, 12, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        h = gap_harness(settings, instance, now)
        instance.create_run_for_job(h.job, status=dg.DagsterRunStatus.STARTED, tags={"dagster/partition": "2026-11-02"})
        h.tick(GAP_SENSOR)
        assert instance.get_materialized_partitions(dg.AssetKey("balance_snapshots")) == {"2026-11-01"}
        h.tick(GAP_SENSOR)  # recorded once, not on every tick
        records = instance.fetch_materializations(dg.AssetKey("balance_snapshots"), limit=10).records
        assert [r.partition_key for r in records] == ["2026-11-01"]


def test_gap_filler_respects_the_retention_policy(adversarial_url, make_database, tmp_path):
    settings = make_settings(adversarial_url, tmp_path / "store", start="2026-10-01", index_url=make_database())
    settings = settings.with_overrides(retention_days=3, retention_months=2)
    now = dt.datetime(2026, 11, 5, 12, tzinfo=UTC)  # last closed day Nov 4
    missing = missing_days(settings, set(), now)
    assert missing == [day("2026-10-31"), day("2026-11-02"), day("2026-11-03"), day("2026-11-04")]


def test_the_ui_definitions_request_nothing_before_the_ledgers_first_day(adversarial_url, make_database, tmp_path):
    """`make ui` after `make demo`: the project's default start date is long before the ledger's first row;
    the definitions' own gap sensor (default settings but the start) must not request those days."""
    settings = make_settings(adversarial_url, tmp_path / "store", start="2026-01-01", index_url=make_database())
    first = ledger_first_day(settings)
    assert first is not None and first > settings.start_date
    with dg.instance_for_test() as instance:
        h = Harness(settings, instance)  # the definitions exactly as `snapshot-pipeline ui` loads them
        keys = requested(h.tick(GAP_SENSOR))
        assert keys and min(keys) == first.isoformat()
        assert all(day(k) >= first for k in keys)


def test_the_gap_filler_skips_an_empty_ledger(make_database, tmp_path):
    url = make_database()
    with psycopg.connect(url, autocommit=True) as conn:
        generator.create_schema(conn)
    settings = make_settings(url, tmp_path / "store", start="2026-01-01")
    with dg.instance_for_test() as instance:
        data = Harness(settings, instance).tick(GAP_SENSOR)
        assert requested(data) == [] and "ledger is empty" in data.skip_message
