"""``python -m snapshot_pipeline.cli``: the same as the ``snapshot-pipeline`` console script."""

import sys

from snapshot_pipeline.cli import main

sys.exit(main())
