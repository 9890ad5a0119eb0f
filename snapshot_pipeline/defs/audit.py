"""The diff audit of ``balance_snapshots``: too heavy for every snapshot run, so it has its own asset, job and schedule.

``parquet_matches_index`` recomputes a partition's index rows by diffing its Parquet file against the
previous published partition's (two full reads) and compares them with the index. It is the check of
the ``balance_snapshots_audit`` asset (same daily partitions), materialized by ``snapshot_audit_job``
on ``snapshot_audit_schedule`` (daily, after the snapshot) or from the UI for any partition.
"""


import datetime as dt
import warnings
from typing import TYPE_CHECKING

import dagster as dg

from snapshot_pipeline import quality
from snapshot_pipeline.defs.assets import GROUP, OWNERS
from snapshot_pipeline.defs.checks import _logger, _metadata
from snapshot_pipeline.defs.resources import SnapshotStoreResource
from snapshot_pipeline.defs.schedules import partitions_metadata, schedule_status
from snapshot_pipeline.names import ASSET_NAME, AUDIT_ASSET, TRIGGER_TAG
from snapshot_pipeline.settings import Settings

if TYPE_CHECKING:
    from snapshot_pipeline.defs.schedules import PartitionedSchedule

AUDIT_CHECK = "parquet_matches_index"
AUDIT_JOB = "snapshot_audit_job"
AUDIT_SCHEDULE = "snapshot_audit_schedule"
AUDIT_TIME = dt.time(3, 30)


def build_audit_asset(partitions_def: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    """One audit per snapshot partition; its check fails (ERROR) when the index disagrees with the files."""
    with warnings.catch_warnings():  # partitioned asset checks are marked "preview" in Dagster 1.13
        warnings.simplefilter("ignore", category=dg.PreviewWarning)
        spec = dg.AssetCheckSpec(
            AUDIT_CHECK, asset=AUDIT_ASSET, blocking=True, partitions_def=partitions_def,
            description="The partition's index rows = its changes since the previous partition, recomputed"
                        " by diffing both Parquet files; the file = the manifest (sha256, rows).")

    @dg.asset(
        name=AUDIT_ASSET,
        partitions_def=partitions_def,
        deps=[ASSET_NAME],
        group_name=GROUP,
        owners=OWNERS,
        kinds={"parquet", "postgres"},
        check_specs=[spec],
        description="Diff audit of one balance_snapshots partition (two full Parquet reads; its own job).",
    )
    def balance_snapshots_audit(context: dg.AssetExecutionContext, snapshot_store: SnapshotStoreResource):
        """Audits one partition of balance_snapshots: index rows vs the recomputed diff, file vs manifest."""
        date = dt.date.fromisoformat(context.partition_key)
        settings = snapshot_store.settings(timezone=partitions_def.timezone)
        try:
            outcome = quality.parquet_matches_index(settings, date)
        except quality.NotPublished as exc:
            outcome = quality.Outcome(False, str(exc), {}, {"published": False})
        _logger(context)(AUDIT_CHECK, date, outcome)
        metadata = _metadata(outcome)
        yield dg.MaterializeResult(
            metadata={k: v for k, v in metadata.items() if k in outcome.metrics},
            check_results=[dg.AssetCheckResult(check_name=AUDIT_CHECK, passed=outcome.passed,
                                               severity=dg.AssetCheckSeverity.ERROR,
                                               description=outcome.description, metadata=metadata)],
        )

    return balance_snapshots_audit


def build_audit_job() -> "dg.UnresolvedAssetJobDefinition":
    """Materializes the audit asset (and so runs its check) for chosen partitions."""
    return dg.define_asset_job(
        AUDIT_JOB,
        selection=dg.AssetSelection.assets(AUDIT_ASSET),
        description="Audit balance_snapshots partitions: index rows vs the recomputed diff of the Parquet files.",
        tags={"domain": "ledger"},
    )


def build_audit_schedule(job: "dg.UnresolvedAssetJobDefinition", settings: Settings,
                         partitions_def: dg.DailyPartitionsDefinition) -> "PartitionedSchedule":
    """Daily at 03:30 (local), audits the day that just closed."""
    return dg.build_schedule_from_partitioned_job(
        job,
        name=AUDIT_SCHEDULE,
        hour_of_day=AUDIT_TIME.hour,
        minute_of_hour=AUDIT_TIME.minute,
        default_status=schedule_status(settings.automation_running),
        description=(
            f"Every day at {AUDIT_TIME:%H:%M} in the partitions' time zone, audits the day that just closed:"
            " its index rows are recomputed by diffing its Parquet file against the previous partition's"
            " (check parquet_matches_index; two full file reads, so not part of the snapshot runs)."
        ),
        tags={TRIGGER_TAG: "audit_schedule"},
        metadata=partitions_metadata(partitions_def),
    )
