"""The pooled query engine: one per process, thread-safe, answering ``balance_at`` and ``balance_change``
from the snapshot index plus the journal (see :mod:`snapshot_pipeline.query`)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

import psycopg
import pyarrow as pa
from psycopg_pool import ConnectionPool, PoolTimeout

from snapshot_pipeline import db, snapshot
from snapshot_pipeline.ledger import asof, journal
from snapshot_pipeline.query.answers import (
    Anchor,
    BalanceAt,
    BalanceChange,
    check_representable,
)
from snapshot_pipeline.query.errors import BalanceNotFound, QueryError
from snapshot_pipeline.query.hot import HotCache
from snapshot_pipeline.query.instants import iso_utc, just_before, to_utc
from snapshot_pipeline.query.sets import balances_at_table
from snapshot_pipeline.query.sql import ALL_IDS, GENESIS_SQL, REPLAY_SQL
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import catalog, index, roll_state
from snapshot_pipeline.store.location import Store

ANCHOR_ATTEMPTS = 3  # reads of the anchor and its state, when a run publishes it again meanwhile

POOL_TIMEOUT_SECONDS = 5.0
MAX_BALANCE_ID_LENGTH = 512


class QueryEngine:
    """Answers balance queries from the snapshot store plus the journal. Thread-safe (connection pools).

    One engine per process: it keeps pooled connections to the ledger and to the snapshot index
    (one pool when they are the same database).
    """

    def __init__(self, settings: Settings, *, max_connections: int = 8,
                 pool_timeout: float = POOL_TIMEOUT_SECONDS):
        self.settings = settings
        self.ledger_url = db.ledger_url(settings)
        self.index_url = db.snapshot_url(settings)
        self.pool_timeout = pool_timeout
        self._ledger = self._pool(self.ledger_url, "ledger", max_connections)
        self._index = (self._ledger if self.index_url == self.ledger_url
                       else self._pool(self.index_url, "index", max_connections))
        self._index_ready = False
        self._lock = threading.Lock()
        self.hot = HotCache(settings.hot_balances)  # busy balances kept in memory, exact (query/hot.py)

    @staticmethod
    def _pool(url: str, name: str, max_connections: int) -> ConnectionPool:
        return ConnectionPool(
            url, min_size=1, max_size=max_connections, open=True, name=name,
            kwargs={"autocommit": True, "connect_timeout": db.CONNECT_TIMEOUT_SECONDS, "prepare_threshold": 1},
            configure=_configure, reconnect_timeout=0,
        )

    def close(self) -> None:
        self._ledger.close()
        if self._index is not self._ledger:
            self._index.close()

    def __enter__(self) -> QueryEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ plumbing

    def _run(self, pool: ConnectionPool, what: str, url: str, work):
        try:
            with pool.connection(timeout=self.pool_timeout) as conn:
                return work(conn)
        except PoolTimeout as exc:
            raise db.DatabaseUnavailable(f"cannot connect to the {what} at {db.redact(url)}: {exc}") from exc
        except psycopg.OperationalError as exc:
            raise db.DatabaseUnavailable(f"the {what} at {db.redact(url)} failed: {exc}") from exc

    def _ledger_query(self, work):
        return self._run(self._ledger, "ledger database", self.ledger_url, work)

    def _index_query(self, work):
        return self._run(self._index, "snapshot index database", self.index_url, work)

    def _has_index(self, conn: psycopg.Connection) -> bool:
        """Whether the snapshot index exists yet (no snapshot taken means: replay from genesis)."""
        if not self._index_ready:
            found = index.ready(conn)
            with self._lock:
                self._index_ready = found
        return self._index_ready

    def ping(self) -> dict:
        """Check both databases (used by the HTTP service's health endpoint)."""
        self._ledger_query(lambda c: c.execute("SELECT 1").fetchone())
        self._index_query(lambda c: c.execute("SELECT 1").fetchone())
        return {"ledger": "ok", "index": "ok"}

    # -------------------------------------------------------------------------------------- queries

    def _anchor_on(self, conn: psycopg.Connection, balance_id: str, at: dt.datetime):
        if not self._has_index(conn):
            return None
        return index.anchor_row(conn, balance_id, at)

    def balance_at(self, balance_id: str, at: dt.datetime, from_source: bool = False) -> BalanceAt:
        """The six amounts of ``balance_id`` for effective time ``<= at`` (see the module docstring).

        One pooled connection per answer when the index lives in the ledger's database (the anchor lookup
        and the replay on it), else one from each pool. A hot balance (:mod:`.hot`) is answered from memory
        after a primary-key probe of the journal instead of a replay.
        """
        balance_id = _check_balance_id(balance_id)
        at = to_utc(at)
        if from_source:
            result = self._ledger_query(lambda conn: _genesis_row(conn, balance_id, at))
            return _replayed(balance_id, at, result, None, (0, 0, 0, 0), True)
        if self._index is self._ledger:
            return self._ledger_query(
                lambda conn: self._from_anchor(conn, balance_id, at, self._anchor_on(conn, balance_id, at)))
        row = self._index_query(lambda conn: self._anchor_on(conn, balance_id, at))
        return self._ledger_query(lambda conn: self._from_anchor(conn, balance_id, at, row))

    def _from_anchor(self, conn: psycopg.Connection, balance_id: str, at: dt.datetime, row) -> BalanceAt:
        """The answer from the anchor lookup's ``row`` (None: no partition at or before ``at``) on the ledger
        connection ``conn``: from the hot balance's legs, or by :data:`REPLAY_SQL`."""
        if balance_id in self.hot and (hot := self._hot_answer(conn, balance_id, at, row)) is not None:
            return hot
        anchor = None
        base: tuple[int, ...] = (0, 0, 0, 0)
        if row is None:  # no partition at or before `at`: the same replay, from genesis
            params = {"b": balance_id, "t": asof.ts(at), "anchored": False, "c": "-infinity", "w": 0}
        else:
            anchored = row[3] is not None
            anchor = Anchor(row[0], row[1], int(row[2]))
            if anchored:
                base = tuple(int(v) for v in row[4:8])
            params = {"b": balance_id, "t": asof.ts(at), "anchored": anchored,
                      "c": asof.ts(anchor.cutoff_at), "w": anchor.max_transaction_id}
        result = conn.execute(REPLAY_SQL, params).fetchone()
        answer = _replayed(balance_id, at, result, anchor, base, False)
        if self.hot.wants(balance_id, answer.replayed_transactions):  # a busy balance: keep it from now on
            self._hot_answer(conn, balance_id, at, row)
        return answer

    def _hot_answer(self, conn: psycopg.Connection, balance_id: str, at: dt.datetime, row) -> BalanceAt | None:
        """The answer from the in-memory legs of a hot balance (:mod:`.hot`), after a probe of the journal;
        None when the balance is not (or no longer) kept. ``row`` is the anchor lookup's row (or None)."""
        anchored = row is not None and row[3] is not None
        cutoff, watermark = (row[1], int(row[2])) if anchored else (None, 0)
        found = self.hot.answer(conn, balance_id, at, cutoff, watermark)
        if found is None:
            return None
        anchor = Anchor(row[0], row[1], int(row[2])) if anchored else None
        values = (found.credit, found.debit, found.held_in, found.held_out)
        return _answer(balance_id, at, found.facts, values, anchor, found.legs, False)

    def balance_change(self, balance_id: str, start: dt.datetime, end: dt.datetime,
                       from_source: bool = False) -> BalanceChange:
        """Opening (effective < start), closing (effective < end), credits and debits over ``[start, end)``."""
        start, end = to_utc(start), to_utc(end)
        if end < start:
            raise QueryError(f"end {iso_utc(end)} is before start {iso_utc(start)}")
        opening = self._balance_before(balance_id, start, from_source)
        closing = self._balance_before(balance_id, end, from_source)
        return BalanceChange(balance_id, start, end, opening, closing)

    def _balance_before(self, balance_id: str, instant: dt.datetime, from_source: bool) -> BalanceAt:
        """The balance over effective time ``< instant``; all zero (nothing dated) before the first instant."""
        before = just_before(instant)
        if before is not None:
            return self.balance_at(balance_id, before, from_source)
        answer = self.balance_at(balance_id, instant, from_source)
        return dataclasses.replace(answer, existed=False, credit_balance=0, debit_balance=0,
                                   inflight_credit_balance=0, inflight_debit_balance=0, anchor=None,
                                   replayed_transactions=0)

    def balances_at(self, at: dt.datetime, ledger_id: str | None = None, currency: str | None = None, *,
                    count_replayed: bool = False) -> pa.Table:
        """Every balance existing at ``at`` (``created_at <= at``) with its six amounts, as one Arrow table.

        Built from the anchor's Parquet partition plus one set-based replay of the journal (the
        snapshot's own delta query). Schema: the snapshot schema without ``cutoff_at``. Rows: in
        ``balance_id`` order (byte order), the balances the anchor does not hold (created after its
        cutoff or recorded after its read) among the others, as in a partition. The schema metadata says
        what it was built from (``snapshot_pipeline.at``, ``.anchor_date``, ``.anchor_cutoff``,
        ``.replayed_balances``, and with ``count_replayed=True`` ``.replayed_transactions``, which
        costs one count of the staged journal rows).
        """
        at = to_utc(at)
        attempt = 1
        while True:  # the state staged in the query's view is checked there (index in the ledger's database)
            anchor, origin = self._anchor_and_origin(at)
            try:
                return balances_at_table(Store.at(self.settings.storage_uri), self.ledger_url, at, anchor, origin,
                                         ledger_id, currency, count_replayed)
            except roll_state.StateChanged as exc:
                if attempt == ANCHOR_ATTEMPTS:
                    raise snapshot.SnapshotError(str(exc)) from exc
                attempt += 1

    def _anchor_and_origin(self, at: dt.datetime) -> tuple[index.ManifestEntry | None, journal.Origin]:
        """The anchor partition of ``at`` and its roll-forward state, of one generation: when the anchor is
        published again (or retired) while they are read, they are read again (a reader polls while runs publish).
        With the index in the ledger's database the state is left there, for the query's view to stage."""
        attempt = 1
        in_view = self.index_url == self.ledger_url
        while True:
            anchor = self._anchor_partition(at)
            if anchor is None:
                return None, journal.Origin.genesis()
            try:
                return anchor, self._index_query(
                    lambda conn, anchor=anchor: snapshot.origin_of(conn, anchor, state_in_view=in_view))
            except snapshot.SnapshotError:
                if attempt == ANCHOR_ATTEMPTS:
                    raise
                attempt += 1

    def _anchor_partition(self, at: dt.datetime) -> index.ManifestEntry | None:
        """The latest roll-forward partition with cutoff <= ``at`` whose files exist (None: genesis)."""
        def work(conn):
            if not self._has_index(conn):
                return []
            return index.roll_forward_dates_at_or_before(conn, at, snapshot.ROLL_VERSION)

        store = Store.at(self.settings.storage_uri)
        for date in self._index_query(work):
            entry = self._index_query(lambda conn, date=date: index.manifest(conn, date))
            if catalog.present_paths(store, entry) is not None:
                return entry
        return None


def _replayed(balance_id: str, at: dt.datetime, result, anchor: Anchor | None, base: tuple, from_source: bool
              ) -> BalanceAt:
    """A replay row (:data:`REPLAY_SQL`'s shape; None: no such balance) plus the anchor's ``base`` amounts."""
    if result is None:
        raise BalanceNotFound(balance_id)
    currency, ledger_id, created_at, used_anchor, credit, debit, held_in, held_out, legs = result
    if not used_anchor:
        anchor, base = None, (0, 0, 0, 0)
    values = tuple(b + int(d) for b, d in zip(base, (credit, debit, held_in, held_out), strict=True))
    return _answer(balance_id, at, (currency, ledger_id, created_at), values, anchor, int(legs), from_source)


def _answer(balance_id: str, at: dt.datetime, facts: tuple, values: tuple, anchor: Anchor | None, legs: int,
            from_source: bool) -> BalanceAt:
    currency, ledger_id, created_at = facts
    return check_representable(BalanceAt(
        balance_id=balance_id, at=at, existed=created_at <= at,  # before its creation, backdated legs count
        currency=currency, ledger_id=ledger_id, created_at=created_at, credit_balance=values[0],
        debit_balance=values[1], inflight_credit_balance=values[2], inflight_debit_balance=values[3],
        anchor=anchor, replayed_transactions=legs, from_source=from_source,
    ))


def _configure(conn: psycopg.Connection) -> None:
    """Per-connection setup: reuse one plan per prepared statement.

    The replay statements are planned in a few milliseconds but run in a fraction of one; their best
    plan does not depend on the parameter values (index seeks on the balance id, a time range), so a
    generic plan avoids re-planning on every call (PostgreSQL keeps custom plans for them otherwise).
    """
    conn.execute("SET plan_cache_mode = force_generic_plan")


def _genesis_row(conn: psycopg.Connection, balance_id: str, at: dt.datetime) -> tuple | None:
    """:data:`GENESIS_SQL` for one balance, in the shape of a replay row (``None`` when it does not exist)."""
    row = conn.execute(GENESIS_SQL, {"ids": [balance_id], "t": asof.ts(at), "w": ALL_IDS}).fetchone()
    if row is None or not row[1]:
        return None
    _, _, currency, ledger_id, created_at, credit, debit, held_in, held_out, legs = row
    return currency, ledger_id, created_at, False, credit, debit, held_in, held_out, legs


def _check_balance_id(balance_id: str) -> str:
    if not isinstance(balance_id, str) or not balance_id or len(balance_id) > MAX_BALANCE_ID_LENGTH \
            or "\x00" in balance_id:
        raise QueryError(f"balance_id must be a non-empty string of at most {MAX_BALANCE_ID_LENGTH} characters"
                         " without NUL")
    return balance_id


def balance_at(settings: Settings, balance_id: str, at: dt.datetime, from_source: bool = False) -> BalanceAt:
    """One-shot :meth:`QueryEngine.balance_at` (opens and closes its own connections)."""
    with QueryEngine(settings, max_connections=1) as engine:
        return engine.balance_at(balance_id, at, from_source)
