"""Index rows streamed during the merge: invisible until the commit, gone after a failure, and an open stream
neither blocks readers nor deadlocks what creates or drops a month's partition."""

from __future__ import annotations

import datetime as dt
import decimal
import threading

import psycopg
import pyarrow as pa
import pytest

from snapshot_pipeline.ledger import journal
from snapshot_pipeline.store import index, retention, roll_state
from snapshot_pipeline.store.index_stream import IndexStream, streams
from snapshot_pipeline.store.parquet import AMOUNT, AMOUNT_COLUMNS

DAY = dt.date(2026, 10, 30)


def changed_rows(ids: list[str], amount: int) -> pa.Table:
    """Changed balances as a merge writes them (ids, the six amounts, currency)."""
    values = pa.array([decimal.Decimal(amount)] * len(ids), AMOUNT)
    return pa.table({"balance_id": pa.array(ids), **{name: values for name in AMOUNT_COLUMNS},
                     "currency": pa.array(["USD"] * len(ids))})


def rows_of(conn: psycopg.Connection, date: dt.date) -> dict[str, int]:
    return {row[0]: int(row[1]) for row in conn.execute(
        "SELECT balance_id, balance FROM snapshot_index.balance_snapshots WHERE snapshot_date = %s", (date,))}


def reader(url: str) -> psycopg.Connection:
    """A reader that gives up after a second of waiting for a lock (a blocked reader fails the test)."""
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("SET lock_timeout = '1s'")
    return conn


def balance_at_lookup(conn: psycopg.Connection, balance_id: str, date: dt.date):
    """The index lookup behind ``balance_at``: the latest row of a balance at or before a date."""
    return conn.execute("SELECT snapshot_date, balance FROM snapshot_index.balance_snapshots"
                        " WHERE balance_id = %s AND snapshot_date <= %s ORDER BY snapshot_date DESC LIMIT 1",
                        (balance_id, date)).fetchone()


@pytest.fixture
def index_url(make_database) -> str:
    url = make_database()
    with psycopg.connect(url, autocommit=True) as conn:
        index.migrate(conn)
    return url


def test_streamed_rows_are_seen_by_no_one_before_the_commit_and_by_no_one_after_a_reset(index_url):
    with reader(index_url) as other:
        assert streams(other, DAY)  # never published
        state = pa.Table.from_pylist([{"kind": journal.PENDING_TRANSACTION, "id": 42}], schema=journal.STATE_SCHEMA)
        stream = IndexStream(index_url, DAY, state)
        stream.write(changed_rows(["bln_a", "bln_b"], 7))
        stream.write(changed_rows([], 7))
        stream.write(changed_rows(["bln_c"], 9))
        assert stream.rows == 3
        assert rows_of(other, DAY) == {} and balance_at_lookup(other, "bln_a", DAY) is None
        assert roll_state.read(other, DAY, journal.STATE_SCHEMA).num_rows == 0
        with stream.committing():
            stream.lock_commits()
            assert rows_of(other, DAY) == {}  # the COPY has ended; still uncommitted
        assert stream.conn.closed
        assert rows_of(other, DAY) == {"bln_a": 7, "bln_b": 7, "bln_c": 9}
        assert roll_state.read(other, DAY, journal.STATE_SCHEMA).to_pylist() == state.to_pylist()  # same transaction

        failed = IndexStream(index_url, DAY + dt.timedelta(days=1), state)
        failed.write(changed_rows(["bln_a"], 1))
        failed.reset()
        failed.reset()  # idempotent
        assert failed.conn.closed and rows_of(other, DAY + dt.timedelta(days=1)) == {}
        assert roll_state.read(other, DAY + dt.timedelta(days=1), journal.STATE_SCHEMA).num_rows == 0

        with pytest.raises(RuntimeError, match="boom"), stream_committing(index_url, DAY + dt.timedelta(days=2)):
            raise RuntimeError("boom")
        assert rows_of(other, DAY + dt.timedelta(days=2)) == {}  # an error inside the commit rolls it all back


def stream_committing(url: str, date: dt.date):
    stream = IndexStream(url, date, journal.empty_state())
    stream.write(changed_rows(["bln_x"], 3))
    return stream.committing()


def test_an_open_stream_blocks_no_reader_and_what_needs_the_whole_table_waits_or_gives_way(index_url):
    """Creating a month's partition (or dropping one) takes ACCESS EXCLUSIVE on balance_snapshots, which an open
    stream holds back: outside a transaction the creation waits in short tries that let readers through;
    inside a commit it gives up at once (never a commit waiting on a stream that waits for the commit lock);
    retention deletes the retired rows instead of dropping the month. Then the stream commits."""
    old_day = dt.date(2026, 8, 14)
    with psycopg.connect(index_url, autocommit=True) as admin:
        index.ensure_month_partition(admin, old_day)
        admin.execute("INSERT INTO snapshot_index.balance_snapshots VALUES ('bln_old', %s, 5, 5, 0, 0, 0, 0, 'USD')",
                      (old_day,))
    stream = IndexStream(index_url, DAY, journal.empty_state())
    stream.write(changed_rows(["bln_a"], 7))
    created: list[str] = []

    def create_december() -> None:
        with psycopg.connect(index_url, autocommit=True) as conn:
            created.append(index.ensure_month_partition(conn, dt.date(2026, 12, 3)))

    creating = threading.Thread(target=create_december)
    creating.start()
    try:
        creating.join(1.5)
        assert creating.is_alive() and not created  # waits for the stream
        with reader(index_url) as other:
            for _ in range(5):  # readers pass while it waits
                assert balance_at_lookup(other, "bln_old", DAY) == (old_day, 5)
        with psycopg.connect(index_url) as committing, committing.transaction():
            index.lock_commits(committing)
            with pytest.raises(index.IndexBusy, match="balance_snapshots_2027_01"):
                index.ensure_month_partition(committing, dt.date(2027, 1, 2))
            deleted, dropped = retention._delete_index_rows(committing, [old_day], set())
            assert (deleted, dropped) == (1, [])  # rows deleted, the month kept: the stream holds the table
            # the commit lock is held here: the stream cannot take it (it polls; it does not wait in a lock queue)
            with psycopg.connect(index_url, autocommit=True) as polling:
                assert not index.try_lock_commits(polling)
        with stream.committing():
            stream.lock_commits()
        creating.join(10)
        assert created == ["balance_snapshots_2026_12"]
    finally:
        stream.reset()
        creating.join(10)
    with reader(index_url) as other:
        assert rows_of(other, DAY) == {"bln_a": 7} and rows_of(other, old_day) == {}
        assert balance_at_lookup(other, "bln_old", DAY) is None
        with other.transaction():
            _, dropped = retention._delete_index_rows(other, [old_day], set())
        assert dropped == ["balance_snapshots_2026_08"]  # with no stream open, the empty month goes
