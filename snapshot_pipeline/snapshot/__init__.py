"""Daily snapshot partitions: the plain-Python core the Dagster asset, the CLI and the queries call.

A façade: :func:`take_snapshot` (:mod:`~snapshot_pipeline.snapshot.take`) materializes one partition;
the roll-forward step lives in :mod:`~snapshot_pipeline.snapshot.roll`, the merge in
:mod:`~snapshot_pipeline.snapshot.merge`, the publish in :mod:`~snapshot_pipeline.snapshot.commit`,
sharded partitions in :mod:`~snapshot_pipeline.snapshot.shards`, the result types in
:mod:`~snapshot_pipeline.snapshot.results`. Nothing here imports dagster.
"""

from snapshot_pipeline.snapshot.results import (
    ROLL_VERSION,
    AmountOverflow,
    SnapshotError,
    SnapshotResult,
    validate_batch_size,
)
from snapshot_pipeline.snapshot.roll import origin_of
from snapshot_pipeline.snapshot.take import take_snapshot

__all__ = ["ROLL_VERSION", "AmountOverflow", "SnapshotError", "SnapshotResult", "origin_of", "take_snapshot",
           "validate_batch_size"]
