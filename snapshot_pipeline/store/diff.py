"""The rows of one partition file that differ from another's: what the index must hold for it."""

from __future__ import annotations

import pyarrow.compute as pc
import pyarrow.fs as pafs

from snapshot_pipeline.store import align
from snapshot_pipeline.store.parquet import AMOUNT_COLUMNS, iter_files
from snapshot_pipeline.store.spool import IndexSpool

COLUMNS = ["balance_id", "currency", *AMOUNT_COLUMNS]


def diff_files(fs: pafs.FileSystem, previous_path: list[str] | None, current_path: list[str],
               spool: IndexSpool) -> None:
    """Spool the rows of partition ``current_path`` that are new or differ from ``previous_path`` (all, when None).

    Each is a partition's files in shard order, so sorted by ``balance_id``; the two are walked
    together, chunk by chunk. A previous partition in another order (written before byte-order
    sorting) is not diffed against: every row is spooled.
    """
    try:
        _diff(fs, previous_path, current_path, spool)
    except align.NotSorted:
        if previous_path is None:
            raise
        spool.reset()
        _diff(fs, None, current_path, spool)


def _diff(fs: pafs.FileSystem, previous_path: list[str] | None, current_path: list[str], spool: IndexSpool) -> None:
    current = align.SortedStream(iter_files(fs, current_path, COLUMNS))
    previous = align.SortedStream(iter_files(fs, previous_path, COLUMNS) if previous_path else iter([]))
    for before, now in align.aligned(previous, current):
        if now is None or now.num_rows == 0:
            continue
        if before is None or before.num_rows == 0:
            spool.write(now)
            continue
        positions = pc.index_in(now["balance_id"], value_set=before["balance_id"].combine_chunks())
        differs = pc.is_null(positions)
        for name in AMOUNT_COLUMNS:
            old = pc.take(before[name], positions)
            differs = pc.or_(differs, pc.fill_null(pc.not_equal(now[name], old), True))
        spool.write(now.filter(differs))
