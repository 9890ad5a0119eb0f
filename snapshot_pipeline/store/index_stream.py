"""A partition's index rows COPYed into the index while the merge computes them, in the commit's transaction.

The index rows of a day (its changed balances) are the largest write of the commit: one ``COPY`` into
``snapshot_index.balance_snapshots``, whose cost is PostgreSQL's, mostly the primary key's inserts (at 1M
balances, 257k rows: 1.1-1.7 s after the merge). :class:`IndexStream` opens that transaction on a
connection of its own before the merge and sends each merged chunk's changed balances as binary ``COPY``
data as it goes, so PostgreSQL inserts them on the other core while the merge goes on; the commit then
continues in that same transaction (:meth:`IndexStream.committing`): the commit lock, the manifest, the
roll-forward state, the ``COMMIT``. Nobody sees a row before that ``COMMIT``.

Only for a date that has never been published (:func:`streams`): nobody else writes such a date's index rows
(a predecessor's commit re-diffs the rows of a *published* successor only), so the uncommitted rows lock
nothing another commit waits for. A re-run replaces published rows: it spools them to a file and loads them
in the commit (:class:`snapshot_pipeline.store.spool.IndexSpool`).

Locks: the open transaction holds ``RowExclusiveLock`` on the month's partition and ``AccessShareLock`` on
``balance_snapshots`` through the merge. What needs ``ACCESS EXCLUSIVE`` on them (creating a month's
partition, dropping one) is never done while holding the commit lock without a lock timeout
(:func:`snapshot_pipeline.store.index.ensure_month_partition`, the retention's drop), and the stream takes
the commit lock by polling, never by a lock wait that could close a cycle with them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator

import pgpq
import psycopg
import pyarrow as pa
from psycopg import sql

from snapshot_pipeline import db
from snapshot_pipeline.store import index, roll_state
from snapshot_pipeline.store.spool import SPOOL_SCHEMA, encoded

COMMIT_LOCK_POLL_SECONDS = 0.02


def streams(conn: psycopg.Connection, date: dt.date) -> bool:
    """Whether ``date``'s index rows may be streamed: it has no manifest row (never published, or retired)."""
    return index.manifest(conn, date) is None


class IndexStream:
    """The index rows of ``date`` sent to ``snapshot_index.balance_snapshots`` by one binary ``COPY`` in an
    open transaction of its own connection, after the day's roll-forward ``state`` (known before the merge);
    same ``write``/``rows``/``reset`` as an :class:`~snapshot_pipeline.store.spool.IndexSpool`."""

    def __init__(self, url: str, date: dt.date, state: pa.Table):
        self.date = date
        self.rows = 0
        self.loaded: int | None = None  # the COPY's row count once it ended (close)
        self.conn = db.connect(url, autocommit=True, what="snapshot index database")
        self._stack = contextlib.ExitStack()
        self._copying = contextlib.ExitStack()
        try:
            index.ensure_month_partition(self.conn, date)  # before the transaction: no DDL lock held through it
            self.conn.execute("BEGIN")
            # rows of a date without a manifest are nobody's: a retired day's leftovers, if any
            self.conn.execute("DELETE FROM snapshot_index.balance_snapshots WHERE snapshot_date = %s", (date,))
            roll_state.replace(self.conn, date, state)  # known before the merge: written first
            self._cursor = self._stack.enter_context(self.conn.cursor())
            copy_sql = sql.SQL("COPY snapshot_index.balance_snapshots ({}) FROM STDIN WITH (FORMAT binary)").format(
                sql.SQL(", ").join(map(sql.Identifier, SPOOL_SCHEMA.names)))
            self._copy = self._copying.enter_context(self._cursor.copy(copy_sql))
            self._encoder = pgpq.ArrowToPostgresBinaryEncoder(SPOOL_SCHEMA)
            self._copy.write(self._encoder.write_header())
        except BaseException:
            self.reset()
            raise

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        for block in encoded(self._encoder, table, self.date):
            self._copy.write(block)
        self.rows += table.num_rows

    def close(self) -> None:
        """End the COPY (its trailer); the rows stay uncommitted in the open transaction."""
        if self.loaded is not None:
            return
        self._copy.write(self._encoder.finish())
        self._copying.close()
        self.loaded = self._cursor.rowcount
        if self.loaded != self.rows:
            raise RuntimeError(f"the index COPY of {self.date} loaded {self.loaded} rows, {self.rows} were sent")

    @contextlib.contextmanager
    def committing(self) -> Iterator[psycopg.Connection]:
        """The open transaction, for the rest of the commit; COMMIT at the end of the block, ROLLBACK on an
        error, and the connection closed either way."""
        try:
            self.close()
            yield self.conn
            self.conn.execute("COMMIT")
        finally:
            self.reset()

    def lock_commits(self) -> None:
        """The commit lock, by polling (see the module's docstring: no lock wait while the rows are held)."""
        while not index.try_lock_commits(self.conn):
            time.sleep(COMMIT_LOCK_POLL_SECONDS)

    def reset(self) -> None:
        """Give up: the COPY aborted, the transaction rolled back, the connection closed (idempotent)."""
        if self.conn.closed:
            return
        try:
            if self.loaded is None:  # the COPY is open: fail it (psycopg sends CopyFail with this error)
                abandoned = RuntimeError(f"the index rows of {self.date} were abandoned")
                self._copying.__exit__(RuntimeError, abandoned, None)
            self._stack.close()
        except Exception:  # noqa: BLE001 - the connection is closed below, which rolls back
            pass
        finally:
            self.conn.close()  # an open transaction is rolled back with the connection
