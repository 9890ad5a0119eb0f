"""Parquet partitions of the snapshot dataset: layout, atomic replacement, readers.

Layout (DESIGN §4)::

    <root>/balance_snapshots/snapshot_date=YYYY-MM-DD/part-00000.parquet

One file per partition, zstd, rows sorted by ``balance_id`` (the source's index
order). A partition is written to a staging file outside the dataset and then
moved over the final name with one atomic rename (a single object PUT on object
stores), so readers see the old file or the new one, never a mix or a gap.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from snapshot_pipeline.names import DATASET

SCHEMA_VERSION = 2  # 2: sorted by balance_id in byte order; rows for balances touched before creation
PART_FILE = "part-00000.parquet"
ROW_GROUP_ROWS = 131_072
AMOUNT = pa.decimal128(38, 0)
UTC_TS = pa.timestamp("us", tz="UTC")

AMOUNT_COLUMNS = (
    "balance",
    "credit_balance",
    "debit_balance",
    "inflight_balance",
    "inflight_credit_balance",
    "inflight_debit_balance",
)

SNAPSHOT_SCHEMA = pa.schema(
    [
        pa.field("balance_id", pa.string(), nullable=False),
        pa.field("ledger_id", pa.string()),
        pa.field("identity_id", pa.string()),
        pa.field("indicator", pa.string()),
        pa.field("currency", pa.string()),
        *[pa.field(name, AMOUNT, nullable=False) for name in AMOUNT_COLUMNS],
        pa.field("balance_created_at", UTC_TS),
        pa.field("cutoff_at", UTC_TS, nullable=False),
    ]
)


def resolve(storage_uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and base path for a local path or an object-store URI."""
    if "://" not in storage_uri:
        path = Path(storage_uri).expanduser().resolve()
        return pafs.LocalFileSystem(), str(path)
    fs, path = pafs.FileSystem.from_uri(storage_uri)
    return fs, path.rstrip("/")


def dataset_path(storage_uri: str) -> str:
    return f"{resolve(storage_uri)[1]}/{DATASET}"


def partition_dir(storage_uri: str, date: dt.date) -> str:
    return f"{dataset_path(storage_uri)}/snapshot_date={date.isoformat()}"


def partition_file(storage_uri: str, date: dt.date) -> str:
    return f"{partition_dir(storage_uri, date)}/{PART_FILE}"


def display_uri(storage_uri: str, path: str) -> str:
    """The user-facing location of ``path`` (keeps the URI scheme for object stores)."""
    if "://" in storage_uri:
        return storage_uri.split("://", 1)[0] + "://" + path.lstrip("/")
    return path


class PartitionWriter:
    """Streams record batches into a staging Parquet file; :meth:`publish` makes it the partition.

    Batches are buffered into row groups of ``ROW_GROUP_ROWS`` rows, so memory
    stays bounded whatever the batch size.
    """

    def __init__(self, storage_uri: str, date: dt.date, metadata: dict[str, str], *,
                 schema: pa.Schema = SNAPSHOT_SCHEMA, final_path: str | None = None):
        """``schema`` / ``final_path`` default to a snapshot partition; reports pass their own."""
        self.storage_uri = storage_uri
        self.date = date
        self.schema = schema
        self.fs, base = resolve(storage_uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.final_path = final_path or partition_file(storage_uri, date)
        # Staging lives outside the dataset directory, so no reader ever lists a partial file.
        self.staging_dir = f"{base}/.staging"
        self.fs.create_dir(self.staging_dir, recursive=True)
        # Snapshot partitions stage as ``snapshot-<D>-<uuid>.parquet``: the name the next holder of the
        # partition's lock sweeps after a dead run (store/publish.py); other writers never use that prefix.
        self._staging_prefix = f"snapshot-{date.isoformat()}" if final_path is None else f"report-{date.isoformat()}"
        self.staging_path = f"{self.staging_dir}/{self._staging_prefix}-{uuid.uuid4().hex}.parquet"
        self._metadata = {**metadata, "schema_version": str(SCHEMA_VERSION)}
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self.rows = 0
        self._sink: pa.NativeFile | None = None
        self._writer: pq.ParquetWriter | None = None

    def _open(self) -> None:
        schema = self.schema.with_metadata({f"snapshot_pipeline.{k}": v for k, v in self._metadata.items()})
        self._sink = self.fs.open_output_stream(self.staging_path)
        self._writer = pq.ParquetWriter(self._sink, schema, compression="zstd")

    def write(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def write_table(self, table: pa.Table) -> None:
        for batch in table.to_batches():
            self.write(batch)

    def _flush(self, final: bool = False) -> None:
        """Write whole row groups of ``ROW_GROUP_ROWS`` rows; the remainder waits unless ``final``."""
        if self._writer is None:
            self._open()
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        keep = 0 if final else table.num_rows % ROW_GROUP_ROWS
        assert self._writer is not None  # opened above
        if table.num_rows - keep:
            self._writer.write_table(table.slice(0, table.num_rows - keep), row_group_size=ROW_GROUP_ROWS)
        rest = table.slice(table.num_rows - keep)
        self._pending = rest.to_batches() if keep else []
        self._pending_rows = keep

    def close(self, extra_metadata: dict[str, str]) -> tuple[int, str]:
        """Finish the staging file; returns (bytes, sha256). Row count and other final facts go in metadata."""
        self._flush(final=True)
        assert self._writer is not None
        self._writer.add_key_value_metadata(
            {f"snapshot_pipeline.{k}": v for k, v in {**extra_metadata, "row_count": str(self.rows)}.items()}
        )
        self._writer.close()
        assert self._sink is not None  # opened with the writer
        self._sink.close()
        return size_and_checksum(self.fs, self.staging_path)

    def publish(self) -> str | None:
        """Move the staging file over the partition in one rename. Returns a backup of the old file, if any.

        Local files: ``os.replace`` is atomic. Object stores: the move is a server-side
        copy, and the final object appears whole or not at all.
        """
        backup = None
        exists_before = self.fs.get_file_info(self.final_path).type == pafs.FileType.File
        if self.local:
            final_dir = os.path.dirname(self.final_path)
            os.makedirs(final_dir, exist_ok=True)
            if exists_before:
                backup = f"{self.staging_dir}/{self._staging_prefix}-{uuid.uuid4().hex}.previous"
                os.link(self.final_path, backup)
            os.replace(self.staging_path, self.final_path)
            _fsync_dir(final_dir)
        else:
            if exists_before:
                backup = f"{self.staging_dir}/{self._staging_prefix}-{uuid.uuid4().hex}.previous"
                self.fs.copy_file(self.final_path, backup)
            self.fs.move(self.staging_path, self.final_path)
        return backup

    def restore(self, backup: str | None) -> None:
        """Undo :meth:`publish` (used when the index commit fails after publishing)."""
        if backup is None:
            self._delete(self.final_path)
        elif self.local:
            os.replace(backup, self.final_path)
        else:
            self.fs.move(backup, self.final_path)

    def discard(self, backup: str | None) -> None:
        if backup:
            self._delete(backup)

    def _delete(self, path: str) -> None:
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            self.fs.delete_file(path)

    def abort(self) -> None:
        """Drop the staging file (the published partition, if any, is untouched)."""
        try:
            if self._writer is not None:
                self._writer.close()
            if self._sink is not None:
                self._sink.close()
        except Exception:  # noqa: BLE001 - best effort on an already failing path
            pass
        self._writer = None
        self._delete(self.staging_path)


def size_and_checksum(fs: pafs.FileSystem, path: str) -> tuple[int, str]:
    """(bytes, sha256 hex) of a file, read sequentially in 8 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with fs.open_input_stream(path) as stream:
        while chunk := stream.read(8 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def exists(storage_uri: str, date: dt.date) -> bool:
    fs, _ = resolve(storage_uri)
    return fs.get_file_info(partition_file(storage_uri, date)).type == pafs.FileType.File


def delete_partition(storage_uri: str, date: dt.date) -> None:
    fs, _ = resolve(storage_uri)
    path = partition_dir(storage_uri, date)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def read_metadata(storage_uri: str, date: dt.date) -> dict[str, str]:
    fs, _ = resolve(storage_uri)
    with fs.open_input_file(partition_file(storage_uri, date)) as f:
        meta = pq.ParquetFile(f).metadata.metadata or {}
    prefix = b"snapshot_pipeline."
    return {k[len(prefix):].decode(): v.decode() for k, v in meta.items() if k.startswith(prefix)}


def read_partition(storage_uri: str, date: dt.date, columns: list[str] | None = None) -> pa.Table:
    fs, _ = resolve(storage_uri)
    return pq.read_table(partition_file(storage_uri, date), filesystem=fs, columns=columns)


def iter_file(fs: pafs.FileSystem, path: str, columns: list[str], batch_rows: int = 65_536
              ) -> Iterator[pa.RecordBatch]:
    """Stream a Parquet file's record batches; memory stays flat (no read-ahead of whole row groups)."""
    with fs.open_input_file(path) as f:
        yield from pq.ParquetFile(f, pre_buffer=False).iter_batches(batch_size=batch_rows, columns=columns)


def iter_partition(storage_uri: str, date: dt.date, columns: list[str], batch_rows: int = 65_536
                   ) -> Iterator[pa.RecordBatch]:
    fs, _ = resolve(storage_uri)
    yield from iter_file(fs, partition_file(storage_uri, date), columns, batch_rows)
