"""Balance snapshots in Dagster (a façade: the definitions live in the modules below).

``assets`` (``balance_snapshots``, daily partitions), ``checks`` (its in-run checks and freshness
policy), ``jobs`` (``balance_snapshots_job`` and the sharded ``balance_snapshots_sharded``),
``schedules`` (daily, month-end close), ``sensors`` (late-transaction repair, gap filling, crash
recovery), with the sensors' logic in ``gaps`` and ``recovery``.
"""

from snapshot_pipeline.defs.snapshots.assets import build_snapshot_asset
from snapshot_pipeline.defs.snapshots.checks import build_snapshot_checks, snapshot_freshness_policy
from snapshot_pipeline.defs.snapshots.jobs import build_sharded_job, build_snapshot_job, sharded_executor
from snapshot_pipeline.defs.snapshots.schedules import build_schedules
from snapshot_pipeline.defs.snapshots.sensors import build_recovery_sensor, build_sensors

__all__ = [
    "build_recovery_sensor",
    "build_schedules",
    "build_sensors",
    "build_sharded_job",
    "build_snapshot_asset",
    "build_snapshot_checks",
    "build_snapshot_job",
    "sharded_executor",
    "snapshot_freshness_policy",
]
