"""The diff audit of ``balance_snapshots``: too heavy for every snapshot run, so it has its own asset, job and schedule.

``parquet_matches_index`` recomputes a partition's index rows by diffing its Parquet file against the
previous published partition's (two full reads) and compares them with the index. It is the check of
the ``balance_snapshots_audit`` asset (same daily partitions, in the ``ledger_db`` pool: the comparison
runs in the snapshot index, which lives in the ledger's database unless ``SNAPSHOT_DATABASE_URL`` moves
it), materialized by ``snapshot_audit_job`` (``jobs.py``) on ``snapshot_audit_schedule``
(``schedules.py``; daily, after the snapshot) or from the UI for any partition.
"""


import datetime as dt
import warnings

import dagster as dg

from snapshot_pipeline import quality
from snapshot_pipeline.defs.common.outcomes import outcome_logger, outcome_metadata
from snapshot_pipeline.defs.common.pools import LEDGER_DB_POOL
from snapshot_pipeline.defs.common.resources import SnapshotStoreResource
from snapshot_pipeline.defs.snapshots.assets import GROUP, OWNERS
from snapshot_pipeline.names import ASSET_NAME, AUDIT_ASSET

AUDIT_CHECK = "parquet_matches_index"


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
        pool=LEDGER_DB_POOL,
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
        outcome_logger(context)(AUDIT_CHECK, date, outcome)
        metadata = outcome_metadata(outcome)
        yield dg.MaterializeResult(
            metadata={k: v for k, v in metadata.items() if k in outcome.metrics},
            check_results=[dg.AssetCheckResult(check_name=AUDIT_CHECK, passed=outcome.passed,
                                               severity=dg.AssetCheckSeverity.ERROR,
                                               description=outcome.description, metadata=metadata)],
        )

    return balance_snapshots_audit
