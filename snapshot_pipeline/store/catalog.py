"""What is published: the files each partition's manifest row names, and reading them.

The manifest (``snapshot_index.partitions.files``) is the one source of which files make a
partition for the package's own readers (``balance_at``, ``balances_at``, the roll-forward base,
checks, reports). It names the same files as the Delta table's current version once the
publication's Delta commit is made (:mod:`snapshot_pipeline.store.publication`); a partition's
directory also holds earlier generations' files (kept for the history window) and, for a moment, a
running publication's new files, which no manifest row names. Every reader of the package resolves
files here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import psycopg
import pyarrow as pa

from snapshot_pipeline import db
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import index, parquet
from snapshot_pipeline.store.location import Store


def entry_paths(store: Store, entry: index.ManifestEntry) -> list[str]:
    """The filesystem paths of the files ``entry`` names."""
    return store.partition_paths(entry.snapshot_date, list(entry.files))


def read_ahead(store: Store, entry: index.ManifestEntry | None, columns: list[str],
               batch_rows: int = parquet.READ_BATCH_ROWS) -> parquet.ReadAhead:
    """``entry``'s rows in file order (``balance_id`` order), read on a thread from now on, at most
    :data:`parquet.READ_AHEAD_ROWS` ahead of the consumer, or two batches of ``batch_rows`` when that is more
    (:func:`parquet.read_ahead_depth`, :class:`parquet.ReadAhead`); no rows when ``entry`` is None (a genesis).
    The caller closes it when it stops reading early."""
    paths = entry_paths(store, entry) if entry is not None else []
    return parquet.ReadAhead(parquet.iter_files(store.fs, paths, columns, batch_rows),
                             parquet.read_ahead_depth(batch_rows))


def present_paths(store: Store, entry: index.ManifestEntry | None) -> list[str] | None:
    """``entry``'s paths when every one of them exists, else None (unpublished, or files missing)."""
    if entry is None:
        return None
    paths = entry_paths(store, entry)
    return paths if parquet.all_present(store.fs, paths) else None


def _entry(settings: Settings, date: dt.date, conn: psycopg.Connection | None) -> index.ManifestEntry | None:
    if conn is not None:
        return index.manifest(conn, date)
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as own:
        return index.manifest(own, date) if index.ready(own) else None


def paths(settings: Settings, date: dt.date, conn: psycopg.Connection | None = None) -> list[str] | None:
    """The files of partition ``date`` (None when it is not published or a file is missing)."""
    return present_paths(Store.at(settings.storage_uri), _entry(settings, date, conn))


def exists(settings: Settings, date: dt.date, conn: psycopg.Connection | None = None) -> bool:
    return paths(settings, date, conn) is not None


def _require(settings: Settings, date: dt.date, conn: psycopg.Connection | None) -> list[str]:
    found = paths(settings, date, conn)
    if found is None:
        raise FileNotFoundError(f"balance_snapshots {date} is not published in {settings.storage_uri}")
    return found


def read_partition(settings: Settings, date: dt.date, columns: list[str] | None = None,
                   conn: psycopg.Connection | None = None, filters=None) -> pa.Table:
    return parquet.read_files(Store.at(settings.storage_uri).fs, _require(settings, date, conn), columns, filters)


def iter_partition(settings: Settings, date: dt.date, columns: list[str], batch_rows: int = parquet.READ_BATCH_ROWS,
                   conn: psycopg.Connection | None = None) -> Iterator[pa.RecordBatch]:
    yield from parquet.iter_files(Store.at(settings.storage_uri).fs, _require(settings, date, conn), columns,
                                  batch_rows)


def read_metadata(settings: Settings, date: dt.date, conn: psycopg.Connection | None = None) -> dict[str, str]:
    """The footer metadata of the partition's first file (every shard carries the same run facts)."""
    return parquet.read_file_metadata(Store.at(settings.storage_uri).fs, _require(settings, date, conn)[0])
