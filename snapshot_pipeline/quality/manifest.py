"""The partition's file against its manifest (sha256, rows) and its index rows against a recomputed diff."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from snapshot_pipeline import db
from snapshot_pipeline.quality.outcome import SAMPLE_IDS, Outcome, published_entry
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import index
from snapshot_pipeline.store import parquet as store
from snapshot_pipeline.store.diff import diff_files
from snapshot_pipeline.store.spool import IndexSpool


def file_checksum(settings: Settings, date: dt.date) -> str:
    fs, _ = store.resolve(settings.storage_uri)
    return store.size_and_checksum(fs, store.partition_file(settings.storage_uri, date))[1]


def parquet_matches_manifest(settings: Settings, date: dt.date) -> Outcome:
    """Parquet file = manifest (sha256, rows) and the partition's index row count = manifest ``index_rows``.

    The in-run counterpart of :func:`parquet_matches_index`: one sequential read of the file and one
    primary-key range count on the index, no diff against the predecessor.
    """
    entry = published_entry(settings, date)
    fs, _ = store.resolve(settings.storage_uri)
    with fs.open_input_file(store.partition_file(settings.storage_uri, date)) as f:
        rows = pq.ParquetFile(f).metadata.num_rows
    checksum = file_checksum(settings, date)
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        indexed = index.count_rows(conn, date)
    problems = []
    if checksum != entry.checksum:
        problems.append("sha256 of the Parquet file differs from the manifest")
    if rows != entry.row_count:
        problems.append(f"Parquet has {rows:,} rows, manifest {entry.row_count:,}")
    if indexed != entry.index_rows:
        problems.append(f"index holds {indexed:,} rows for the partition, manifest {entry.index_rows:,}")
    return Outcome(
        not problems,
        "; ".join(problems) or f"checksum, {rows:,} rows and {indexed:,} index rows match the manifest",
        {"parquet_rows": rows, "index_rows": int(indexed), "manifest_index_rows": entry.index_rows},
        {"checksum_matches": checksum == entry.checksum},
    )


def parquet_matches_index(settings: Settings, date: dt.date) -> Outcome:
    """Manifest agreement plus the partition's index rows = its changes since the previous published
    partition, recomputed by diffing the two Parquet files (an audit: two full reads)."""
    entry = published_entry(settings, date)
    fs, _ = store.resolve(settings.storage_uri)
    path = store.partition_file(settings.storage_uri, date)
    with fs.open_input_file(path) as f:
        rows = pq.ParquetFile(f).metadata.num_rows
    checksum = file_checksum(settings, date)
    work_dir = Path(tempfile.mkdtemp(prefix=f"snapshot-check-{date}-"))
    try:
        with db.connect(db.snapshot_url(settings), what="snapshot index database") as conn:
            previous = index.nearest_before(conn, date)
            if previous is not None and not store.exists(settings.storage_uri, previous.snapshot_date):
                previous = None  # the snapshot core diffs against nothing in that case, too
            spool = IndexSpool(work_dir, date)
            diff_files(fs, store.partition_file(settings.storage_uri, previous.snapshot_date) if previous else None,
                       path, spool)
            csv_path = spool.close()
            missing, extra, examples, indexed = index.compare_rows(conn, date, csv_path, SAMPLE_IDS)
            conn.rollback()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    problems = []
    if checksum != entry.checksum:
        problems.append("sha256 of the Parquet file differs from the manifest")
    if rows != entry.row_count:
        problems.append(f"Parquet has {rows:,} rows, manifest {entry.row_count:,}")
    if missing or extra:
        problems.append(f"index rows differ from the recomputed changes: {missing:,} missing, {extra:,} unexpected")
    if indexed != entry.index_rows:
        problems.append(f"index holds {indexed:,} rows for the partition, manifest {entry.index_rows:,}")
    return Outcome(
        not problems,
        "; ".join(problems) or (f"checksum and {rows:,} rows match the manifest; {indexed:,} index rows = changes"
                                f" since {previous.snapshot_date if previous else 'nothing (full anchor)'}"),
        {"parquet_rows": rows, "index_rows": indexed, "expected_index_rows": spool.rows,
         "index_rows_missing": missing, "index_rows_unexpected": extra},
        {"checksum_matches": checksum == entry.checksum, "previous_partition": previous.snapshot_date.isoformat() if previous else None,
         "differing_balance_ids": examples},
    )
