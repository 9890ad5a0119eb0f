"""Names, bounds and defaults shared by the core, the Dagster definitions and the faces (CLI, HTTP).

Plain constants and one validator, no imports beyond the standard library, so every face can import it
without loading Dagster, pyarrow or a database driver.
"""

from __future__ import annotations

# Dagster names (the UI, run tags and the HTTP API refer to them)
ASSET_NAME = "balance_snapshots"
SNAPSHOT_JOB = "balance_snapshots_job"
AUDIT_ASSET = "balance_snapshots_audit"
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
TRIGGER_TAG = "snapshot_pipeline/trigger"
LATE_TRANSACTIONS_TAG = "snapshot_pipeline/late_transactions"  # on a repair run: the late journal rows found

# The Parquet dataset under SNAPSHOT_STORAGE_URI
DATASET = "balance_snapshots"

# batch_size: balances merged per chunk (one Arrow record batch)
BATCH_SIZE_MIN = 1
BATCH_SIZE_MAX = 1_000_000
BATCH_SIZE_DEFAULT = 1000
BATCH_SIZE_RULE = f"an integer from {BATCH_SIZE_MIN} to {BATCH_SIZE_MAX:,}"
SHARDS_MAX = 64  # shards a partition may be merged as (snapshot/shards.py, the run config of both jobs)

# sampled_recomputation_matches: balances recomputed from genesis
SAMPLE_SIZE_DEFAULT = 20
SAMPLE_SIZE_MAX = 10_000  # bounds the recompute: k balances' legs through the (source)/(destination) indexes

# A backfill (the gap filler's, or one launched from the UI) runs this many days per run, in one process. A
# month: Dagster caps a backfill of a self-dependent asset at this many days per tick across all its ranges
# (docs/dagster.md), so the gap filler's usual holes still go one run each.
DAYS_PER_BACKFILL_RUN = 31


def batch_size_problem(value: object) -> str | None:
    """Why ``value`` is not a valid batch_size (one line), or None when it is."""
    if isinstance(value, bool) or not isinstance(value, int) or not BATCH_SIZE_MIN <= value <= BATCH_SIZE_MAX:
        return f"batch_size must be {BATCH_SIZE_RULE}, got {value!r}"
    return None

# Sensors whose runs the version history names (``snapshot-pipeline history``: why a version was made)
REPAIR_SENSOR = "late_transaction_repair_sensor"
GAP_SENSOR = "partition_gap_sensor"
REASON_TAG = "snapshot_pipeline/reason"  # a run tag naming why a partition is (re)materialized
