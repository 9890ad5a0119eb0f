"""Sensors that keep history complete and exact: late-transaction repair, gap filling and crash recovery.

The repair sensor requests runs of ``balance_snapshots_job``, the gap filler one backfill of
``balance_snapshots`` per tick (its logic: ``gaps.py``), both oldest partition first; the recovery
sensor cleans up after dead runs and requests nothing (its logic: ``recovery.py``). All start RUNNING
unless ``SNAPSHOT_AUTOMATION_DEFAULT_STATUS=STOPPED``. Run failures are alerted by
``defs/maintenance/sensors.py``.
"""

import datetime as dt
from collections.abc import Callable

import dagster as dg

from snapshot_pipeline import db
from snapshot_pipeline.defs.common.default_status import sensor_status
from snapshot_pipeline.defs.common.resources import SnapshotStoreResource
from snapshot_pipeline.defs.snapshots.gaps import (
    GAP_FILL_MAX_DAYS_PER_TICK,
    GAP_FILL_MAX_FAILURES,
    active_gap_fill_backfills,
    choose_days,
    failures_by_day,
    gap_fill_request,
    in_flight_days,
    last_due_day,
    ledger_first_day,
    missing_days,
    record_unreported,
)
from snapshot_pipeline.defs.snapshots.recovery import RECOVERY_SENSOR, recover_store
from snapshot_pipeline.names import (
    ASSET_NAME,
    DAYS_PER_BACKFILL_RUN,
    GAP_SENSOR,
    LATE_TRANSACTIONS_TAG,
    REPAIR_SENSOR,
    TRIGGER_TAG,
)
from snapshot_pipeline.quality import lateness
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import index

STALE_IDENTITY_TAG = "snapshot_pipeline/stale_identity"


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
        in_flight = in_flight_days(context.instance)
        record_unreported(context.instance, published, in_flight, partitions_def, context.log)
        first = ledger_first_day(current)
        if first is None:
            return dg.SkipReason("the ledger is empty: nothing to snapshot")
        missing = [d for d in missing_days(current, published, now, first)
                   if partitions_def.has_partition_key(d.isoformat())]
        if not missing:
            return dg.SkipReason(f"no missing partitions from {max(current.start_date, first)} to"
                                 f" {last_due_day(current, now)} ({len(published)} published)")
        active = active_gap_fill_backfills(context.instance)
        if active:
            return dg.SkipReason(f"{len(missing)} missing partition(s); gap-fill backfill {', '.join(active)}"
                                 " is still running")
        failures = failures_by_day(context.instance, published)
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


# ------------------------------------------------------------------------------------------ crash recovery


def build_recovery_sensor(settings: Settings, minimum_interval_seconds: int = 60) -> dg.SensorDefinition:
    @dg.sensor(
        name=RECOVERY_SENSOR,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=sensor_status(settings.automation_running),
        description="Cleans up after snapshot runs whose process died: resolves an interrupted publish against"
                    " the manifest, marks the dead run failed and removes its leftovers. Requests no runs.",
    )
    def crash_recovery_sensor(context: dg.SensorEvaluationContext, snapshot_store: SnapshotStoreResource):
        """Cleans up after snapshot runs whose process died (kill -9, OOM, lost machine).

        For every partition with a holder record, a staging file or a generation the Delta log does
        not carry yet, whose lock is free (a held lock means a live run): an interrupted publish is
        resolved (the Delta commit replayed if the index committed, else the run's files removed),
        the dead run is marked FAILURE in the instance with the reason, and its staging files and
        work directory are removed. Requests no runs.
        """
        found = recover_store(snapshot_store.settings(), context.instance, context.log.info)
        for item in found:
            context.log.info(f"operation=crash_recovery {item}")
        return dg.SkipReason(f"recovered {len(found)} partition(s)" if found else "nothing to recover")

    return crash_recovery_sensor


def build_sensors(job: "dg.UnresolvedAssetJobDefinition", partitions_def: dg.DailyPartitionsDefinition,
                  settings: Settings) -> list:
    return [build_repair_sensor(job, partitions_def, settings), build_gap_sensor(partitions_def, settings)]
