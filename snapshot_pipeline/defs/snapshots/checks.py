"""Asset checks on ``balance_snapshots`` (per partition) and its freshness policy.

Severity follows what is wrong: ERROR (and blocking: downstream assets in the same run do not
materialize) when the snapshot data is wrong (row count, identity, double entry, manifest, sampled
recompute); WARN when the ledger itself is inconsistent (live balances drifting from the journal).

Cost: the checks in a snapshot run read the partition's file once, count balances on an index, and
otherwise follow the day's activity (changed balances) and the bounded sample; the diff audit
(``parquet_matches_index``, two full file reads) runs in its own asset, job and schedule (``defs/maintenance/``).
Every check can be re-run on any partition from the asset's Checks tab. Only measures are numeric metadata (they plot).
"""

import datetime as dt
import warnings

import dagster as dg
from pydantic import Field

from snapshot_pipeline import faults, quality
from snapshot_pipeline.defs.common.dagster_internals import (
    AssetCheckEvaluationTargetMaterializationData,
    target_materialization,
)
from snapshot_pipeline.defs.common.outcomes import outcome_logger, outcome_metadata
from snapshot_pipeline.defs.common.pools import LEDGER_DB_POOL
from snapshot_pipeline.defs.common.resources import SnapshotStoreResource
from snapshot_pipeline.defs.snapshots.assets import LIVE_CHECK, LIVE_DRIFT_METADATA
from snapshot_pipeline.names import ASSET_NAME
from snapshot_pipeline.settings import Settings

FRESHNESS_DEADLINE_AFTER_SCHEDULE = dt.timedelta(hours=2)


class SampleConfig(dg.Config):
    """How many balances the sampled recomputation check recomputes from genesis."""

    sample_size: int = Field(default=quality.DEFAULT_SAMPLE_SIZE, ge=1, le=quality.MAX_SAMPLE_SIZE,
                             description=f"k: balances recomputed from the whole journal (default 20,"
                                         f" at most {quality.MAX_SAMPLE_SIZE:,})")
    seed: int | None = Field(default=None, description="random seed (unset: a different sample each run)")


INTEGRITY_CHECKS = {  # check name -> (quality outcome key, docstring shown in the UI)
    "row_count_matches_ledger": (
        "row_count",
        "Every balance existing at the cutoff (created_at < cutoff) has a row; rows = manifest row_count."
        " Extra rows are balances created later but touched by legs dated before the cutoff (DESIGN §3)."),
    "balance_equals_credit_minus_debit": (
        "balance_identity",
        "Every row: balance = credit_balance - debit_balance and inflight_balance = inflight credit - debit."),
    "double_entry_per_currency": (
        "double_entry",
        "Per currency: Σ balance = 0 and Σ credit = Σ debit over the partition (every counted leg has both"
        " sides in the snapshot). Per-currency figures in the `per_currency` table."),
    "parquet_matches_manifest": (
        "manifest",
        "The Parquet file = the manifest (sha256, rows), the partition's index row count = the manifest's, and"
        " the Delta table's current version names exactly the manifest's files."),
}


def _result(outcome: quality.Outcome, severity: dg.AssetCheckSeverity, check_name: str | None = None
            ) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=outcome.passed, severity=severity, description=outcome.description,
                               check_name=check_name, asset_key=dg.AssetKey(ASSET_NAME) if check_name else None,
                               metadata=outcome_metadata(outcome))


def _evaluate(settings, name: str, date: dt.date, function, log, **kwargs) -> quality.Outcome:
    try:
        outcome = function(settings, date, **kwargs)
    except quality.NotPublished as exc:
        outcome = quality.Outcome(False, str(exc), {}, {"published": False})
    log(name, date, outcome)
    return outcome


def _latest_materialization(instance: dg.DagsterInstance, key: str) -> dg.EventLogRecord | None:
    """The latest materialization record of day ``key``."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(ASSET_NAME), asset_partitions=[key]), limit=1).records
    return records[0] if records else None


def _target_materialization(instance: dg.DagsterInstance, key: str
                            ) -> AssetCheckEvaluationTargetMaterializationData | None:
    """The materialization of day ``key`` an evaluation checks: without it Dagster counts the evaluation as
    out of date and the UI's per-partition check status ignores it (what AssetCheckResult fills in itself)."""
    record = _latest_materialization(instance, key)
    return target_materialization(record) if record is not None else None


def _recorded_live_drift(context: dg.AssetCheckExecutionContext, date: dt.date) -> dict | None:
    """The live-drift comparison this run's materialization of ``date`` made in its own view, with the
    generation it published. None when the check runs without that materialization (re-run from the
    Checks tab: it compares now) or the run made none (not the latest day, sharded)."""
    record = _latest_materialization(context.instance, date.isoformat())
    if record is None or record.event_log_entry.run_id != context.run.run_id:
        return None
    materialization = record.asset_materialization
    metadata = materialization.metadata if materialization is not None else {}
    found, generation = metadata.get(LIVE_DRIFT_METADATA), metadata.get("generation")
    if not isinstance(found, dg.JsonMetadataValue) or not isinstance(found.data, dict) or generation is None:
        return None
    return {**found.data, "generation": generation.value}


def _per_partition(context: dg.AssetCheckExecutionContext, outcomes_of_day, severity: dg.AssetCheckSeverity,
                   blocking: bool):
    """The check events of a run: one result per check in a one-day run, one evaluation per check and day
    in a ranged (backfill) run, so the UI shows each day's own status.

    ``outcomes_of_day(date)`` returns ``{check name: Outcome}`` for the selected checks of that day.
    Dagster gives ranged runs no partition on an ``AssetCheckResult``; an ``AssetCheckEvaluation`` with
    ``partition`` is the event it records per partition, and the check's output is then yielded empty.
    """
    keys = context.partition_keys
    if len(keys) == 1:
        for name, outcome in outcomes_of_day(dt.date.fromisoformat(keys[0])).items():
            yield _result(outcome, severity, check_name=name)
        return
    names: dict[str, None] = {}  # the checks evaluated, in order
    for key in keys:
        target = _target_materialization(context.instance, key)
        for name, outcome in outcomes_of_day(dt.date.fromisoformat(key)).items():
            names[name] = None
            yield dg.AssetCheckEvaluation(asset_key=dg.AssetKey(ASSET_NAME), check_name=name, passed=outcome.passed,
                                          metadata=outcome_metadata(outcome), severity=severity, blocking=blocking,
                                          description=outcome.description, partition=key,
                                          target_materialization_data=target)
    assets_def = context.op_execution_context.assets_def
    for name in names:
        check_key = dg.AssetCheckKey(dg.AssetKey(ASSET_NAME), name)
        yield dg.Output(None, output_name=assets_def.get_output_name_for_asset_check_key(check_key))


def _integrity(settings, date: dt.date) -> dict[str, quality.Outcome]:
    """The four file checks: one pass over the columns, one over the bytes (page cache), two counts."""
    outcomes = quality.integrity(settings, date)
    outcomes["manifest"] = quality.parquet_matches_manifest(settings, date)
    return outcomes


def build_snapshot_checks(partitions_def: dg.DailyPartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """The in-run checks, partitioned like the asset: three steps in a snapshot run."""
    with warnings.catch_warnings():  # partitioned asset checks are marked "preview" in Dagster 1.13
        warnings.simplefilter("ignore", category=dg.PreviewWarning)
        return [build_file_checks(partitions_def), build_sampled_recomputation_check(partitions_def),
                build_live_balances_check(partitions_def)]


def build_file_checks(partitions_def: dg.DailyPartitionsDefinition) -> dg.AssetChecksDefinition:
    """The four blocking file checks, one step (one read of the partition's file)."""

    @dg.multi_asset_check(
        name="snapshot_file_checks",
        specs=[dg.AssetCheckSpec(name, asset=ASSET_NAME, partitions_def=partitions_def, blocking=True,
                                 description=doc)
               for name, (_, doc) in INTEGRITY_CHECKS.items()],
        can_subset=True,
        pool=LEDGER_DB_POOL,
        description="Row count, balance identity, double entry and manifest agreement of one partition,"
                    " from one sequential read of its Parquet file.",
    )
    def snapshot_file_checks(context: dg.AssetCheckExecutionContext, snapshot_store: SnapshotStoreResource):
        """The four blocking file checks of one partition (ERROR: the snapshot data is wrong)."""
        selected = {key.name for key in context.selected_asset_check_keys}
        settings = snapshot_store.settings(timezone=partitions_def.timezone)
        log = outcome_logger(context)
        faults.pause_point("checks")  # crash tests: a kill -9 while the run checks what it published

        def outcomes_of_day(date: dt.date) -> dict[str, quality.Outcome]:
            try:
                outcomes = _integrity(settings, date)
            except quality.NotPublished as exc:
                missing = quality.Outcome(False, str(exc), {}, {"published": False})
                outcomes = {key: missing for key, _ in INTEGRITY_CHECKS.values()}
            chosen = {name: outcomes[key] for name, (key, _) in INTEGRITY_CHECKS.items() if name in selected}
            for name, outcome in chosen.items():
                log(name, date, outcome)
            return chosen

        yield from _per_partition(context, outcomes_of_day, dg.AssetCheckSeverity.ERROR, blocking=True)

    return snapshot_file_checks


def build_sampled_recomputation_check(partitions_def: dg.DailyPartitionsDefinition) -> dg.AssetChecksDefinition:
    """``sampled_recomputation_matches`` (blocking)."""

    @dg.asset_check(asset=ASSET_NAME, partitions_def=partitions_def, blocking=True, pool=LEDGER_DB_POOL,
                    description="k random balances (default 20, at most 10,000) recomputed from the journal"
                                " equal the snapshot on all six amounts.")
    def sampled_recomputation_matches(context: dg.AssetCheckExecutionContext, config: SampleConfig,
                                      snapshot_store: SnapshotStoreResource):
        """k random balances (config `sample_size`, default 20) recomputed from the whole journal in SQL
        equal the snapshot on all six amounts; mismatches caused by rows added after the read are
        counted separately (the repair sensor re-materializes those). The journal is reached through
        Blnk's (source), (destination) and (parent_transaction) indexes; k is bounded."""
        settings, log = snapshot_store.settings(timezone=partitions_def.timezone), outcome_logger(context)
        name = "sampled_recomputation_matches"
        yield from _per_partition(context, lambda date: {name: _evaluate(
            settings, name, date, quality.sampled_recomputation, log, sample_size=config.sample_size,
            seed=config.seed)}, dg.AssetCheckSeverity.ERROR, blocking=True)

    return sampled_recomputation_matches


def build_live_balances_check(partitions_def: dg.DailyPartitionsDefinition) -> dg.AssetChecksDefinition:
    """``live_balances_match`` (WARN, not blocking)."""

    @dg.asset_check(asset=ASSET_NAME, partitions_def=partitions_def, blocking=False, pool=LEDGER_DB_POOL,
                    description="Latest partition: snapshot + later-dated legs = the live blnk.balances row,"
                                " for the balances that changed in the partition (WARN).")
    def live_balances_match(context: dg.AssetCheckExecutionContext, snapshot_store: SnapshotStoreResource):
        """Latest partition only: snapshot + legs dated at or after the cutoff = live blnk.balances row,
        over the partition's changed balances (its index rows), so the cost follows the day's activity.

        The snapshot run compares in its own view of the ledger, with the values it has just merged, and
        records the outcome with its materialization (metadata `live_drift`); this check, in the same run,
        reports that outcome while the partition is still that publication. Run on its own (the Checks
        tab), after a sharded run, or once the day was published again, it compares now in a new view.

        WARN: a drift means the ledger's live rows disagree with its own journal (or a repair is
        pending); the drifting balance ids are reported. Older partitions pass without evaluation.
        """
        settings, log = snapshot_store.settings(timezone=partitions_def.timezone), outcome_logger(context)
        name = LIVE_CHECK
        yield from _per_partition(context, lambda date: {name: _evaluate(
            settings, name, date, quality.live_drift, log, recorded=_recorded_live_drift(context, date))},
            dg.AssetCheckSeverity.WARN, blocking=False)

    return live_balances_match


def snapshot_freshness_policy(settings: Settings, timezone: str) -> dg.FreshnessPolicy:
    """Overdue when the asset has not materialized between midnight and two hours after the daily schedule time."""
    scheduled = dt.timedelta(hours=settings.schedule_time.hour, minutes=settings.schedule_time.minute)
    deadline = min(scheduled + FRESHNESS_DEADLINE_AFTER_SCHEDULE, dt.timedelta(hours=23, minutes=59))
    hours, minutes = divmod(int(deadline.total_seconds()) // 60, 60)
    return dg.FreshnessPolicy.cron(
        deadline_cron=f"{minutes} {hours} * * *",
        lower_bound_delta=max(deadline, dt.timedelta(minutes=1)),
        timezone=timezone,
    )
