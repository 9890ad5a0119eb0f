"""Gap filling: which days of history are missing, which of them to request, and the backfill that fills them.

The logic of ``partition_gap_sensor`` (``defs/snapshots/sensors.py``): days from the later of
``SNAPSHOT_START_DATE`` and the ledger's first day that the retention policy keeps but that are not
published, minus the days in flight and those given up on; requested as one Dagster backfill per tick.
"""

import datetime as dt

import dagster as dg

from snapshot_pipeline import calendar, db
from snapshot_pipeline.defs.common.dagster_internals import backfill_request, requested_backfills
from snapshot_pipeline.names import ASSET_NAME, PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG, TRIGGER_TAG
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store.retention import Policy

GAP_FILL_MAX_DAYS_PER_TICK = 92  # one backfill per tick covers at most this many days (about a quarter)
GAP_FILL_MAX_FAILURES = 3
GAP_FILL_GRACE = dt.timedelta(hours=1)
IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED]
FAILED = [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


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


def in_flight_days(instance: dg.DagsterInstance) -> set[str]:
    """Partition keys of the runs queued, starting or running (any job; ranged runs count every day)."""
    return {key for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS)) for key in _days_of_run(run)}


def failures_by_day(instance: dg.DagsterInstance, published: set[dt.date]) -> dict[str, int]:
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


def active_gap_fill_backfills(instance: dg.DagsterInstance) -> list[str]:
    """Ids of gap-fill backfills the backfill daemon is still working on."""
    return [backfill.backfill_id for backfill in requested_backfills(instance, limit=50)
            if backfill.tags.get(TRIGGER_TAG) == "gap_fill"]


def gap_fill_request(days: list[dt.date], asset_graph) -> dg.RunRequest:
    """One Dagster backfill of ``days`` of ``balance_snapshots``: the backfill daemon splits it into runs of
    up to ``DAYS_PER_BACKFILL_RUN`` days (the asset's backfill policy), each rolling its days forward in one
    process. Dagster builds backfill requests this way itself (its automation condition sensor); the
    constructor is marked internal (``defs/common/dagster_internals.py``), so tests pin the behaviour
    (tests/defs/snapshots/test_gap_backfill.py, tests/defs/common/test_dagster_internals.py)."""
    return backfill_request(dg.AssetKey(ASSET_NAME), [day.isoformat() for day in days], asset_graph,
                            tags={TRIGGER_TAG: "gap_fill"})
