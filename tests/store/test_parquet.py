"""The partition writer: whole row groups in the order written, and a failed write fails the file and leaves none."""

import datetime as dt
import io
import threading

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from snapshot_pipeline.store import parquet
from snapshot_pipeline.store.location import Store

DATE = dt.date(2026, 1, 5)
SCHEMA = pa.schema([pa.field("balance_id", pa.string(), nullable=False), pa.field("v", pa.int64())])


class _FullDisk(io.RawIOBase):
    """An output file that takes ``room`` bytes and then fails as a full disk does."""

    def __init__(self, room: int):
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if size > self.room:
            raise OSError(28, "No space left on device")
        self.room -= size
        return size


class _Gated(io.RawIOBase):
    """An output file whose writes after the first (the Parquet magic) wait for ``gate``; ``events`` records
    when each write starts and ends and when the file is closed."""

    def __init__(self, gate: threading.Event, events: list[str]):
        self.gate, self.events, self.writes = gate, events, 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.writes += 1
        if self.writes > 1:
            self.events.append("write started")
            assert self.gate.wait(30)
            self.events.append("write ended")
        return memoryview(data).nbytes

    def close(self) -> None:
        self.events.append("closed")
        super().close()


class _LocalWritingTo(pafs.FileSystemHandler):
    """The local filesystem, except that every file written goes to the file ``make_file()`` returns."""

    def __init__(self, make_file):
        self.local, self.make_file = pafs.LocalFileSystem(), make_file

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    def get_type_name(self):
        return "local-writing-to"

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.local.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise NotImplementedError

    def delete_file(self, path):
        self.local.delete_file(path)

    def move(self, src, dest):
        self.local.move(src, dest)

    def copy_file(self, src, dest):
        self.local.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.local.open_input_stream(path)

    def open_input_file(self, path):
        return self.local.open_input_file(path)

    def open_output_stream(self, path, metadata):
        self.local.open_output_stream(path).close()  # the file exists, as on a real disk
        return pa.PythonFile(self.make_file(), mode="w")

    def open_append_stream(self, path, metadata):
        raise NotImplementedError


def _rows(start: int, count: int) -> pa.Table:
    return pa.table({"balance_id": [f"b{i:09d}" for i in range(start, start + count)],
                     "v": list(range(start, start + count))}, schema=SCHEMA)


def test_rows_written_in_small_batches_become_whole_row_groups_in_order(tmp_path):
    store = Store.at(str(tmp_path / "store"))
    writer = parquet.PartitionWriter(store, DATE, {"k": "v"}, schema=SCHEMA)
    total = 3 * parquet.ROW_GROUP_ROWS + 1234
    for start in range(0, total, 10_000):  # small batches, buffered into whole row groups
        writer.write_table(_rows(start, min(10_000, total - start)))
    staged = writer.finish({})
    assert staged.rows == total
    metadata = pq.ParquetFile(staged.staging_path).metadata
    assert metadata.num_row_groups == 4
    assert [metadata.row_group(i).num_rows for i in range(4)] == [parquet.ROW_GROUP_ROWS] * 3 + [1234]
    written = pq.read_table(staged.staging_path)
    assert written.column("v").to_pylist() == list(range(total))
    assert written.column("balance_id").equals(_rows(0, total).column("balance_id"))


def test_a_row_group_that_fails_to_write_fails_the_file_and_abort_removes_it(tmp_path):
    root = tmp_path / "store"
    store = Store(str(root), pafs.PyFileSystem(_LocalWritingTo(lambda: _FullDisk(64 * 1024))), str(root))
    threads_before = set(threading.enumerate())
    writer = parquet.PartitionWriter(store, DATE, {"k": "v"}, schema=SCHEMA)
    with pytest.raises(OSError, match="No space left on device"):
        for start in range(0, 3 * parquet.ROW_GROUP_ROWS, 10_000):
            writer.write_table(_rows(start, 10_000))
        writer.finish({})
    writer.abort()
    assert not (root / "balance_snapshots").exists() or not any(
        p.is_file() for p in (root / "balance_snapshots").rglob("*"))
    assert not _writing_threads(threads_before)
    with pytest.raises(OSError, match="No space left on device"):  # once failed, the file stays unfit
        writer.write_table(_rows(0, 10))


def _writing_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """The writing threads alive now that were not alive at ``before``."""
    return [t for t in threading.enumerate() if t.name.startswith("parquet-write") and t not in before]


def test_abort_waits_for_the_row_group_being_written_before_it_closes_the_file(tmp_path):
    threads_before = set(threading.enumerate())
    gate, events = threading.Event(), []
    root = tmp_path / "store"
    store = Store(str(root), pafs.PyFileSystem(_LocalWritingTo(lambda: _Gated(gate, events))), str(root))
    writer = parquet.PartitionWriter(store, DATE, {"k": "v"}, schema=SCHEMA)
    writer.write_table(_rows(0, parquet.ROW_GROUP_ROWS))  # a whole row group: handed to the writing thread
    for _ in range(300):  # the thread is inside the file's write, held at the gate
        if events:
            break
        threading.Event().wait(0.1)
    assert events == ["write started"] and _writing_threads(threads_before)
    threading.Timer(0.2, gate.set).start()
    writer.abort()  # returns once the write has ended, and only then closes the file
    assert events.index("closed") > max(i for i, e in enumerate(events) if e == "write ended")
    assert not _writing_threads(threads_before)
    assert not any(p.is_file() for p in root.rglob("*"))


def test_rows_at_positions_are_read_across_files_and_row_groups(tmp_path):
    """``read_rows_at`` counts positions over the files in order and reads only the row groups holding one."""
    fs = pafs.LocalFileSystem()
    paths = []
    for n, (start, stop) in enumerate(((0, 25), (25, 32))):
        path = str(tmp_path / f"part-{n}.parquet")
        pq.write_table(pa.table({"balance_id": [f"b{i:03d}" for i in range(start, stop)],
                                 "amount": list(range(start, stop))}), path, row_group_size=10)
        paths.append(path)
    assert parquet.count_rows(fs, paths) == 32
    positions = [0, 9, 10, 24, 25, 31]
    got = parquet.read_rows_at(fs, paths, positions, ["balance_id", "amount"])
    assert got["amount"].to_pylist() == positions
    assert got["balance_id"].to_pylist() == [f"b{i:03d}" for i in positions]
    assert parquet.read_rows_at(fs, paths, [], ["balance_id"]).num_rows == 0


def _counted_batches(count: int | None, produced: list[int], fail_at: int | None = None):
    """Batches 0, 1, ... (forever when ``count`` is None), appending each index to ``produced`` as it is made."""
    i = 0
    while count is None or i < count:
        if i == fail_at:
            raise OSError(5, "Input/output error")
        produced.append(i)
        yield pa.record_batch({"balance_id": [f"b{i:05d}"], "v": [i]}, schema=SCHEMA)
        i += 1


def _wait_for(condition, seconds: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_read_ahead_reads_before_it_is_asked_and_hands_batches_over_in_order():
    produced: list[int] = []
    ahead = parquet.ReadAhead(_counted_batches(10, produced), depth=3)
    # nothing consumed yet: the thread has read the depth, plus the one it waits to hand over
    assert _wait_for(lambda: len(produced) == 4)
    assert [b["v"][0].as_py() for b in ahead] == list(range(10))
    assert produced == list(range(10))
    assert list(ahead) == []


def test_read_ahead_raises_a_reading_error_where_the_consumer_reaches_it():
    ahead = parquet.ReadAhead(_counted_batches(10, [], fail_at=4), depth=2)
    got = []
    with pytest.raises(OSError, match="Input/output error"):
        for batch in ahead:
            got.append(batch["v"][0].as_py())
    assert got == [0, 1, 2, 3]


def test_read_ahead_stops_its_thread_when_closed_or_dropped():
    import gc
    import threading

    def readers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "parquet-read-ahead"]

    assert _wait_for(lambda: not readers())
    produced: list[int] = []
    ahead = parquet.ReadAhead(_counted_batches(None, produced), depth=2)  # an endless source
    next(ahead)
    ahead.close()
    assert not readers(), "close() returns once the reading thread has ended"
    assert len(produced) <= 5, "a closed reader reads no further"
    dropped = parquet.ReadAhead(_counted_batches(None, []), depth=2)
    next(dropped)
    del dropped
    gc.collect()
    assert _wait_for(lambda: not readers()), "dropping the reader must stop its thread"


def test_closing_a_read_ahead_waits_for_the_read_in_progress_and_drops_what_was_read():
    import time
    import weakref

    kept: list = []

    def slow_batches():
        for i in range(100):
            time.sleep(0.05)
            batch = pa.record_batch({"balance_id": [f"b{i:05d}"], "v": [i]}, schema=SCHEMA)
            kept.append(weakref.ref(batch))
            yield batch

    ahead = parquet.ReadAhead(slow_batches(), depth=2)
    next(ahead)
    assert _wait_for(lambda: len(kept) >= 3)  # two queued, one held by the thread
    ahead.close()
    import gc

    gc.collect()
    assert all(ref() is None for ref in kept), "the batches read ahead are dropped by close()"
    assert len(kept) <= 5, "a closed reader reads no further"


def test_the_read_ahead_depth_keeps_the_rows_in_flight_within_the_bound():
    assert parquet.read_ahead_depth(parquet.READ_BATCH_ROWS) == 1  # 1 queued + 1 held = 131,072 rows
    assert (parquet.read_ahead_depth(parquet.READ_BATCH_ROWS) + 1) * parquet.READ_BATCH_ROWS <= parquet.READ_AHEAD_ROWS
    assert parquet.read_ahead_depth(parquet.READ_BATCH_ROWS, 4 * parquet.READ_BATCH_ROWS) == 3
    assert parquet.read_ahead_depth(parquet.ROW_GROUP_ROWS) == 1
    assert parquet.read_ahead_depth(1_000_000) == 1
