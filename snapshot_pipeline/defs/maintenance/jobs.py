"""Maintenance jobs: ``snapshot_audit_job`` (the diff audit) and ``snapshot_retention_job`` (one op).

The retention logic lives in :mod:`snapshot_pipeline.store.retention`. Its schedule (``schedules.py``)
starts STOPPED unless ``SNAPSHOT_RETENTION_DEFAULT_STATUS=RUNNING``: deleting history is opt-in; run the
job with ``dry_run: true`` from the launchpad first to see the plan.
"""

import datetime as dt

import dagster as dg
from pydantic import Field

from snapshot_pipeline.defs.common.resources import SnapshotStoreResource
from snapshot_pipeline.names import ASSET_NAME, AUDIT_ASSET
from snapshot_pipeline.store import retention

AUDIT_JOB = "snapshot_audit_job"
RETENTION_JOB = "snapshot_retention_job"


def build_audit_job() -> "dg.UnresolvedAssetJobDefinition":
    """Materializes the audit asset (and so runs its check) for chosen partitions."""
    return dg.define_asset_job(
        AUDIT_JOB,
        selection=dg.AssetSelection.assets(AUDIT_ASSET),
        description="Audit balance_snapshots partitions: index rows vs the recomputed diff of the Parquet files.",
        tags={"domain": "ledger"},
    )


class RetentionConfig(dg.Config):
    """Run configuration of a retention run (policy defaults come from the environment)."""

    dry_run: bool = Field(default=False, description="report the plan, change nothing")
    retention_days: int | None = Field(default=None, ge=1, description="override SNAPSHOT_RETENTION_DAYS")
    retention_months: int | None = Field(default=None, ge=0, description="override SNAPSHOT_RETENTION_MONTHS")
    reference_date: str | None = Field(
        default=None, description="YYYY-MM-DD the policy counts back from (default: the last closed day)")


def _metadata(report: dict) -> dict:
    """Numbers of the report as metadata (they plot across runs), plus the full report as JSON."""
    out = {
        "dry_run": report["dry_run"],
        "reference_date": report["reference_date"],
        "retention_days": report["retention_days"],
        "retention_months": report["retention_months"],
        "partitions_kept": report["partitions_kept"],
        "report": dg.MetadataValue.json(report),
    }
    if report["dry_run"]:
        out.update(partitions_to_remove=len(report["partitions_to_remove"]), bytes_to_free=report["bytes_to_free"],
                   index_rows_to_delete=report["index_rows_to_delete"])
    else:
        out.update(partitions_removed=len(report["partitions_removed"]),
                   partitions_skipped=len(report["partitions_skipped"]), bytes_freed=report["bytes_freed"],
                   index_rows_deleted=report["index_rows_deleted"],
                   index_partitions_dropped=len(report["index_partitions_dropped"]),
                   parquet_dirs_deleted=report["parquet_dirs_deleted"])
    return out


def build_retention_job(partitions_def: dg.DailyPartitionsDefinition) -> dg.JobDefinition:
    timezone = partitions_def.timezone

    @dg.op(name="apply_snapshot_retention", tags={"kind": "postgres"})
    def apply_snapshot_retention(context: dg.OpExecutionContext, config: RetentionConfig,
                                 snapshot_store: SnapshotStoreResource):
        """Remove partitions outside the tiered retention policy, keeping every retained answer exact.

        Daily partitions are kept SNAPSHOT_RETENTION_DAYS days (default 730), then month-end
        partitions SNAPSHOT_RETENTION_MONTHS months (default 84). Before partitions are removed, the
        index rows of the next retained partition are re-diffed against the previous retained one
        (a full anchor for the oldest), in the same index transaction as the deletions; then the
        Parquet directories go. Reports what it removed (or, with dry_run, would remove).
        """
        settings = snapshot_store.settings(timezone=timezone)
        policy = retention.Policy(
            config.retention_days if config.retention_days is not None else settings.retention_days,
            config.retention_months if config.retention_months is not None else settings.retention_months,
        )
        reference = dt.date.fromisoformat(config.reference_date) if config.reference_date else None
        report = retention.apply_retention(settings, reference=reference, dry_run=config.dry_run, policy=policy,
                                           log=context.log.info)
        metadata = _metadata(report)
        context.log_event(dg.AssetObservation(asset_key=ASSET_NAME, metadata=metadata))
        context.add_output_metadata(metadata)
        return report

    @dg.job(name=RETENTION_JOB, tags={"domain": "ledger"},
            description="Tiered retention of balance_snapshots partitions (Parquet, index, manifest).")
    def snapshot_retention_job():
        apply_snapshot_retention()

    return snapshot_retention_job
