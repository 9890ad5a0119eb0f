"""Index rows streamed during the merge: invisible until the commit, gone after a failure, and an open stream
neither blocks readers nor deadlocks what creates or drops a month's partition."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import threading
import time

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


def commit_lock_is_held(conn: psycopg.Connection) -> bool:
    """Whether another session holds the commit lock: taking it here gives up after the reader's lock timeout."""
    try:
        with conn.transaction():
            index.lock_commits(conn)
    except psycopg.errors.LockNotAvailable:
        return True
    return False


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
            assert rows_of(other, DAY) == {}  # the COPY has ended; still uncommitted
            assert commit_lock_is_held(other)  # the commit lock is the stream's
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
    stream holds back: outside a transaction the creation waits in short tries that let readers through (two
    runs creating the same month both succeed); inside a commit it gives up at once (never a commit waiting on
    a stream that waits for the commit lock); retention leaves an emptied month to a later sweep."""
    old_day = dt.date(2026, 8, 14)
    with psycopg.connect(index_url, autocommit=True) as admin:
        index.ensure_month_partition(admin, old_day)
        admin.execute("INSERT INTO snapshot_index.balance_snapshots VALUES ('bln_old', %s, 5, 5, 0, 0, 0, 0, 'USD')",
                      (old_day,))
    stream = IndexStream(index_url, DAY, journal.empty_state())
    stream.write(changed_rows(["bln_a"], 7))
    created: list[str] = []
    heard: list[str] = []

    def create_december() -> None:
        with psycopg.connect(index_url, autocommit=True) as conn:
            created.append(index.ensure_month_partition(conn, dt.date(2026, 12, 3), heard.append))

    creating = [threading.Thread(target=create_december) for _ in range(2)]
    for thread in creating:
        thread.start()
    try:
        for thread in creating:
            thread.join(1.5)
            assert thread.is_alive()  # waits for the stream
        assert not created
        with reader(index_url) as other:
            for _ in range(5):  # readers pass while it waits
                assert balance_at_lookup(other, "bln_old", DAY) == (old_day, 5)
        with psycopg.connect(index_url) as committing, committing.transaction():
            index.lock_commits(committing)
            inside: list[str] = []
            with pytest.raises(index.IndexBusy, match="balance_snapshots_2027_01"):
                index.ensure_month_partition(committing, dt.date(2027, 1, 2), inside.append)
            assert inside == []  # inside a commit it gives up at once: no wait to tell of
            assert retention._delete_index_rows(committing, [old_day]) == 1
        with psycopg.connect(index_url, autocommit=True) as sweeping:
            assert index.drop_empty_months(sweeping) == []  # the stream holds balance_snapshots: left for later
        with stream.committing():
            pass
        for thread in creating:
            thread.join(10)
        assert created == ["balance_snapshots_2026_12"] * 2  # both runs have their month, neither failed
        assert len(heard) == 2 and all("waiting to create the index partition snapshot_index.balance_snapshots_2026_12"
                                       in line for line in heard)  # each waiting run said so, once
    finally:
        stream.reset()
        for thread in creating:
            thread.join(10)
    with reader(index_url) as other:
        assert rows_of(other, DAY) == {"bln_a": 7} and rows_of(other, old_day) == {}
        assert balance_at_lookup(other, "bln_old", DAY) is None
        # with no stream open the empty months go; October holds rows (and December is empty too)
        assert index.drop_empty_months(other) == ["balance_snapshots_2026_08", "balance_snapshots_2026_12"]


def test_a_migration_queued_behind_a_stream_and_a_commit_queued_behind_it_all_finish(index_url):
    """A stream holds balance_snapshots through its merge; a migration's CREATE INDEX waits for it; a commit holding
    the commit lock then queues behind the migration; the stream asks for the commit lock. The stream waits in
    PostgreSQL's lock queue, so the deadlock detector sees the cycle and lets the commit pass the migration:
    all three finish (a stream polling for the lock would leave all three waiting for ever)."""
    stream = IndexStream(index_url, DAY, journal.empty_state())
    stream.write(changed_rows(["bln_a"], 7))
    errors: list[BaseException] = []
    holder = psycopg.connect(index_url, autocommit=True)
    holder.execute("BEGIN")
    index.lock_commits(holder)

    def guarded(work):
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
                errors.append(exc)
        return threading.Thread(target=run)

    def migrate() -> None:
        with psycopg.connect(index_url, autocommit=True) as conn:
            conn.execute("CREATE INDEX balance_snapshots_currency_idx ON snapshot_index.balance_snapshots (currency)")

    def commit_queued_behind_it() -> None:
        holder.execute("DELETE FROM snapshot_index.balance_snapshots WHERE snapshot_date = %s",
                       (DAY - dt.timedelta(days=1),))
        holder.execute("COMMIT")

    def stream_commits() -> None:
        with stream.committing():
            pass

    threads = [guarded(migrate), guarded(commit_queued_behind_it), guarded(stream_commits)]
    try:
        for thread in threads:
            thread.start()
            thread.join(0.5)  # in this order: each queues behind the one before
        for thread in threads:
            thread.join(30)
        assert not [t for t in threads if t.is_alive()], "a lock wait PostgreSQL cannot see left them waiting"
        assert not errors, errors
    finally:
        with psycopg.connect(index_url, autocommit=True) as admin:  # unblock whatever still waits, if anything
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        for thread in threads:
            thread.join(10)
        stream.reset()
        holder.close()
    with reader(index_url) as other:
        assert rows_of(other, DAY) == {"bln_a": 7}


def test_a_stream_outlives_the_databases_timeouts_and_reads_what_committed_meanwhile(index_url):
    """The stream's one COPY lasts the merge, idle between writes: a database whose default statement and
    idle-in-transaction timeouts are shorter than that does not cancel it; and its commit reads in READ COMMITTED
    whatever the database's default isolation, so it sees what other runs committed during the merge."""
    with psycopg.connect(index_url, autocommit=True) as admin:
        name = admin.execute("SELECT current_database()").fetchone()[0]
        for setting, value in (("statement_timeout", "500ms"), ("idle_in_transaction_session_timeout", "500ms"),
                               ("default_transaction_isolation", "repeatable read")):
            admin.execute(f'ALTER DATABASE "{name}" SET {setting} = \'{value}\'')
    stream = IndexStream(index_url, DAY, journal.empty_state())
    try:
        stream.write(changed_rows(["bln_a"], 7))
        time.sleep(1)  # idle in its transaction, longer than both timeouts
        with psycopg.connect(index_url, autocommit=True) as other:
            index.ensure_month_partition(other, DAY)
            other.execute("INSERT INTO snapshot_index.balance_snapshots VALUES ('bln_b', %s, 1, 1, 0, 0, 0, 0, 'USD')",
                          (DAY - dt.timedelta(days=1),))  # committed by another run meanwhile
        stream.write(changed_rows(["bln_c"], 9))
        time.sleep(1)
        with stream.committing() as conn:
            assert conn.execute("SHOW transaction_isolation").fetchone()[0] == "read committed"
            assert rows_of(conn, DAY - dt.timedelta(days=1)) == {"bln_b": 1}
    finally:
        stream.reset()
    with psycopg.connect(index_url, autocommit=True) as other:
        assert rows_of(other, DAY) == {"bln_a": 7, "bln_c": 9}


def test_a_commit_whose_transaction_failed_inside_raises_and_publishes_nothing(index_url):
    """An error swallowed inside the commit aborts its transaction, and PostgreSQL answers the COMMIT with a
    ROLLBACK: the stream raises instead of reporting a commit."""
    stream = IndexStream(index_url, DAY, journal.empty_state())
    stream.write(changed_rows(["bln_a"], 7))
    with pytest.raises(RuntimeError, match="rolled back"), stream.committing() as conn:
        with contextlib.suppress(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
    with psycopg.connect(index_url, autocommit=True) as other:
        assert rows_of(other, DAY) == {}


def test_a_stream_whose_month_is_dropped_before_it_holds_it_creates_it_again(index_url):
    """Between creating its month's partition and locking it, the month may be dropped (retention's sweep): the
    stream's lock then finds no table, and it creates the month again and goes on."""
    with psycopg.connect(index_url, autocommit=True) as dropper:
        month = index.ensure_month_partition(dropper, DAY)
        dropper.execute("BEGIN")
        dropper.execute(f"LOCK TABLE snapshot_index.{month} IN ACCESS EXCLUSIVE MODE")
        opened: list[IndexStream] = []
        opening = threading.Thread(target=lambda: opened.append(IndexStream(index_url, DAY, journal.empty_state())))
        opening.start()
        opening.join(1)
        assert opening.is_alive()  # its LOCK TABLE waits behind ours
        dropper.execute(f"DROP TABLE snapshot_index.{month}")
        dropper.execute("COMMIT")
        opening.join(30)
    assert len(opened) == 1
    stream = opened[0]
    try:
        stream.write(changed_rows(["bln_a"], 7))
        with stream.committing():
            pass
    finally:
        stream.reset()
    with psycopg.connect(index_url, autocommit=True) as other:
        assert rows_of(other, DAY) == {"bln_a": 7}


def test_an_empty_month_a_run_holds_is_not_dropped(index_url):
    """A run creates its month's partition before it writes into it, holding its day's lock from before until
    after its commit: the sweep of empty months leaves a month one of whose days is held."""
    with psycopg.connect(index_url, autocommit=True) as run, psycopg.connect(index_url, autocommit=True) as sweep:
        index.lock_partition(run, dt.date(2026, 11, 17))
        index.ensure_month_partition(run, dt.date(2026, 11, 17))
        index.ensure_month_partition(sweep, dt.date(2026, 9, 3))
        assert index.drop_empty_months(sweep) == ["balance_snapshots_2026_09"]
        index.unlock_partition(run, dt.date(2026, 11, 17))
        assert index.drop_empty_months(sweep) == ["balance_snapshots_2026_11"]
