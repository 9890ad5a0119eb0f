"""Data-quality checks of one published snapshot partition (plain Python; ``defs/snapshots/checks.py`` wraps them).

Modules: :mod:`.outcome`, :mod:`.integrity`, :mod:`.manifest`, :mod:`.recompute`, :mod:`.drift`.

Each function returns a :class:`Outcome`: whether it passed, numbers worth plotting, and a
short explanation. Parquet is read in record batches (Arrow compute, no Python object per row);
set comparisons run inside PostgreSQL.

* :func:`integrity` -- one sequential pass over the Parquet file for three outcomes:
  :func:`row_count` (every balance existing at the cutoff has a row; rows = manifest),
  :func:`balance_identity` (``balance = credit - debit`` and ``inflight = in - out`` on every row) and
  :func:`double_entry` (per currency Σ balance = 0 and Σ credit = Σ debit: DESIGN §3);
* :func:`parquet_matches_manifest` -- Parquet file = manifest (sha256, rows) and the partition's index row
  count = manifest (cheap: one sequential read of the file, one count on the index);
* :func:`parquet_matches_index` -- the above plus the index rows recomputed by diffing the partition
  against its predecessor (two full Parquet reads: an audit, run by its own job, not in every snapshot);
* :func:`sampled_recomputation` -- k random balances recomputed from genesis in SQL equal the snapshot
  (k is bounded; the journal is reached through Blnk's ``(source)``, ``(destination)`` and
  ``(parent_transaction)`` indexes only);
* :func:`live_drift` -- latest partition only: for the balances that changed in the partition (its index
  rows), snapshot + legs dated at/after the cutoff = the live ``blnk.balances`` row.

Cost per snapshot run: one sequential read of the partition's file (integrity and checksum), an indexed
count of balances, and work proportional to the partition's changed balances and to k. Every function
handles an empty partition (0 rows) and passes on it when the ledger agrees.
"""

from snapshot_pipeline.quality.drift import live_drift
from snapshot_pipeline.quality.integrity import balance_identity, double_entry, integrity, row_count
from snapshot_pipeline.quality.manifest import file_checksum, parquet_matches_index, parquet_matches_manifest
from snapshot_pipeline.quality.outcome import SAMPLE_IDS, NotPublished, Outcome
from snapshot_pipeline.quality.recompute import DEFAULT_SAMPLE_SIZE, MAX_SAMPLE_SIZE, recompute, sampled_recomputation

__all__ = [
    "DEFAULT_SAMPLE_SIZE", "MAX_SAMPLE_SIZE", "SAMPLE_IDS", "NotPublished", "Outcome", "balance_identity",
    "double_entry", "file_checksum", "integrity", "live_drift", "parquet_matches_index",
    "parquet_matches_manifest", "recompute", "row_count", "sampled_recomputation",
]
