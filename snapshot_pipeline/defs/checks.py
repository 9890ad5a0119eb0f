"""Asset checks on ``balance_snapshots`` (per partition) and its freshness policy.

Severity follows what is wrong: ERROR (and blocking: downstream assets in the same run do not
materialize) when the snapshot data is wrong; WARN when the ledger itself is inconsistent (double
entry, live balances drifting from the journal). The checks run in every snapshot run and can be
re-run on any partition from the asset's Checks tab. Numbers are numeric metadata, so they plot.
"""

import datetime as dt
import warnings

import dagster as dg
from pydantic import Field

from snapshot_pipeline import validation
from snapshot_pipeline.defs.assets import ASSET_NAME
from snapshot_pipeline.defs.resources import SnapshotStoreResource
from snapshot_pipeline.settings import Settings

FRESHNESS_DEADLINE_AFTER_SCHEDULE = dt.timedelta(hours=2)


class SampleConfig(dg.Config):
    """How many balances the sampled recomputation check recomputes from genesis."""

    sample_size: int = Field(default=validation.DEFAULT_SAMPLE_SIZE, ge=1, le=1_000_000,
                             description="k: balances recomputed from the whole journal (default 20)")
    seed: int | None = Field(default=None, description="random seed (unset: a different sample each run)")


def _result(outcome: validation.Outcome, severity: dg.AssetCheckSeverity) -> dg.AssetCheckResult:
    metadata: dict[str, object] = dict(outcome.metrics)
    for key, value in outcome.details.items():
        metadata[key] = dg.MetadataValue.json(value) if isinstance(value, (list, dict)) else value
    return dg.AssetCheckResult(passed=outcome.passed, severity=severity, description=outcome.description,
                               metadata={k: v for k, v in metadata.items() if v is not None})


def _run(context: dg.AssetCheckExecutionContext, snapshot_store: SnapshotStoreResource, timezone: str,
         function, severity: dg.AssetCheckSeverity, **kwargs) -> dg.AssetCheckResult:
    date = dt.date.fromisoformat(context.partition_key)
    settings = snapshot_store.settings(timezone=timezone)
    try:
        outcome = function(settings, date, **kwargs)
    except validation.NotPublished as exc:
        outcome = validation.Outcome(False, str(exc), {"published": 0})
    context.log.info(f"operation=asset_check check={context.check_specs[0].name} partition={date}"
                     f" passed={outcome.passed} {outcome.description}")
    return _result(outcome, severity)


def build_snapshot_checks(partitions_def: dg.DailyPartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """The six checks, partitioned like the asset."""
    tz = partitions_def.timezone
    error, warn = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
    with warnings.catch_warnings():  # partitioned asset checks are marked "preview" in Dagster 1.13
        warnings.simplefilter("ignore", category=dg.PreviewWarning)

        @dg.asset_check(asset=ASSET_NAME, partitions_def=partitions_def, blocking=True)
        def row_count_matches_ledger(context: dg.AssetCheckExecutionContext, snapshot_store: SnapshotStoreResource):
            """Rows = balances existing at the cutoff (created_at < cutoff) in the ledger = manifest row_count."""
            return _run(context, snapshot_store, tz, validation.row_count, error)

        @dg.asset_check(asset=ASSET_NAME, partitions_def=partitions_def, blocking=True)
        def balance_equals_credit_minus_debit(context: dg.AssetCheckExecutionContext,
                                              snapshot_store: SnapshotStoreResource):
            """Every row: balance = credit_balance - debit_balance and inflight_balance = inflight credit - debit."""
            return _run(context, snapshot_store, tz, validation.balance_identity, error)

        @dg.asset_check(asset=ASSET_NAME, partitions_def=partitions_def, blocking=False)
        def double_entry_per_currency(context: dg.AssetCheckExecutionContext, snapshot_store: SnapshotStoreResource):
            """Per currency, Σ credit = Σ debit over all balances (WARN: a ledger property).

            It can legitimately fail when legs are dated before their balance was created (the
            balance does not exist at the cutoff, so its legs are not in the snapshot) or point at
            balances missing from blnk.balances; the imbalance per currency is reported.
            """
            return _run(context, snapshot_store, tz, validation.double_entry, warn)

        @dg.asset_check(asset=ASSET_NAME, partitions_def=partitions_def, blocking=True)
        def parquet_matches_index(context: dg.AssetCheckExecutionContext, snapshot_store: SnapshotStoreResource):
            """Parquet file = manifest (sha256, rows), and the partition's index rows = the balances that
            changed since the previous published partition, recomputed by diffing the two Parquet files."""
            return _run(context, snapshot_store, tz, validation.parquet_matches_index, error)

        @dg.asset_check(asset=ASSET_NAME, partitions_def=partitions_def, blocking=True)
        def sampled_recomputation_matches(context: dg.AssetCheckExecutionContext, config: SampleConfig,
                                          snapshot_store: SnapshotStoreResource):
            """k random balances (config `sample_size`, default 20) recomputed from the whole journal in SQL
            equal the snapshot on all six amounts; mismatches caused by rows added after the read are
            counted separately (the repair sensor re-materializes those)."""
            return _run(context, snapshot_store, tz, validation.sampled_recomputation, error,
                        sample_size=config.sample_size, seed=config.seed)

        @dg.asset_check(asset=ASSET_NAME, partitions_def=partitions_def, blocking=False)
        def live_balances_match(context: dg.AssetCheckExecutionContext, snapshot_store: SnapshotStoreResource):
            """Latest partition only: snapshot + legs dated at or after the cutoff = live blnk.balances row.

            WARN: a drift means the ledger's live rows disagree with its own journal (or a repair is
            pending); the drifting balance ids are reported. Older partitions pass without evaluation.
            """
            return _run(context, snapshot_store, tz, validation.live_drift, warn)

    return [row_count_matches_ledger, balance_equals_credit_minus_debit, double_entry_per_currency,
            parquet_matches_index, sampled_recomputation_matches, live_balances_match]


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
