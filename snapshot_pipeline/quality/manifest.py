"""The partition's file against its manifest (sha256, rows) and its index rows against a recomputed diff."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path

from snapshot_pipeline import db
from snapshot_pipeline.quality.outcome import SAMPLE_IDS, Outcome, entry_files, published_entry
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import catalog, delta, index, parquet
from snapshot_pipeline.store.diff import diff_files
from snapshot_pipeline.store.location import Store
from snapshot_pipeline.store.spool import IndexSpool


def file_checksum(settings: Settings, paths: list[str]) -> str:
    """The partition sha256 of its files (:func:`~snapshot_pipeline.store.parquet.partition_checksum`)."""
    return parquet.files_checksum(Store.at(settings.storage_uri).fs, paths)[1]


def delta_disagreement(settings: Settings, entry: index.ManifestEntry) -> str | None:
    """Why the Delta table's current version of the partition is not the manifest's files (None: it is)."""
    if entry.delta_version is None:
        return "the partition's generation is not in the Delta log yet (the recovery sensor replays it)"
    table = delta.load(Store.at(settings.storage_uri), delta.SNAPSHOTS)
    current = sorted(os.path.basename(p) for p, _ in delta.partition_files(table, delta.SNAPSHOTS,
                                                                            entry.snapshot_date)) if table else []
    if current != sorted(os.path.basename(name) for name in entry.files):
        return f"the Delta table names {len(current)} other file(s) for the partition than the manifest"
    return None


def parquet_matches_manifest(settings: Settings, date: dt.date) -> Outcome:
    """Parquet file = manifest (sha256, rows), the partition's index row count = manifest ``index_rows``, and
    the Delta table's current version names the manifest's files (what every other reader reads).

    The in-run counterpart of :func:`parquet_matches_index`: one sequential read of the file and one
    primary-key range count on the index, no diff against the predecessor.
    """
    entry = published_entry(settings, date)
    paths = entry_files(settings, entry)
    rows = parquet.count_rows(Store.at(settings.storage_uri).fs, paths)
    checksum = file_checksum(settings, paths)
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        indexed = index.count_rows(conn, date)
    problems = []
    if checksum != entry.checksum:
        problems.append("sha256 of the Parquet file differs from the manifest")
    if rows != entry.row_count:
        problems.append(f"Parquet has {rows:,} rows, manifest {entry.row_count:,}")
    if indexed != entry.index_rows:
        problems.append(f"index holds {indexed:,} rows for the partition, manifest {entry.index_rows:,}")
    disagreement = delta_disagreement(settings, entry)
    if disagreement:
        problems.append(disagreement)
    return Outcome(
        not problems,
        "; ".join(problems) or (f"checksum, {rows:,} rows and {indexed:,} index rows match the manifest;"
                                f" Delta version {entry.delta_version} names its files"),
        {"parquet_rows": rows, "index_rows": int(indexed), "manifest_index_rows": entry.index_rows},
        {"checksum_matches": checksum == entry.checksum, "delta_version": entry.delta_version},
    )


def parquet_matches_index(settings: Settings, date: dt.date) -> Outcome:
    """Manifest agreement plus the partition's index rows = its changes since the previous published
    partition, recomputed by diffing the two Parquet files (an audit: two full reads)."""
    entry = published_entry(settings, date)
    store = Store.at(settings.storage_uri)
    paths = entry_files(settings, entry)
    rows = parquet.count_rows(store.fs, paths)
    checksum = file_checksum(settings, paths)
    work_dir = Path(tempfile.mkdtemp(prefix=f"snapshot-check-{date}-"))
    try:
        with db.connect(db.snapshot_url(settings), what="snapshot index database") as conn:
            previous = index.nearest_before(conn, date)
            previous_paths = catalog.present_paths(store, previous)
            if previous_paths is None:
                previous = None  # the snapshot core diffs against nothing in that case, too
            spool = IndexSpool(work_dir, date)
            diff_files(store.fs, previous_paths, paths, spool)
            spool_path = spool.close()
            missing, extra, examples, indexed = index.compare_rows(conn, date, spool_path, SAMPLE_IDS)
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
        {"checksum_matches": checksum == entry.checksum,
         "previous_partition": previous.snapshot_date.isoformat() if previous else None,
         "differing_balance_ids": examples},
    )
