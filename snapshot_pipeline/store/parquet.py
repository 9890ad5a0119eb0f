"""Parquet files of the store: the snapshot schema, the streaming writer, checksums, readers.

A snapshot partition (``<root>/balance_snapshots/snapshot_date=YYYY-MM-DD/``, the layout of
:mod:`snapshot_pipeline.store.location`) is K files (one per shard, K = 1 unless sharded), zstd,
rows sorted by ``balance_id`` within each file and across files in shard order, at run-unique
names inside the Delta table ``balance_snapshots`` (:mod:`snapshot_pipeline.store.delta`).
Nothing is ever overwritten: the manifest (``snapshot_index.partitions.files``) and the
Delta log name the files that count (:mod:`snapshot_pipeline.store.publication`); superseded
files stay until vacuum. Reports are Delta tables written the same way.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import hashlib
import os
import queue
import re
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from snapshot_pipeline.amounts import AMOUNT_COLUMNS, STORED
from snapshot_pipeline.store import records
from snapshot_pipeline.store.location import Store

SCHEMA_VERSION = 2  # 2: sorted by balance_id in byte order; rows for balances touched before creation
_PART_NAME = re.compile(r"^part-(\d{5})(?:-([0-9a-f]+))?\.parquet$")
ROW_GROUP_ROWS = 131_072  # rows per Parquet row group written (and per chunk the core aggregates)
READ_BATCH_ROWS = 65_536  # rows per record batch read back from Parquet (memory stays flat)
READ_AHEAD_ROWS = 131_072  # rows a base partition is read ahead of the merge (ReadAhead): ~30 MB at 1M balances
AMOUNT = STORED
UTC_TS = pa.timestamp("us", tz="UTC")

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


def part_name(shard: int, token: str) -> str:
    """``part-0000k-<token>.parquet``: shard ``k`` of the run whose publish token is ``token``."""
    return f"part-{shard:05d}-{token}.parquet"


def is_part_name(name: str) -> bool:
    return _PART_NAME.match(name) is not None


def partition_checksum(file_checksums: list[str]) -> str:
    """The partition's sha256: its file's for one file; for K files, the sha256 of their K hex digests."""
    if len(file_checksums) == 1:
        return file_checksums[0]
    return hashlib.sha256("\n".join(file_checksums).encode()).hexdigest()


def files_checksum(fs: pafs.FileSystem, paths: list[str]) -> tuple[int, str]:
    """(bytes, partition sha256) of a partition's files (see :func:`partition_checksum`)."""
    measured = [size_and_checksum(fs, path) for path in paths]
    return sum(size for size, _ in measured), partition_checksum([checksum for _, checksum in measured])


def move_into(fs: pafs.FileSystem, source: str, target: str) -> None:
    """Move a finished staging file to ``target``: locally one rename and a directory fsync; object
    stores a server-side copy (the object appears whole or not at all), then the source's delete."""
    if isinstance(fs, pafs.LocalFileSystem):
        directory = os.path.dirname(target)
        os.makedirs(directory, exist_ok=True)
        os.replace(source, target)
        records.fsync_dir(directory)
    else:
        fs.move(source, target)


@dataclasses.dataclass(frozen=True)
class StagedFile:
    """A finished staging file of one shard and the run-unique name it is published under (a JSON-able
    record: a sharded run's shard step hands it to the commit step)."""

    storage_uri: str
    staging_path: str
    final_path: str
    rows: int
    bytes: int
    checksum: str

    @property
    def fs(self) -> pafs.FileSystem:
        return Store.at(self.storage_uri).fs

    def move_in(self) -> None:
        """Move the staged file to its final name (nothing to do for a file written in place)."""
        if self.staging_path != self.final_path:
            move_into(self.fs, self.staging_path, self.final_path)

    def withdraw(self) -> None:
        """Delete the published file (its manifest commit failed; the name was this run's alone)."""
        records.delete_if_file(self.fs, self.final_path)

    def abort(self) -> None:
        records.delete_if_file(self.fs, self.staging_path)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class PartitionWriter:
    """Streams record batches into a Parquet file; :meth:`finish` hands it over to a publication.

    Batches are buffered into row groups of ``ROW_GROUP_ROWS`` rows, so memory
    stays bounded whatever the batch size. Each whole row group is encoded and written on a thread while the
    caller builds the next (Parquet encoding releases the GIL); at most one row group is in flight. A writing
    error is raised by the write that hands over the next row group, or by :meth:`close` / :meth:`finish`;
    from then on every write and close raises it again (the file is only fit for :meth:`abort`).
    """

    def __init__(self, store: Store, date: dt.date, metadata: dict[str, str], *,
                 schema: pa.Schema = SNAPSHOT_SCHEMA, final_path: str | None = None,
                 shard: int = 0, token: str | None = None, staging_dir: str | None = None):
        """A snapshot shard file by default (``part-<shard>-<token>.parquet``); reports pass ``final_path``.

        The file is written in place at its final, run-unique name inside the Delta table's partition
        directory: no Delta version names it until the publication commits it, so no table reader
        sees it. Sharded runs (whose shards do not hold the partition's lock) pass ``staging_dir``:
        the file is staged there and moved in by the commit, under the lock.
        """
        self.store = store
        self.date = date
        self.schema = schema
        self.fs = store.fs
        self.shard = shard
        self.token = token or uuid.uuid4().hex[:16]
        self.final_path = final_path or f"{store.partition_dir(date)}/{part_name(shard, self.token)}"
        if staging_dir is None:
            self.staging_dir = os.path.dirname(self.final_path)
            self.staging_path = self.final_path
        else:
            self.staging_dir = staging_dir
            # staged as ``snapshot-<D>-<uuid>.parquet``: the name the next holder of the partition's
            # lock sweeps after a dead run (store/recovery.py)
            self.staging_path = f"{staging_dir}/snapshot-{date.isoformat()}-{uuid.uuid4().hex}.parquet"
        self._metadata = {**metadata, "schema_version": str(SCHEMA_VERSION)}
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self.rows = 0
        self._sink: pa.NativeFile | None = None
        self._writer: pq.ParquetWriter | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._in_flight: Future | None = None
        self._error: BaseException | None = None  # a row group failed: the file is unfit

    def _open(self) -> None:
        schema = self.schema.with_metadata({f"snapshot_pipeline.{k}": v for k, v in self._metadata.items()})
        self.fs.create_dir(self.staging_dir, recursive=True)
        self._sink = self.fs.open_output_stream(self.staging_path)
        self._writer = pq.ParquetWriter(self._sink, schema, compression="zstd")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-write")

    def write(self, batch: pa.RecordBatch) -> None:
        if self._error is not None:
            raise self._error
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
        assert self._writer is not None and self._thread is not None  # opened above
        if table.num_rows - keep:
            self._wait()  # the previous row group is written (or its error raised) before the next is handed over
            self._in_flight = self._thread.submit(self._writer.write_table, table.slice(0, table.num_rows - keep),
                                                  row_group_size=ROW_GROUP_ROWS)
        rest = table.slice(table.num_rows - keep)
        self._pending = rest.to_batches() if keep else []
        self._pending_rows = keep

    def _wait(self) -> None:
        """Wait for the row group being written; raise its error (or an earlier one's)."""
        in_flight, self._in_flight = self._in_flight, None
        if self._error is not None:
            raise self._error
        if in_flight is not None:
            try:
                in_flight.result()
            except BaseException as exc:
                self._error = exc  # the file lacks a row group: every later write and close fails too
                raise

    def _stop_thread(self) -> None:
        """Wait for the row group being written, whatever its outcome, and end the writing thread."""
        try:
            self._wait()
        finally:
            if self._thread is not None:
                self._thread.shutdown(wait=True)
                self._thread = None

    def close(self, extra_metadata: dict[str, str]) -> tuple[int, str]:
        """Finish the staging file; returns (bytes, sha256). Row count and other final facts go in metadata."""
        try:
            self._flush(final=True)
        finally:
            self._stop_thread()
        assert self._writer is not None
        self._writer.add_key_value_metadata(
            {f"snapshot_pipeline.{k}": v for k, v in {**extra_metadata, "row_count": str(self.rows)}.items()}
        )
        self._writer.close()
        assert self._sink is not None  # opened with the writer
        self._sink.close()
        return size_and_checksum(self.fs, self.staging_path)

    def finish(self, extra_metadata: dict[str, str]) -> StagedFile:
        """:meth:`close`, as the staged file a publication moves into the dataset."""
        size, checksum = self.close(extra_metadata)
        return StagedFile(self.store.uri, self.staging_path, self.final_path, self.rows, size, checksum)

    def _delete(self, path: str) -> None:
        records.delete_if_file(self.fs, path)

    def abort(self) -> None:
        """Drop the staging file (the published partition, if any, is untouched)."""
        try:
            self._stop_thread()  # never close the file under a row group being written
        except Exception:  # noqa: BLE001 - its error is the failure being aborted, or one more of it
            pass
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


def delete_partition(store: Store, date: dt.date) -> None:
    store.remove_tree(store.partition_dir(date))


def partition_dates(store: Store) -> list[dt.date]:
    """Dates that have a ``snapshot_date=`` directory in the dataset (published or orphan)."""
    if store.fs.get_file_info(store.dataset).type == pafs.FileType.NotFound:
        return []
    found = []
    for info in store.fs.get_file_info(pafs.FileSelector(store.dataset)):
        name = info.base_name
        if info.type == pafs.FileType.Directory and name.startswith("snapshot_date="):
            try:
                found.append(dt.date.fromisoformat(name.split("=", 1)[1]))
            except ValueError:
                continue
    return sorted(found)


def all_present(fs: pafs.FileSystem, paths: list[str]) -> bool:
    return bool(paths) and all(info.type == pafs.FileType.File for info in fs.get_file_info(paths))


def list_partition(store: Store, date: dt.date) -> list[str]:
    """Every part file in the partition's directory (the manifest's, and any superseded or orphaned ones)."""
    selector = pafs.FileSelector(store.partition_dir(date), allow_not_found=True)
    return sorted(info.path for info in store.fs.get_file_info(selector)
                  if info.type == pafs.FileType.File and is_part_name(info.base_name))


def read_file_metadata(fs: pafs.FileSystem, path: str) -> dict[str, str]:
    """The ``snapshot_pipeline.*`` key-value metadata of a Parquet file's footer."""
    with fs.open_input_file(path) as f:
        meta = pq.ParquetFile(f).metadata.metadata or {}
    prefix = b"snapshot_pipeline."
    return {k[len(prefix):].decode(): v.decode() for k, v in meta.items() if k.startswith(prefix)}


def row_count_and_id_range(fs: pafs.FileSystem, path: str) -> tuple[int, str | None, str | None]:
    """(rows, first balance_id, last balance_id) of a snapshot file, from its footer's statistics."""
    with fs.open_input_file(path) as f:
        meta = pq.ParquetFile(f).metadata
    first = last = None
    if meta.num_rows and meta.schema.names and meta.schema.names[0] == "balance_id":
        groups = [meta.row_group(i).column(0).statistics for i in range(meta.num_row_groups)]
        if all(g is not None and g.has_min_max for g in groups):
            first, last = min(g.min for g in groups), max(g.max for g in groups)
    return meta.num_rows, first, last


def count_rows(fs: pafs.FileSystem, paths: list[str]) -> int:
    """The rows of a partition's files, from their footers (no data read)."""
    total = 0
    for path in paths:
        with fs.open_input_file(path) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def read_files(fs: pafs.FileSystem, paths: list[str], columns: list[str] | None = None, filters=None) -> pa.Table:
    """A partition's files as one table (in shard order, so sorted by ``balance_id``)."""
    # partitioning=None: the files' own columns only (no snapshot_date inferred from the directory name)
    return pq.read_table(paths, filesystem=fs, columns=columns, filters=filters, partitioning=None)


def read_rows_at(fs: pafs.FileSystem, paths: list[str], positions: list[int], columns: list[str]) -> pa.Table:
    """The rows at ``positions`` (sorted, counted over the files in order), reading only the row groups that
    hold one of them."""
    parts, offset = [], 0
    for path in paths:
        with fs.open_input_file(path) as f:
            parquet_file = pq.ParquetFile(f)
            for group in range(parquet_file.metadata.num_row_groups):
                rows = parquet_file.metadata.row_group(group).num_rows
                first, last = bisect.bisect_left(positions, offset), bisect.bisect_left(positions, offset + rows)
                inside = [p - offset for p in positions[first:last]]
                if inside:
                    parts.append(parquet_file.read_row_group(group, columns=columns).take(inside))
                offset += rows
    return pa.concat_tables(parts) if parts else pa.table({})


def iter_file(fs: pafs.FileSystem, path: str, columns: list[str], batch_rows: int = READ_BATCH_ROWS
              ) -> Iterator[pa.RecordBatch]:
    """Stream a Parquet file's record batches; memory stays flat (no read-ahead of whole row groups)."""
    with fs.open_input_file(path) as f:
        yield from pq.ParquetFile(f, pre_buffer=False).iter_batches(batch_size=batch_rows, columns=columns)


def iter_files(fs: pafs.FileSystem, paths: list[str], columns: list[str], batch_rows: int = READ_BATCH_ROWS
               ) -> Iterator[pa.RecordBatch]:
    """Stream a partition's files one after the other (shard order = ``balance_id`` order)."""
    for path in paths:
        yield from iter_file(fs, path, columns, batch_rows)


class ReadAhead:
    """Record batches read on a thread from the moment this is made, up to ``depth`` batches in its queue ahead
    of the consumer, plus the one the thread holds while it waits to hand it over (:func:`read_ahead_depth`).

    Decoding Parquet releases the GIL, so the base partition is read while the caller waits for PostgreSQL (the
    journal staged, the delta's first batch) and, later, while it merges. A reading error is raised where the
    consumer takes the next batch; :meth:`close` stops the thread and drops what it read ahead (dropping this
    object stops the thread too). Only the thread that consumes may call :meth:`close`."""

    _END = object()
    POLL_SECONDS = 0.1
    CLOSE_SECONDS = 30.0  # close() waits this long at most for a read in progress (object storage) to end

    def __init__(self, batches: Iterator[pa.RecordBatch], depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._read, args=(batches, self._queue, self._stop),
                                        name="parquet-read-ahead", daemon=True)
        self._thread.start()

    @classmethod
    def _read(cls, batches: Iterator[pa.RecordBatch], out: queue.Queue, stop: threading.Event) -> None:
        # no reference to the ReadAhead itself: dropping it closes it (__del__)
        def hand_over(item) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=cls.POLL_SECONDS)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            while not stop.is_set():
                batch = next(batches, cls._END)
                if not hand_over(batch) or batch is cls._END:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            hand_over(exc)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> ReadAhead:
        return self

    def __next__(self) -> pa.RecordBatch:
        while not self._done:
            try:
                item = self._queue.get(timeout=self.POLL_SECONDS)
            except queue.Empty:
                if self._thread.is_alive() or not self._queue.empty():
                    continue
                self.close()
                raise RuntimeError("the Parquet read-ahead thread ended without handing over its end") from None
            if item is self._END:
                self.close()
                break
            if isinstance(item, BaseException):
                self.close()
                raise item
            return item
        raise StopIteration

    def close(self) -> None:
        """Stop reading: wait for a read in progress to end (at most :attr:`CLOSE_SECONDS`) and drop what was
        read ahead."""
        self._done = True
        self._stop.set()
        self._drain()
        self._thread.join(self.CLOSE_SECONDS)
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def __del__(self) -> None:
        self._stop.set()


def read_ahead_depth(batch_rows: int, rows: int = READ_AHEAD_ROWS) -> int:
    """The queue depth that keeps about ``rows`` read ahead in batches of ``batch_rows`` (the thread holds one
    batch beside its queue), at least one."""
    return max(1, rows // batch_rows - 1)
