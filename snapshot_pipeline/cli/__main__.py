"""``python -m snapshot_pipeline.cli``: the same as the ``snapshot-pipeline`` console script."""

from snapshot_pipeline.cli import run

run()
