"""A partition's index rows COPYed into the index while the merge computes them, in the commit's transaction.

The index rows of a day (its changed balances) are the largest write of the commit: one ``COPY`` into
``snapshot_index.balance_snapshots``, whose cost is PostgreSQL's, mostly the primary key's inserts (at 1M
balances, 257k rows: 1.1-1.7 s after the merge). :class:`IndexStream` opens that transaction on a
connection of its own before the merge, writes the day's roll-forward state (known by then) and sends each
merged chunk's changed balances as binary ``COPY`` data as it goes, so PostgreSQL inserts them on the other
core while the merge goes on; the commit then continues in that same transaction
(:meth:`IndexStream.committing`): the commit lock, the manifest, the ``COMMIT``. Nobody sees a row before it.

Only for a date that has never been published (:func:`streams`): nobody else writes such a date's index rows
(a predecessor's commit re-diffs the rows of a *published* successor only), so the uncommitted rows lock
nothing another commit waits for. A re-run replaces published rows: it spools them to a file and loads them
in the commit (:class:`snapshot_pipeline.store.spool.IndexSpool`).

Locks: through the merge the transaction holds ``ROW EXCLUSIVE`` on ``balance_snapshots``, its month's partition
(taken first: a partition retention dropped meanwhile is created again) and ``roll_state``. What needs more
of them waits for the stream: creating or dropping a month's partition (``ACCESS EXCLUSIVE``), a migration's
``CREATE INDEX`` (``SHARE``). Nothing holding the commit lock waits for those for long: runs create their
month's partition before their commit, in short tries that let readers through
(:func:`snapshot_pipeline.store.index.ensure_month_partition`), and retention drops empty months outside the
commit lock (:func:`snapshot_pipeline.store.index.drop_empty_months`). The stream waits for the commit lock
in PostgreSQL's lock queue, where the deadlock detector sees it and can reorder the queue (a stream polling
for it would be invisible there: a migration queued behind the stream and a commit queued behind the
migration would wait for ever). Its session runs without statement, idle-in-transaction or transaction
timeouts: its one statement lasts the merge.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

import pgpq
import psycopg
import pyarrow as pa
from psycopg import sql

from snapshot_pipeline import db
from snapshot_pipeline.store import index, roll_state
from snapshot_pipeline.store.spool import SPOOL_SCHEMA, encoded


def streams(conn: psycopg.Connection, date: dt.date) -> bool:
    """Whether ``date``'s index rows may be streamed: it has no manifest row (never published, or retired)."""
    return index.manifest(conn, date) is None


def _no_timeouts(conn: psycopg.Connection) -> None:
    """This session's statement lasts the whole merge, idle in its transaction between writes: no server or role
    default timeout may cancel it."""
    settings = ["statement_timeout", "idle_in_transaction_session_timeout"]
    if conn.info.server_version >= 170000:
        settings.append("transaction_timeout")
    for name in settings:
        conn.execute("SELECT set_config(%s, '0', false)", (name,))


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
            _no_timeouts(self.conn)
            self._begin_in_month()
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

    def _begin_in_month(self) -> None:
        """BEGIN (READ COMMITTED: the commit reads what other commits published during the merge), holding the
        month's index partition from now on; created first if missing (outside the transaction), again if
        retention dropped it in between."""
        while True:
            name = index.ensure_month_partition(self.conn, self.date)
            self.conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            try:
                self.conn.execute(sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(
                    sql.Identifier(index.SCHEMA, name)))
                return
            except psycopg.errors.UndefinedTable:
                self.conn.execute("ROLLBACK")

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
        """The open transaction, the COPY ended and the commit lock taken, for the rest of the commit; COMMIT at
        the end of the block, ROLLBACK on an error, and the connection closed either way."""
        try:
            self.close()
            index.lock_commits(self.conn)  # a wait PostgreSQL's deadlock detector sees (module docstring)
            yield self.conn
            with self.conn.cursor() as cur:
                cur.execute("COMMIT")
                if cur.statusmessage != "COMMIT":  # an aborted transaction answers COMMIT with ROLLBACK
                    raise RuntimeError(f"the index transaction of {self.date} was rolled back ({cur.statusmessage})")
        finally:
            self.reset()

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
