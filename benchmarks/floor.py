"""The physical floor of a partition (issue 20), measured on the same ledger and store in the same run.

A rolled-forward day cannot cost less than reading the previous partition's Parquet and writing it again
(pyarrow, the same compression and row groups as the pipeline) plus reading the day's journal rows: a
binary ``COPY`` of ``blnk.transactions`` by primary-key range, from the base's re-read point to the new
partition's watermark (exactly the rows a roll-forward step reads). Genesis cannot cost less than a binary
``COPY`` of the whole journal plus writing the partition.

Each part is timed best of ``repeats`` (warm caches, as the pipeline's own measurement runs warm).
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path

REPEATS = 3


def _manifest(url: str, date: dt.date) -> dict:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        row = conn.execute(
            "SELECT snapshot_date, files, reread_transaction_id, max_transaction_id, row_count"
            " FROM snapshot_index.partitions WHERE snapshot_date = %s", (date,)).fetchone()
    if row is None:
        raise RuntimeError(f"no published partition {date} to measure the floor against")
    return row


def _partition_paths(storage: Path, date: dt.date, files: list[str]) -> list[Path]:
    from snapshot_pipeline.store.location import Store

    return [Path(p) for p in Store.at(str(storage)).partition_paths(date, files)]


def _best(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def _copy_seconds(url: str, query: str, params: tuple, repeats: int) -> tuple[float, int]:
    """Drain ``COPY (query) TO STDOUT (FORMAT binary)`` with psycopg; (best seconds, bytes)."""
    import psycopg
    from psycopg import sql

    copy = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(sql.SQL(query))
    size = 0
    with psycopg.connect(url, autocommit=True) as conn:
        def run() -> None:
            nonlocal size
            size = 0
            with conn.cursor() as cur, cur.copy(copy, params) as stream:
                for block in stream:
                    size += len(block)
        return _best(run, repeats), size


def _rewrite_seconds(paths: list[Path], *, read: bool, repeats: int) -> tuple[float, int]:
    """pyarrow reading ``paths`` (timed when ``read``) and writing them again as one zstd file."""
    import pyarrow.parquet as pq

    from snapshot_pipeline.store.parquet import ROW_GROUP_ROWS  # the pipeline's row groups

    tables = [pq.read_table(p) for p in paths]
    rows = sum(t.num_rows for t in tables)
    with tempfile.TemporaryDirectory(prefix="bench_floor_") as tmp:
        out = Path(tmp) / "floor.parquet"

        def run() -> None:
            parts = [pq.read_table(p) for p in paths] if read else tables
            with pq.ParquetWriter(out, parts[0].schema, compression="zstd") as writer:
                for part in parts:
                    writer.write_table(part, row_group_size=ROW_GROUP_ROWS)
        return _best(run, repeats), rows


def day_floor(url: str, storage: Path, base_date: dt.date, day: dt.date, repeats: int = REPEATS) -> dict:
    """The floor of rolling ``day`` forward from ``base_date`` (both published in ``storage``)."""
    base, new = _manifest(url, base_date), _manifest(url, day)
    parquet_s, rows = _rewrite_seconds(_partition_paths(storage, base_date, base["files"]), read=True,
                                       repeats=repeats)
    low, high = int(base["reread_transaction_id"]), int(new["max_transaction_id"])
    journal_s, journal_bytes = _copy_seconds(url, "SELECT * FROM blnk.transactions WHERE id > %s AND id <= %s",
                                             (low, high), repeats)
    return {"parquet_read_write_seconds": parquet_s, "parquet_rows": rows,
            "journal_copy_seconds": journal_s, "journal_rows": high - low, "journal_bytes": journal_bytes,
            "journal_range": [low, high], "seconds": parquet_s + journal_s}


def genesis_floor(url: str, storage: Path, day: dt.date, repeats: int = REPEATS) -> dict:
    """The floor of computing ``day`` from nothing: the whole journal by binary COPY, the partition written."""
    new = _manifest(url, day)
    write_s, rows = _rewrite_seconds(_partition_paths(storage, day, new["files"]), read=False, repeats=repeats)
    journal_s, journal_bytes = _copy_seconds(url, "SELECT * FROM blnk.transactions WHERE id <= %s",
                                             (int(new["max_transaction_id"]),), repeats)
    return {"parquet_write_seconds": write_s, "parquet_rows": rows, "journal_copy_seconds": journal_s,
            "journal_bytes": journal_bytes, "seconds": write_s + journal_s}
