"""Aligning two streams of rows sorted by ``balance_id`` (byte order), chunk by chunk.

Every partition file is sorted by ``balance_id`` in byte order (Arrow's and
PostgreSQL's ``COLLATE "C"`` order). Two such streams (a base partition and a
journal delta, or two partitions) are walked together: each step hands out, from
both, every row up to the same key, so rows of one balance always meet. Nothing
is per-row Python: bounds are found by bisection over the buffered keys.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

KEY = "balance_id"


class NotSorted(RuntimeError):
    """A stream is not strictly increasing by ``balance_id`` (an old or foreign file)."""


class _Keys:
    """A sequence view of a string array's values, for :mod:`bisect`."""

    def __init__(self, array: pa.Array):
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int) -> str:
        return self.array[i].as_py()


def check_sorted(ids: pa.Array, previous_last: str | None) -> None:
    """Raise :class:`NotSorted` unless ``ids`` is strictly increasing and starts after ``previous_last``."""
    n = len(ids)
    if n == 0:
        return
    if ids.null_count:
        raise NotSorted("a balance_id is null")
    if n > 1 and not pc.all(pc.greater(ids.slice(1), ids.slice(0, n - 1))).as_py():
        raise NotSorted("balance ids are not strictly increasing")
    if previous_last is not None and not ids[0].as_py() > previous_last:
        raise NotSorted("balance ids are not strictly increasing across batches")


class SortedStream:
    """Rows from batches sorted by ``balance_id``, handed out up to a key."""

    def __init__(self, batches: Iterable[pa.RecordBatch | pa.Table], schema: pa.Schema | None = None):
        self._batches: Iterator = iter(batches)
        self._buffer: pa.Table | None = None
        self._last_seen: str | None = None
        self._schema = schema
        self.exhausted = False

    def _fill(self) -> None:
        while (self._buffer is None or self._buffer.num_rows == 0) and not self.exhausted:
            batch = next(self._batches, None)
            if batch is None:
                self.exhausted = True
                return
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            if self._schema is None:
                self._schema = table.schema
            if table.num_rows == 0:
                continue
            table = table.combine_chunks()
            ids = table[KEY].chunk(0)
            check_sorted(ids, self._last_seen)
            self._last_seen = ids[-1].as_py()
            self._buffer = table

    def last_key(self) -> str | None:
        """The last key buffered (loading the next batch if needed); None once the stream is exhausted."""
        self._fill()
        if self._buffer is None or self._buffer.num_rows == 0:
            return None
        return self._buffer[KEY].chunk(0)[-1].as_py()

    def take_through(self, bound: str) -> pa.Table | None:
        """Buffered rows with key <= ``bound`` (``bound`` never exceeds :meth:`last_key`)."""
        if self._buffer is None or self._buffer.num_rows == 0:
            return self._empty()
        ids = self._buffer[KEY].chunk(0) if self._buffer[KEY].num_chunks else pa.array([], pa.string())
        count = bisect.bisect_right(_Keys(ids), bound)
        head = self._buffer.slice(0, count)
        self._buffer = self._buffer.slice(count)
        return head

    def _empty(self) -> pa.Table | None:
        return self._schema.empty_table() if self._schema is not None else None


def rechunk(batches: Iterable[pa.RecordBatch | pa.Table], rows: int) -> Iterator[pa.Table]:
    """Record batches re-cut into tables of at most ``rows`` rows."""
    for batch in batches:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        for start in range(0, table.num_rows, rows):
            yield table.slice(start, rows)


def aligned(left: SortedStream, right: SortedStream) -> Iterator[tuple[pa.Table | None, pa.Table | None]]:
    """Pairs of chunks (left rows, right rows) covering the same key range, in key order."""
    while True:
        a, b = left.last_key(), right.last_key()
        if a is None and b is None:
            return
        bound = min(key for key in (a, b) if key is not None)
        yield left.take_through(bound), right.take_through(bound)


def match(left_ids: pa.Array, right_ids: pa.Array) -> tuple[pa.Array, pa.Array]:
    """For aligned chunks, with one hash lookup: the position in ``right`` of each left row (null: absent), and the
    positions of the right rows no left row matched, in order (a scatter of the positions found, not a second
    hash set of the left ids)."""
    positions = pc.index_in(left_ids, value_set=right_ids)
    seen = np.zeros(len(right_ids), dtype=bool)
    seen[pc.drop_null(positions).to_numpy()] = True
    return positions, pa.array(np.flatnonzero(~seen))
