"""Sensors that keep history complete and exact: late-transaction repair and gap filling.

The repair sensor requests runs of ``balance_snapshots_job``, the gap filler one backfill of
``balance_snapshots`` per tick, both oldest partition first; both start RUNNING unless
``SNAPSHOT_AUTOMATION_DEFAULT_STATUS=STOPPED``. Run failures are alerted by ``defs/alerting.py``.
"""

import datetime as dt
from collections.abc import Callable

import dagster as dg

# Internal to Dagster but what its own backfill-emitting sensors use (see gap_fill_request).
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.execution.backfill import BulkActionStatus

from snapshot_pipeline import calendar, db
from snapshot_pipeline.defs.resources import SnapshotStoreResource
from snapshot_pipeline.defs.schedules import sensor_status
from snapshot_pipeline.names import (
    ASSET_NAME,
    DAYS_PER_BACKFILL_RUN,
    GAP_SENSOR,
    LATE_TRANSACTIONS_TAG,
    PARTITION_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    REPAIR_SENSOR,
    TRIGGER_TAG,
)
from snapshot_pipeline.quality import lateness
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import index
from snapshot_pipeline.store.retention import Policy

STALE_IDENTITY_TAG = "snapshot_pipeline/stale_identity"
GAP_FILL_MAX_DAYS_PER_TICK = 92  # one backfill per tick covers at most this many days (about a quarter)
GAP_FILL_MAX_FAILURES = 3
GAP_FILL_GRACE = dt.timedelta(hours=1)
IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED]
FAILED = [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ------------------------------------------------------------------------------------------------ repair


def build_repair_sensor(job: "dg.UnresolvedAssetJobDefinition", partitions_def: dg.DailyPartitionsDefinition,
                        settings: Settings, minimum_interval_seconds: int = 60) -> dg.SensorDefinition:
    @dg.sensor(
        name=REPAIR_SENSOR,
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=sensor_status(settings.automation_running),
        description="Re-materializes published partitions whose read missed journal rows dated before their"
                    " cutoff (backdated, late-applied or out-of-order rows), earliest first, once per lateness.",
    )
    def late_transaction_repair_sensor(context: dg.SensorEvaluationContext, snapshot_store: SnapshotStoreResource):
        """Re-materializes published partitions whose read missed journal rows dated before their cutoff.

        A partition's read sees the journal up to its watermark. Rows added later but effective
        before the cutoff (backdated or late-applied), balances created before the cutoff but added
        later, and rows that committed out of id order make it stale. The cursor remembers the
        journal position already examined, so an unchanged journal costs one primary-key probe;
        new rows are examined in one primary-key range scan grouped by the partitions' watermarks
        and cutoffs. Every stale partition is requested, earliest first, with run key
        `late-repair:<date>:<watermark>:<count>:<balance watermark>`, so the same lateness is
        never requested twice; the reason is logged and tagged on the run.
        """
        settings_now = snapshot_store.settings(timezone=partitions_def.timezone)
        try:
            result = lateness.scan(settings_now, lateness.ScanState.from_json(context.cursor))
        except index.IndexOutdated as exc:  # until the next snapshot run (or `migrate`) upgrades the index
            return dg.SkipReason(str(exc))
        requests = []
        for finding in result.new_requests:
            key = finding.date.isoformat()
            if not partitions_def.has_partition_key(key):
                context.log.warning(f"operation=late_repair partition={key} is stale but is not a partition of"
                                    f" this code location (SNAPSHOT_START_DATE); not requested: {finding.reason()}")
                continue
            context.log.info(f"operation=late_repair partition={key} status=requested run_key={finding.run_key}"
                             f" reason={finding.reason()}")
            requests.append(dg.RunRequest(
                partition_key=key,
                run_key=finding.run_key,
                tags={TRIGGER_TAG: "late_transaction_repair", STALE_IDENTITY_TAG: finding.partition.identity,
                      LATE_TRANSACTIONS_TAG: str(finding.late_transactions)},
            ))
        if requests:
            context.log.info(
                f"operation=late_repair earliest_affected={requests[0].partition_key}"
                f" requested={len(requests)} partitions={','.join(r.partition_key or '' for r in requests)}"
            )
            return dg.SensorResult(run_requests=requests, cursor=result.state.to_json())
        return dg.SensorResult(skip_reason=repair_skip_reason(result), cursor=result.state.to_json())

    return late_transaction_repair_sensor


def repair_skip_reason(result: lateness.ScanResult) -> str:
    """Why a repair tick requested nothing, with the journal positions it examined."""
    stats = result.stats
    if not result.examined:
        return (f"journal unchanged (head transaction id {stats['head_transaction_id']},"
                f" {stats['partitions']} published partitions)")
    if result.findings:
        return "stale partitions already requested: " + ", ".join(f.date.isoformat() for f in result.findings)
    return (f"no late rows: examined journal ids above {stats['rows_scanned_from']} up to"
            f" {stats['head_transaction_id']} against {stats['partitions']} partitions"
            f" ({stats['audits']} prefix audits)")


# -------------------------------------------------------------------------------------------- gap filling


def last_due_day(settings: Settings, now: dt.datetime) -> dt.date:
    """The newest day the gap filler may request: the daily schedule (plus a grace hour) has had its chance."""
    offset = dt.timedelta(hours=settings.schedule_time.hour, minutes=settings.schedule_time.minute)
    return calendar.last_closed_day(settings.timezone, now - offset - GAP_FILL_GRACE)


def ledger_first_day(settings: Settings) -> dt.date | None:
    """The local day of the ledger's first row (earliest balance or transaction ``created_at``), or None
    when the ledger is empty. Two index probes: Blnk's ``(created_at DESC)`` on ``blnk.balances`` and
    ``(created_at, source)`` on ``blnk.transactions``."""
    with db.connect(db.ledger_url(settings), autocommit=True, what="ledger database") as ledger:
        first = db.scalar(
            ledger,
            "SELECT LEAST((SELECT min(created_at) FROM blnk.balances), (SELECT min(created_at) FROM blnk.transactions))"
        )
    if first is None:
        return None
    return first.replace(tzinfo=dt.UTC).astimezone(settings.tzinfo).date()


def missing_days(settings: Settings, published: set[dt.date], now: dt.datetime,
                 first_day: dt.date | None = None) -> list[dt.date]:
    """Days from SNAPSHOT_START_DATE (or the ledger's first day, if later) to the last due day that the
    retention policy keeps but are not published."""
    reference = calendar.last_closed_day(settings.timezone, now)
    last = last_due_day(settings, now)
    start = max(settings.start_date, first_day) if first_day else settings.start_date
    if last < start:
        return []
    policy = Policy.from_settings(settings)
    return [d for d in calendar.days(start, last) if d not in published and policy.keeps(d, reference)]


def _days_of_run(run: dg.DagsterRun) -> list[str]:
    """The partition keys a snapshot run covers: its partition, or the range of a ranged (backfill) run."""
    if PARTITION_TAG in run.tags:
        return [run.tags[PARTITION_TAG]]
    first, last = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    if first and last:
        return [d.isoformat() for d in calendar.days(dt.date.fromisoformat(first), dt.date.fromisoformat(last))]
    return []


def choose_days(missing: list[dt.date], in_flight: set[str], failures: dict[str, int], max_days: int,
                max_failures: int) -> tuple[list[dt.date], list[str], list[str]]:
    """(days to request, oldest first and at most ``max_days``; days given up; days in flight)."""
    chosen: list[dt.date] = []
    exhausted: list[str] = []
    running: list[str] = []
    for day in missing:
        if len(chosen) >= max_days:
            break
        key = day.isoformat()
        if key in in_flight:
            running.append(key)
        elif failures.get(key, 0) >= max_failures:
            exhausted.append(key)
        else:
            chosen.append(day)
    return chosen, exhausted, running


def _in_flight_days(instance: dg.DagsterInstance) -> set[str]:
    """Partition keys of the runs queued, starting or running (any job; ranged runs count every day)."""
    return {key for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS)) for key in _days_of_run(run)}


def _failures_by_day(instance: dg.DagsterInstance, published: set[dt.date]) -> dict[str, int]:
    """Failed gap-fill runs per day. A ranged run counts against its first day that is still unpublished:
    the days before it were committed, and the days after it were never attempted."""
    failures: dict[str, int] = {}
    for run in instance.get_runs(filters=dg.RunsFilter(tags={TRIGGER_TAG: "gap_fill"}, statuses=FAILED)):
        unpublished = [key for key in _days_of_run(run) if dt.date.fromisoformat(key) not in published]
        if unpublished:
            failures[unpublished[0]] = failures.get(unpublished[0], 0) + 1
    return failures


def record_unreported(instance: dg.DagsterInstance, published: set[dt.date], in_flight: set[str],
                      partitions_def: dg.DailyPartitionsDefinition, log) -> list[str]:
    """Give Dagster a materialization of each published day it has none of (the run that committed it was
    killed, cancelled or lost before reporting: up to a ranged run's days), so the UI shows what exists.
    Days of runs still in flight report themselves when their step ends. Returns the keys recorded."""
    materialized = instance.get_materialized_partitions(dg.AssetKey(ASSET_NAME))
    keys = sorted(d.isoformat() for d in published)
    unreported = [k for k in keys
                  if k not in materialized and k not in in_flight and partitions_def.has_partition_key(k)]
    for key in unreported[:GAP_FILL_MAX_DAYS_PER_TICK]:
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=ASSET_NAME, partition=key,
            description="Recorded from the snapshot index: the partition is published (manifest row and Parquet"
                        " file) but the run that committed it ended without reporting it.",
            metadata={"recorded_from": "snapshot_index.partitions"}))
    if unreported:
        log.info(f"operation=gap_fill recorded_unreported={','.join(unreported[:GAP_FILL_MAX_DAYS_PER_TICK])}")
    return unreported[:GAP_FILL_MAX_DAYS_PER_TICK]


def _active_gap_fill_backfills(instance: dg.DagsterInstance) -> list[str]:
    """Ids of gap-fill backfills the backfill daemon is still working on."""
    return [backfill.backfill_id for backfill in instance.get_backfills(status=BulkActionStatus.REQUESTED, limit=50)
            if backfill.tags.get(TRIGGER_TAG) == "gap_fill"]


def gap_fill_request(days: list[dt.date], asset_graph) -> dg.RunRequest:
    """One Dagster backfill of ``days`` of ``balance_snapshots``: the backfill daemon splits it into runs of
    up to ``DAYS_PER_BACKFILL_RUN`` days (the asset's backfill policy), each rolling its days forward in one
    process. Dagster builds backfill requests this way itself (its automation condition sensor); the
    constructor is marked internal, so a test pins the behaviour (tests/defs/test_gap_backfill.py)."""
    subset = AssetGraphSubset.from_asset_partition_set(
        {AssetKeyPartitionKey(dg.AssetKey(ASSET_NAME), day.isoformat()) for day in days}, asset_graph)
    return dg.RunRequest.for_asset_graph_subset(subset, tags={TRIGGER_TAG: "gap_fill"})


# Longer than 60 lines: most of it is the description and the docstring the UI shows; the logic is in the
# helpers above.
def build_gap_sensor(partitions_def: dg.DailyPartitionsDefinition, settings: Settings, *,
                     max_days_per_tick: int = GAP_FILL_MAX_DAYS_PER_TICK, max_failures: int = GAP_FILL_MAX_FAILURES,
                     minimum_interval_seconds: int = 120,
                     clock: Callable[[], dt.datetime] = _utc_now) -> dg.SensorDefinition:
    @dg.sensor(
        name=GAP_SENSOR,
        asset_selection=dg.AssetSelection.assets(ASSET_NAME),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=sensor_status(settings.automation_running),
        description=f"Fills holes in history from the later of SNAPSHOT_START_DATE and the ledger's first day:"
                    f" one backfill of at most {max_days_per_tick} missing days per tick, oldest first, run"
                    f" {DAYS_PER_BACKFILL_RUN} days per run; gives up on a day after {max_failures} failed"
                    f" gap-fill runs.",
    )
    def partition_gap_sensor(context: dg.SensorEvaluationContext, snapshot_store: SnapshotStoreResource):
        """Fills holes in history: one backfill of the missing partitions from SNAPSHOT_START_DATE onward.

        Days before the ledger's first row (its earliest balance or transaction) are never requested:
        there is nothing to snapshot, and a start date set early must not flood the instance.

        A day is missing when the retention policy keeps it and the manifest has no row for it
        (after downtime, a failed daily run, a restored index). The day that just closed is left to
        the daily schedule for an hour after its run time. Each tick requests at most one backfill of
        the oldest `max_days_per_tick` missing days, and none while an earlier gap-fill backfill is
        still running; its runs cover up to DAYS_PER_BACKFILL_RUN days each and roll them forward in
        one process. Days with a queued or running snapshot run are skipped; a day whose gap-fill runs
        failed `max_failures` times is no longer requested (the failure sensor has alerted).
        """
        now = clock()
        current = snapshot_store.settings(timezone=partitions_def.timezone).with_overrides(
            start_date=partitions_def.start.date())
        with db.connect(db.snapshot_url(current), autocommit=True, what="snapshot index database") as conn:
            try:
                published = index.published_dates(conn)
            except index.IndexOutdated as exc:
                return dg.SkipReason(str(exc))
        in_flight = _in_flight_days(context.instance)
        record_unreported(context.instance, published, in_flight, partitions_def, context.log)
        first = ledger_first_day(current)
        if first is None:
            return dg.SkipReason("the ledger is empty: nothing to snapshot")
        missing = [d for d in missing_days(current, published, now, first)
                   if partitions_def.has_partition_key(d.isoformat())]
        if not missing:
            return dg.SkipReason(f"no missing partitions from {max(current.start_date, first)} to"
                                 f" {last_due_day(current, now)} ({len(published)} published)")
        active = _active_gap_fill_backfills(context.instance)
        if active:
            return dg.SkipReason(f"{len(missing)} missing partition(s); gap-fill backfill {', '.join(active)}"
                                 " is still running")
        failures = _failures_by_day(context.instance, published)
        chosen, exhausted, running = choose_days(missing, in_flight, failures, max_days_per_tick, max_failures)
        if exhausted:
            context.log.warning(f"operation=gap_fill gave_up={','.join(exhausted)}: {max_failures} failed runs each;"
                                " materialize them from the UI once the cause is fixed")
        if running:
            context.log.info(f"operation=gap_fill in_flight={','.join(running)}")
        if not chosen:
            return dg.SkipReason(f"{len(missing)} missing partition(s), none requestable now"
                                 f" ({len(running)} in flight, {len(exhausted)} gave up)")
        context.log.info(f"operation=gap_fill missing={len(missing)} oldest={missing[0]} requested={len(chosen)}"
                         f" days={chosen[0]}..{chosen[-1]} as one backfill")
        assert context.repository_def is not None  # the daemon and build_sensor_context(definitions=...) set it
        return dg.SensorResult(run_requests=[gap_fill_request(chosen, context.repository_def.asset_graph)])

    return partition_gap_sensor


def build_sensors(job: "dg.UnresolvedAssetJobDefinition", partitions_def: dg.DailyPartitionsDefinition,
                  settings: Settings) -> list:
    return [build_repair_sensor(job, partitions_def, settings), build_gap_sensor(partitions_def, settings)]
