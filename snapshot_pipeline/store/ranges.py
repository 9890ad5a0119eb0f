"""Ranges of ``balance_id`` in sorted Parquet files: cut points from row-group statistics, and range reads.

A partition (or a delta) is sorted by ``balance_id``, so each row group covers an id interval its
footer states: cut points come from the footers alone, and a range read opens only the row groups
that overlap it.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from snapshot_pipeline.store import parquet


def _row_group_ranges(fs: pafs.FileSystem, paths: list[str]) -> list[tuple[str, str, int]]:
    """(min, max, rows) of every row group's ``balance_id``, in file and row-group order."""
    ranges = []
    for path in paths:
        with fs.open_input_file(path) as f:
            meta = pq.ParquetFile(f).metadata
        column = meta.schema.names.index("balance_id")
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            stats = group.column(column).statistics
            if stats is None or not stats.has_min_max:
                return []
            ranges.append((stats.min, stats.max, group.num_rows))
    return ranges


def choose_boundaries(fs: pafs.FileSystem, paths: list[str], shards: int) -> list[str]:
    """K-1 increasing ``balance_id`` cut points splitting the rows of ``paths`` into K near-equal ranges.

    From the row-group statistics (the footers only) when there are enough row groups; otherwise
    from the ``balance_id`` column itself (a small partition). Fewer cut points come back when
    there are fewer distinct ids than shards; empty shards are fine.
    """
    if shards == 1 or not paths:
        return []
    groups = _row_group_ranges(fs, paths)
    if len(groups) >= 4 * shards:
        total = sum(rows for _, _, rows in groups)
        cuts: list[str] = []
        seen = 0
        for low, _, rows in groups:
            if seen >= total * (len(cuts) + 1) / shards and len(cuts) < shards - 1:
                cuts.append(low)
            seen += rows
    else:
        ids = parquet.read_files(fs, paths, ["balance_id"])["balance_id"].combine_chunks()
        count = len(ids)
        cuts = [ids[int(count * k / shards)].as_py() for k in range(1, shards)] if count else []
    return sorted(set(cuts))


def _in_range(batch: pa.RecordBatch, low: str | None, high: str | None) -> pa.RecordBatch:
    ids = batch.column(batch.schema.get_field_index("balance_id"))
    keep = None
    if low is not None:
        keep = pc.greater_equal(ids, pa.scalar(low))
    if high is not None:
        below = pc.less(ids, pa.scalar(high))
        keep = below if keep is None else pc.and_(keep, below)
    return batch if keep is None else batch.filter(keep)


def iter_range(fs: pafs.FileSystem, paths: list[str], columns: list[str] | None, low: str | None,
               high: str | None, batch_rows: int):
    """The rows of sorted files with ``low <= balance_id < high``, reading only overlapping row groups."""
    for path in paths:
        with fs.open_input_file(path) as f:
            file = pq.ParquetFile(f, pre_buffer=False)
            column = file.metadata.schema.names.index("balance_id")
            groups = []
            for i in range(file.metadata.num_row_groups):
                stats = file.metadata.row_group(i).column(column).statistics
                if stats is not None and stats.has_min_max and (
                        (high is not None and stats.min >= high) or (low is not None and stats.max < low)):
                    continue
                groups.append(i)
            if not groups:
                continue
            for batch in file.iter_batches(batch_size=batch_rows, row_groups=groups, columns=columns):
                sliced = _in_range(batch, low, high)
                if sliced.num_rows:
                    yield sliced
