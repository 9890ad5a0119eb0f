"""The delta of a sharded run, computed in K sessions sharing one exported snapshot (issue 20, item 4).

The session that stages the step exports its snapshot; each shard session imports it, takes its range's
legs and probes its range's balances. Whatever commits meanwhile, the K-session delta is the one-session
delta, row for row: the exported snapshot holds the cut.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from snapshot_pipeline import calendar, db, snapshot
from snapshot_pipeline.ledger import journal, sessions
from snapshot_pipeline.snapshot import shard_plan, shards
from snapshot_pipeline.store import catalog, index
from snapshot_pipeline.store.location import Store
from tests.conftest import make_settings
from tests.helpers import insert_transaction, two_balances
from tests.oracle import expected_snapshot, snapshot_values
from tests.plans import ExplainingCursor, assert_ledger_read_by_key

BASE, DAY = dt.date(2026, 11, 1), dt.date(2026, 11, 2)
NOON = dt.datetime(2026, 11, 2, 12)


def _touched_balances(url: str, count: int) -> list[str]:
    """Balances spread over the whole balance_id range (so every shard gets some)."""
    with psycopg.connect(url) as conn:
        ids = [r[0] for r in conn.execute(
            "SELECT balance_id FROM blnk.balances WHERE currency = 'USD' AND created_at < %s ORDER BY balance_id",
            (dt.datetime(2026, 10, 1),)).fetchall()]
    return [ids[i * len(ids) // count] for i in range(count)]


class _Writer:
    """Commits changes to the ledger in a loop, from another connection, until stopped: new backdated
    journal rows, new balances, attribute updates of the balances the day touched."""

    def __init__(self, url: str, touched: list[str]):
        self.url, self.touched, self.commits = url, touched, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def once(self) -> None:
        with psycopg.connect(self.url) as conn:
            n = self.commits
            source, destination = self.touched[n % len(self.touched)], self.touched[(n + 1) % len(self.touched)]
            conn.execute(
                "INSERT INTO blnk.transactions (transaction_id, source, destination, amount, precise_amount,"
                " precision, currency, status, created_at, effective_date)"
                " VALUES (%s, %s, %s, 1, 100, 100, 'USD', 'APPLIED', now() AT TIME ZONE 'UTC', %s)",
                (f"txn_concurrent_{uuid.uuid4().hex}", source, destination, NOON))
            conn.execute("UPDATE blnk.balances SET indicator = %s, identity_id = %s WHERE balance_id = %s",
                         (f"changed_{uuid.uuid4().hex}", f"idt_{n}", destination))
            conn.execute("INSERT INTO blnk.balances (balance_id, currency, ledger_id, created_at)"
                         " VALUES (%s, 'USD', 'ldg_customers', %s)", (f"bln_concurrent_{uuid.uuid4().hex}", NOON))
        self.commits += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.once()

    def __enter__(self) -> _Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _read(path) -> pa.Table:
    return pq.read_table(path)


def test_k_session_delta_equals_the_one_session_delta_under_concurrent_inserts(fresh_ledger, make_database, tmp_path):
    url = fresh_ledger
    settings = make_settings(url, tmp_path / "store", index_url=make_database())
    snapshot.take_snapshot(settings, BASE, 500)
    touched = _touched_balances(url, 12)
    for i, balance in enumerate(touched):  # the day's activity, on balances of every shard
        insert_transaction(url, touched[i - 1], balance, 100 + i, created_at=NOON)
    ghost = f"bln_ghost_{uuid.uuid4().hex}"  # a leg on a balance that does not exist at the cut (it will)
    source, _ = two_balances(url)
    insert_transaction(url, source, ghost, 999, created_at=NOON)
    cutoff = calendar.cutoff(DAY, "UTC")
    with db.connect(settings.snapshot_database_url, autocommit=True) as conn:
        origin = snapshot.origin_of(conn, index.manifest(conn, BASE))
    ids = sorted([*touched, ghost])
    edges = [None, ids[3], ids[7], ids[10], None]  # 4 shards, the ghost in one of them
    writer = _Writer(url, touched)

    ledger = db.connect_arrow(url)
    cur = ledger.cursor()
    opened: list[shard_plan.DeltaSession] = []
    try:
        view = journal.open_view(cur)
        journal.stage_step(cur, cutoff, origin)
        snapshot_id = sessions.export_snapshot(cur)
        for _ in range(3):  # committed after the cut, before any shard session starts
            writer.once()
        with psycopg.connect(url) as conn:
            conn.execute("INSERT INTO blnk.balances (balance_id, currency, ledger_id, indicator, created_at)"
                         " VALUES (%s, 'USD', 'ldg_customers', 'born_after_the_cut', %s)", (ghost, NOON))
        paths = [tmp_path / f"delta-{k}.parquet" for k in range(len(edges) - 1)]
        with writer:  # and committing all along while the shard sessions run
            for k, path in enumerate(paths):
                session = shard_plan.DeltaSession(db.connect_arrow(url), str(path), Store.at(str(tmp_path)))
                opened.append(session)
                session.start(cur, snapshot_id, edges[k], edges[k + 1])
            journal.finish_step(cur, view, cutoff, origin)
            for session in opened:
                session.wait()
            one_session = journal.delta_reader(cur).read_all()  # the reference: the staging session's own
        cur.execute("COMMIT")
    finally:
        for session in opened:
            session.close()
        cur.close()
        ledger.close()
    assert writer.commits > 3

    k_sessions = pa.concat_tables([_read(p) for p in paths])
    assert k_sessions.num_rows == one_session.num_rows > len(touched)
    assert k_sessions.cast(one_session.schema).equals(one_session)  # row for row, every column
    assert all(_read(p).num_rows for p in paths)  # every shard had a part
    row = one_session.filter(pa.compute.equal(one_session["balance_id"], ghost)).to_pylist()[0]
    assert row["known"] is False and row["indicator"] is None  # as the cut saw it, not as it is now

    # the control: the same shard query in a session that does not import the snapshot sees the later commits
    control = db.connect_arrow(url)
    try:
        c = control.cursor()
        c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        sessions.load_legs(c, pa.Table.from_pylist(
            [{"balance_id": ghost, "currency": "USD", "kind": 0, "amount": "999"}],
            schema=sessions.LEGS_SCHEMA).to_reader())
        seen = sessions.shard_delta_reader(c).read_all().to_pylist()[0]
        c.execute("ROLLBACK")
        c.close()
    finally:
        control.close()
    assert seen["known"] is True and seen["indicator"] == "born_after_the_cut"


def test_a_sharded_run_under_concurrent_commits_publishes_its_cut(fresh_ledger, make_database, tmp_path):
    """The whole path (plan with its K delta sessions, merges, commit) while another connection commits:
    the partition is the journal as of the plan's view, nothing committed after it."""
    url = fresh_ledger
    settings = make_settings(url, tmp_path / "store", index_url=make_database())
    snapshot.take_snapshot(settings, BASE, 500)
    with _Writer(url, _touched_balances(url, 12)) as writer:
        result = snapshot.take_snapshot(settings, DAY, 500, shards=3)
    assert writer.commits > 0
    table = catalog.read_partition(settings, DAY)
    assert result.rows == table.num_rows and len(result.files) == 3
    watermark, max_balance = result.watermark["max_transaction_id"], result.watermark["max_balance_id"]
    with psycopg.connect(url) as conn:  # what committed after the cut goes, then the oracle sums the rest
        late = conn.execute("DELETE FROM blnk.transactions WHERE id > %s RETURNING id", (watermark,)).fetchall()
        born = conn.execute("DELETE FROM blnk.balances WHERE id > %s RETURNING balance_id",
                            (max_balance,)).fetchall()
    assert late and born  # the writer committed during the run, after the cut
    assert not {b for (b,) in born} & set(table["balance_id"].to_pylist())
    assert snapshot_values(table) == expected_snapshot(url, calendar.cutoff(DAY, "UTC"))


def test_shard_sessions_read_the_ledger_by_key_only(adversarial_url, make_database, tmp_path):
    """The legs are shipped from the staging session; a shard session touches blnk.* only by unique key."""
    settings = make_settings(adversarial_url, tmp_path / "store", index_url=make_database())
    snapshot.take_snapshot(settings, BASE, 1000)
    with db.connect(settings.snapshot_database_url, autocommit=True) as conn:
        origin = snapshot.origin_of(conn, index.manifest(conn, BASE))
    cutoff = calendar.cutoff(DAY, "UTC")
    ledger, shard = db.connect_arrow(adversarial_url), db.connect_arrow(adversarial_url)
    try:
        cur = ledger.cursor()
        journal.open_view(cur)
        cur.execute("SET LOCAL enable_seqscan = off")
        journal.stage_step(cur, cutoff, origin)
        snapshot_id = sessions.export_snapshot(cur)
        shard_cur = ExplainingCursor(shard.cursor())
        sessions.join_view(shard_cur, snapshot_id)
        shard_cur.execute("SET LOCAL enable_seqscan = off")
        legs = sessions.legs_reader(cur, None, "bln_8").read_all()
        sessions.load_legs(shard_cur, legs.to_reader())
        delta = sessions.shard_delta_reader(shard_cur).read_all()
        shard_cur.execute("ROLLBACK")
        cur.execute("ROLLBACK")
    finally:
        ledger.close()
        shard.close()
    assert legs.num_rows and delta.num_rows
    probes = assert_ledger_read_by_key(shard_cur.plans, probes_only=True, bitmap_scans=False)
    assert probes >= 1


@pytest.mark.parametrize("k", [2, 5])
def test_each_shard_delta_holds_its_range_only(adversarial_url, make_database, tmp_path, k):
    settings = make_settings(adversarial_url, tmp_path / "store", index_url=make_database())
    for day in (BASE, DAY):  # genesis (cut points from the balances the read adds), then rolled forward
        the_plan = shards.plan(settings, day, k, 500)
        fs = Store.at(settings.storage_uri).fs
        rows = 0
        for shard in range(the_plan.shards):
            low, high = the_plan.bounds(shard)
            with fs.open_input_file(the_plan.delta_path(shard)) as f:
                ids = pq.read_table(f, columns=["balance_id"])["balance_id"].to_pylist()
            assert ids == sorted(ids, key=str.encode)
            assert all((low is None or i >= low) and (high is None or i < high) for i in ids)
            rows += len(ids)
        assert rows
        for shard in range(the_plan.shards):
            shards.merge_shard(settings, the_plan, shard)
        shards.commit_shards(settings, the_plan)
