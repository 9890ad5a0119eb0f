"""Balances at any instant, exact: ``balance_at``, ``balances_at``, ``balance_change``.

The contract (DESIGN §3): the value of balance ``b`` at instant ``T`` is the sum over
``S_T`` = {journal rows visible now whose effective time ``COALESCE(effective_date,
created_at)`` is ``<= T``}:

* ``credit_balance`` / ``debit_balance``: APPLIED legs with destination / source ``b``;
* ``inflight_credit_balance`` / ``inflight_debit_balance``: the open amounts of INFLIGHT rows in
  ``S_T`` with destination / source ``b`` (``precise_amount`` minus their APPLIED and VOID children
  in ``S_T``); a child counts against a parent only when the parent is itself in ``S_T``, and an
  APPLIED child also counts as an ordinary APPLIED leg;
* ``balance = credit - debit``, ``inflight_balance = inflight_credit - inflight_debit``;
* the balance *existed* at ``T`` iff its ``created_at <= T``; before that every amount is 0.

How an answer is built (no replay from genesis):

1. the **anchor** ``X`` is the latest published partition whose cutoff ``C_X <= T``; its value for
   ``b`` is the latest index row of ``b`` at or before ``X`` (one index seek). ``X`` summed
   ``S_X = {id <= W_X and effective < C_X}`` (``W_X`` = its watermark);
2. the **replay** adds the legs of ``S_T \\ S_X`` touching ``b``: effective time in ``[C_X, T]``,
   or ``id > W_X`` with effective time before ``C_X`` (late and backdated rows the snapshot could
   not see), so an answer is exact before any repair run. For the inflight columns it also
   replays new commits/voids of holds in ``S_T`` and old commits/voids (in ``S_X``) of new holds;
3. a balance without an index row at ``X`` (created at or after ``C_X``, or created before it but
   recorded after ``X`` was read) is replayed from zero over all of its legs in ``S_T``.

Per-balance replay finds the legs of ``b`` with the journal's ``(source, ...)`` and
``(destination, ...)`` indexes; ``snapshot-pipeline ledger-indexes`` offers composite indexes that
make it proportional to the legs since the anchor (:mod:`snapshot_pipeline.ledger.indexes`).
New commits and voids are found among ``b``'s own legs: like Blnk, a commit or void of an inflight
transaction carries its parent's source and destination. ``from_source=True`` replays from
genesis and needs no such assumption.

Limits: a journal row whose id is at or below ``W_X`` but which committed after ``X``'s read
(a writer in flight while the snapshot was read) is not seen by the replay; the snapshot's
staleness check (``late_rows(check_prefix=True)``) reports it and a re-materialization fixes it.

Instants are naive UTC (the ledger's convention) or timezone-aware (converted to UTC). Timestamps
have microsecond precision, so ``effective < start`` is ``effective <= start - 1µs``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import threading

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg_pool import ConnectionPool, PoolTimeout

from snapshot_pipeline import amounts, db, snapshot
from snapshot_pipeline.ledger import asof, journal
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import index
from snapshot_pipeline.snapshot import merge
from snapshot_pipeline.store import parquet as store

MICROSECOND = dt.timedelta(microseconds=1)
POOL_TIMEOUT_SECONDS = 5.0
MAX_BALANCE_ID_LENGTH = 512


class QueryError(ValueError):
    """Bad input to a query (an unparseable or ambiguous timestamp, an empty interval...)."""


AmountOverflow = amounts.AmountOverflow


class BalanceNotFound(LookupError):
    """No balance with this ``balance_id`` exists in the ledger."""

    def __init__(self, balance_id: str):
        super().__init__(f"balance {balance_id!r} does not exist")
        self.balance_id = balance_id


# ------------------------------------------------------------------------------------------------ instants

_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)


FIRST_INSTANT = dt.datetime.min  # 0001-01-01T00:00:00Z: naive UTC, the range of Python datetimes
LAST_INSTANT = dt.datetime.max  # 9999-12-31T23:59:59.999999Z
INSTANT_RANGE = "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z"


def parse_timestamp(text: str, what: str = "timestamp") -> dt.datetime:
    """RFC 3339 text with a UTC offset (``Z``, ``+05:30``, ``-04:00``) -> naive UTC.

    Fractions finer than a microsecond are truncated, which is exact for ``effective <= T``
    because the ledger stores microseconds. Text without an offset is refused (ambiguous).
    Every instant whose UTC value lies in :data:`INSTANT_RANGE` is accepted, whatever its offset;
    one outside it (e.g. ``0001-01-01T00:00:00+01:00``, ``9999-12-31T23:59:59-23:59``) or with year
    0000 is refused with a :class:`QueryError` naming the range. ``what`` names the parameter.
    """
    if not isinstance(text, str) or len(text) > 64:
        raise QueryError(f"{what} must be an RFC 3339 instant of at most 64 characters")
    match = _RFC3339.match(text.strip())
    if not match:
        raise QueryError(
            f"{what} {text!r} is not RFC 3339 with a UTC offset (e.g. 2026-11-02T09:30:00Z or"
            " 2026-11-02T15:00:00.250+05:30)"
        )
    day, clock, fraction, offset = match.groups()
    micro = (fraction or "").ljust(6, "0")[:6]
    offset = "+00:00" if offset in ("Z", "z") else offset
    if day.startswith("0000"):
        raise QueryError(f"{what} {text!r} is outside the supported range {INSTANT_RANGE}")
    if int(offset[1:3]) > 23 or int(offset[4:6]) > 59:
        raise QueryError(f"{what} {text!r} has the UTC offset {offset}: offsets run from -23:59 to +23:59")
    try:
        value = dt.datetime.fromisoformat(f"{day}T{clock}.{micro}{offset}")
    except ValueError as exc:
        raise QueryError(f"{what} {text!r} is not a valid date and time: {exc}") from None
    return to_utc(value, what)


def to_utc(value: dt.datetime, what: str = "timestamp") -> dt.datetime:
    """An aware datetime -> naive UTC; a naive one is taken as UTC already.

    An aware instant whose UTC value falls outside :data:`INSTANT_RANGE` is a :class:`QueryError`.
    """
    if not isinstance(value, dt.datetime):
        raise QueryError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is not None:
        try:
            return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        except OverflowError:
            raise QueryError(f"{what} {value.isoformat()} is outside the supported range {INSTANT_RANGE}"
                             " once converted to UTC") from None
    return value


def just_before(value: dt.datetime) -> dt.datetime | None:
    """``value - 1µs`` (so ``effective < value`` is ``effective <= just_before(value)``); ``None`` at the
    first instant, before which nothing is dated (legs dated before year 1 are outside the range)."""
    return None if value <= FIRST_INSTANT else value - MICROSECOND


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def iso_utc(value: dt.datetime | None) -> str | None:
    """Naive UTC -> RFC 3339 with ``Z`` (milliseconds shown when present, microseconds when needed)."""
    if value is None:
        return None
    text = value.isoformat(timespec="microseconds" if value.microsecond % 1000 else "milliseconds")
    return text + "Z"


# ------------------------------------------------------------------------------------------------- answers


@dataclasses.dataclass(frozen=True)
class Anchor:
    """The snapshot partition an answer started from."""

    snapshot_date: dt.date
    cutoff_at: dt.datetime
    max_transaction_id: int

    def as_dict(self) -> dict:
        return {
            "snapshot_date": self.snapshot_date.isoformat(),
            "cutoff": iso_utc(self.cutoff_at),
            "watermark_transaction_id": self.max_transaction_id,
        }


@dataclasses.dataclass(frozen=True)
class BalanceAt:
    """The value of one balance at one instant, and what it was built from."""

    balance_id: str
    at: dt.datetime
    existed: bool
    currency: str
    ledger_id: str | None
    created_at: dt.datetime
    credit_balance: int
    debit_balance: int
    inflight_credit_balance: int
    inflight_debit_balance: int
    anchor: Anchor | None
    replayed_transactions: int
    from_source: bool

    @property
    def balance(self) -> int:
        return self.credit_balance - self.debit_balance

    @property
    def inflight_balance(self) -> int:
        return self.inflight_credit_balance - self.inflight_debit_balance

    def amounts(self) -> dict[str, int]:
        return {
            "balance": self.balance,
            "credit_balance": self.credit_balance,
            "debit_balance": self.debit_balance,
            "inflight_balance": self.inflight_balance,
            "inflight_credit_balance": self.inflight_credit_balance,
            "inflight_debit_balance": self.inflight_debit_balance,
        }

    def as_blnk(self) -> dict:
        """Blnk's ``GET /balances/{id}/at`` response shape, plus our additions (exact integers)."""
        return {
            "balance": {
                "balance": self.balance,
                "debit_balance": self.debit_balance,
                "credit_balance": self.credit_balance,
                "currency": self.currency,
                "balance_id": self.balance_id,
            },
            "timestamp": iso_utc(self.at),
            "from_source": self.from_source,
            "inflight": {
                "inflight_balance": self.inflight_balance,
                "inflight_credit_balance": self.inflight_credit_balance,
                "inflight_debit_balance": self.inflight_debit_balance,
            },
            "existed": self.existed,
            "anchor": self.anchor.as_dict() if self.anchor else None,
            "replayed_transactions": self.replayed_transactions,
        }

    def as_dict(self) -> dict:
        return {
            "balance_id": self.balance_id,
            "timestamp": iso_utc(self.at),
            "currency": self.currency,
            "ledger_id": self.ledger_id,
            **self.amounts(),
            "existed": self.existed,
            "balance_created_at": iso_utc(self.created_at),
            "from_source": self.from_source,
            "anchor": self.anchor.as_dict() if self.anchor else None,
            "replayed_transactions": self.replayed_transactions,
        }


@dataclasses.dataclass(frozen=True)
class BalanceChange:
    """Movement of one balance over ``[start, end)``: opening = effective < start, closing = effective < end."""

    balance_id: str
    start: dt.datetime
    end: dt.datetime
    opening: BalanceAt
    closing: BalanceAt

    @property
    def credits(self) -> int:
        """Σ APPLIED credits with effective time in ``[start, end)``."""
        return self.closing.credit_balance - self.opening.credit_balance

    @property
    def debits(self) -> int:
        """Σ APPLIED debits with effective time in ``[start, end)``."""
        return self.closing.debit_balance - self.opening.debit_balance

    def as_dict(self) -> dict:
        return {
            "balance_id": self.balance_id,
            "start": iso_utc(self.start),
            "end": iso_utc(self.end),
            "currency": self.closing.currency,
            "opening_balance": self.opening.balance,
            "closing_balance": self.closing.balance,
            "credits": self.credits,
            "debits": self.debits,
            "net_change": self.closing.balance - self.opening.balance,
            "opening": self.opening.as_dict(),
            "closing": self.closing.as_dict(),
        }


# ------------------------------------------------------------------------------------------------------ SQL

_EFF = "COALESCE({t}.effective_date, {t}.created_at)"


def _leg_branch(side: str, late: bool) -> str:
    """Rows of ``S_T \\ S_X`` with ``side`` = b: effective in [c, T]; or (late) id > w with effective < c."""
    eff = _EFF.format(t="t")
    if late:
        window = f"t.id > (SELECT w FROM win) AND {eff} < (SELECT c FROM win)" \
                 " AND (SELECT c FROM win) > '-infinity'::timestamp"
    else:
        window = f"{eff} >= (SELECT c FROM win) AND {eff} <= %(t)s::timestamp"
    return (
        "SELECT t.id, t.transaction_id, t.status, t.parent_transaction, COALESCE(t.precise_amount, 0) AS amount"
        f" FROM blnk.transactions t WHERE t.{side} = %(b)s AND t.status IN ('APPLIED', 'INFLIGHT', 'VOID')"
        f" AND {window}"
    )


def _released_new(legs: str, side: str) -> str:
    """(a) commits/voids in ``S_T \\ S_X`` (among b's legs) of INFLIGHT parents in ``S_T`` holding on b."""
    return (
        f"(SELECT COALESCE(sum(c.amount), 0) FROM {legs} c"
        " JOIN blnk.transactions p ON p.transaction_id = c.parent_transaction"
        " WHERE c.status IN ('APPLIED', 'VOID') AND c.parent_transaction IS NOT NULL"
        f" AND p.status = 'INFLIGHT' AND p.{side} = %(b)s AND {_EFF.format(t='p')} <= %(t)s::timestamp)"
    )


def _released_old(legs: str) -> str:
    """(b) commits/voids already in ``S_X`` of INFLIGHT parents new in ``S_T``."""
    return (
        f"(SELECT COALESCE(sum(COALESCE(c.precise_amount, 0)), 0) FROM {legs} p"
        " JOIN blnk.transactions c ON c.parent_transaction = p.transaction_id"
        " WHERE p.status = 'INFLIGHT' AND c.status IN ('APPLIED', 'VOID')"
        f" AND c.id <= (SELECT w FROM win) AND {_EFF.format(t='c')} < (SELECT c FROM win))"
    )


def _replay_sql() -> str:
    """One statement: the balance row, the replay window and the sums of the legs to add to the anchor.

    ``%(anchored)s`` says whether the index holds a row for b at the anchor; the window falls back
    to genesis (c = -infinity, w = 0) when it does not.
    """
    return f"""
WITH bal AS (
    SELECT balance_id, currency, ledger_id, created_at FROM blnk.balances WHERE balance_id = %(b)s
),
win AS (
    SELECT CASE WHEN %(anchored)s THEN %(c)s::timestamp ELSE '-infinity'::timestamp END AS c,
           CASE WHEN %(anchored)s THEN %(w)s::bigint ELSE 0 END AS w
    FROM bal
),
src AS ({_leg_branch('source', False)} UNION ALL {_leg_branch('source', True)}),
dst AS ({_leg_branch('destination', False)} UNION ALL {_leg_branch('destination', True)})
SELECT bal.currency, bal.ledger_id, bal.created_at, win.c > '-infinity'::timestamp AS anchored,
       (SELECT COALESCE(sum(amount), 0) FROM dst WHERE status = 'APPLIED') AS credit,
       (SELECT COALESCE(sum(amount), 0) FROM src WHERE status = 'APPLIED') AS debit,
       (SELECT COALESCE(sum(amount), 0) FROM dst WHERE status = 'INFLIGHT')
         - {_released_new('dst', 'destination')} - {_released_old('dst')} AS inflight_credit,
       (SELECT COALESCE(sum(amount), 0) FROM src WHERE status = 'INFLIGHT')
         - {_released_new('src', 'source')} - {_released_old('src')} AS inflight_debit,
       (SELECT count(*) FROM (SELECT id FROM src UNION SELECT id FROM dst) ids) AS legs
FROM bal CROSS JOIN win
"""


REPLAY_SQL = _replay_sql()

# From genesis, written independently of the anchor logic: every leg of b in S_T, every hold's
# children in S_T (whatever their own source and destination).
GENESIS_SQL = f"""
WITH bal AS (
    SELECT balance_id, currency, ledger_id, created_at FROM blnk.balances WHERE balance_id = %(b)s
),
legs AS (
    SELECT t.transaction_id, t.source, t.destination, t.status, COALESCE(t.precise_amount, 0) AS amount
    FROM blnk.transactions t
    WHERE (t.source = %(b)s OR t.destination = %(b)s) AND t.status IN ('APPLIED', 'INFLIGHT')
      AND {_EFF.format(t='t')} <= %(t)s::timestamp
),
open_holds AS (
    SELECT h.source, h.destination, h.amount - COALESCE((
        SELECT sum(COALESCE(c.precise_amount, 0)) FROM blnk.transactions c
        WHERE c.parent_transaction = h.transaction_id AND c.status IN ('APPLIED', 'VOID')
          AND {_EFF.format(t='c')} <= %(t)s::timestamp), 0) AS open_amount
    FROM legs h WHERE h.status = 'INFLIGHT'
)
SELECT bal.currency, bal.ledger_id, bal.created_at, false AS anchored,
       (SELECT COALESCE(sum(amount), 0) FROM legs WHERE status = 'APPLIED' AND destination = %(b)s),
       (SELECT COALESCE(sum(amount), 0) FROM legs WHERE status = 'APPLIED' AND source = %(b)s),
       (SELECT COALESCE(sum(open_amount), 0) FROM open_holds WHERE destination = %(b)s),
       (SELECT COALESCE(sum(open_amount), 0) FROM open_holds WHERE source = %(b)s),
       (SELECT count(*) FROM legs)
FROM bal
"""


# --------------------------------------------------------------------------------------------------- engine


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

    def __enter__(self) -> "QueryEngine":
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

    def _anchor(self, balance_id: str, at: dt.datetime):
        def work(conn):
            if not self._has_index(conn):
                return None
            return index.anchor_row(conn, balance_id, asof.ts(at))

        return self._index_query(work)

    def balance_at(self, balance_id: str, at: dt.datetime, from_source: bool = False) -> BalanceAt:
        """The six amounts of ``balance_id`` for effective time ``<= at`` (see the module docstring)."""
        balance_id = _check_balance_id(balance_id)
        at = to_utc(at)
        row = None if from_source else self._anchor(balance_id, at)
        anchor = None
        base = (0, 0, 0, 0)
        if row is None:
            sql, params = GENESIS_SQL, {"b": balance_id, "t": asof.ts(at)}
            if not from_source:  # no partition at or before `at`: the same replay, from genesis
                sql, params = REPLAY_SQL, {**params, "anchored": False, "c": "-infinity", "w": 0}
        else:
            anchored = row[3] is not None
            anchor = Anchor(row[0], row[1], int(row[2]))
            if anchored:
                base = tuple(int(v) for v in row[4:8])
            sql = REPLAY_SQL
            params = {"b": balance_id, "t": asof.ts(at), "anchored": anchored, "c": asof.ts(anchor.cutoff_at),
                      "w": anchor.max_transaction_id}
        result = self._ledger_query(lambda conn: conn.execute(sql, params).fetchone())
        if result is None:
            raise BalanceNotFound(balance_id)
        currency, ledger_id, created_at, used_anchor, credit, debit, held_in, held_out, legs = result
        if not used_anchor:
            anchor, base = None, (0, 0, 0, 0)
        existed = created_at <= at  # before its creation, backdated legs still count (as Blnk's replay does)
        values = tuple(b + int(d) for b, d in zip(base, (credit, debit, held_in, held_out)))
        return check_representable(BalanceAt(
            balance_id=balance_id, at=at, existed=existed, currency=currency, ledger_id=ledger_id,
            created_at=created_at, credit_balance=values[0], debit_balance=values[1],
            inflight_credit_balance=values[2], inflight_debit_balance=values[3],
            anchor=anchor, replayed_transactions=int(legs), from_source=from_source,
        ))

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
        snapshot's own delta query). Schema: the snapshot schema without ``cutoff_at``. Rows: the
        anchor's balances in its ``balance_id`` order, then the balances it does not hold (created
        after its cutoff or recorded after its read) in ``balance_id`` order. The schema metadata says
        what it was built from (``snapshot_pipeline.at``, ``.anchor_date``, ``.anchor_cutoff``,
        ``.replayed_balances``, and with ``count_replayed=True`` ``.replayed_transactions``, which
        costs one more scan of the replayed journal rows).
        """
        return balances_at_table(self, to_utc(at), ledger_id, currency, count_replayed)


def _configure(conn: psycopg.Connection) -> None:
    """Per-connection setup: reuse one plan per prepared statement.

    The replay statements are planned in a few milliseconds but run in a fraction of one; their best
    plan does not depend on the parameter values (index seeks on the balance id, a time range), so a
    generic plan avoids re-planning on every call (PostgreSQL keeps custom plans for them otherwise).
    """
    conn.execute("SET plan_cache_mode = force_generic_plan")


def check_representable(answer: BalanceAt) -> BalanceAt:
    """``answer``, or :class:`AmountOverflow` naming the balance, the amount and its value when one of
    its six amounts does not fit the project's exact amount type, ``decimal128(38, 0)`` (DESIGN §3)."""
    values = answer.amounts()
    for name in ("credit_balance", "debit_balance", "inflight_credit_balance", "inflight_debit_balance", "balance",
                 "inflight_balance"):
        value = values[name]
        if abs(value) > amounts.MAX_STORED:
            raise AmountOverflow(f"balance {answer.balance_id!r}: {name} = {value} at {iso_utc(answer.at)}"
                                 " does not fit decimal128(38, 0)")
    return answer


def _check_balance_id(balance_id: str) -> str:
    if not isinstance(balance_id, str) or not balance_id or len(balance_id) > MAX_BALANCE_ID_LENGTH \
            or "\x00" in balance_id:
        raise QueryError(f"balance_id must be a non-empty string of at most {MAX_BALANCE_ID_LENGTH} characters"
                         " without NUL")
    return balance_id


# -------------------------------------------------------------------------------------------- balances_at

OUTPUT_SCHEMA = pa.schema([f for f in store.SNAPSHOT_SCHEMA if f.name != "cutoff_at"])


def _published_anchor(engine: QueryEngine, at: dt.datetime) -> index.ManifestEntry | None:
    """The latest roll-forward partition with cutoff <= at whose Parquet file exists (None: genesis)."""
    def work(conn):
        if not engine._has_index(conn):
            return []
        return index.roll_forward_dates_at_or_before(conn, at, snapshot.ROLL_VERSION)

    for date in engine._index_query(work):
        if store.exists(engine.settings.storage_uri, date):
            return engine._index_query(lambda conn: index.manifest(conn, date))
    return None


def balances_at_table(engine: QueryEngine, at: dt.datetime, ledger_id: str | None,
                      currency: str | None, count_replayed: bool = False) -> pa.Table:
    """Every balance at ``at``: the anchor partition rolled forward to ``at`` (the snapshot core's own step).

    The journal is read by key only (rows above the anchor's watermark and its pending set), so the cost
    is the anchor's Parquet plus the journal since its cutoff.
    """
    anchor = _published_anchor(engine, at)
    end = at + MICROSECOND  # effective <= at  <=>  effective < at + 1µs
    origin = (engine._index_query(lambda conn: snapshot.origin_of(conn, anchor)) if anchor is not None
              else journal.Origin.genesis())
    base_batches = (store.iter_partition(engine.settings.storage_uri, anchor.snapshot_date, merge.BASE_COLUMNS,
                                         batch_rows=131_072)
                    if anchor is not None else iter([]))
    parts = []
    ledger = db.connect_arrow(engine.ledger_url)
    try:
        cur = ledger.cursor()
        try:
            view = journal.open_view(cur)
            step = journal.begin_step(cur, view, end, origin)
            delta = merge.Counted(journal.delta_reader(cur, end))
            for rows, _changed in merge.roll(base_batches, delta, end, 131_072):
                parts.append(_filtered(rows, ledger_id, currency))
            cur.execute("COMMIT")
        except snapshot.AmountOverflow as exc:
            raise QueryError(str(exc)) from exc
        finally:
            asof.rollback_quietly(cur)
            cur.close()
    finally:
        ledger.close()
    table = pa.concat_tables(parts).select(OUTPUT_SCHEMA.names) if parts else OUTPUT_SCHEMA.empty_table()
    metadata = {
        "snapshot_pipeline.at": iso_utc(at),
        "snapshot_pipeline.anchor_date": anchor.snapshot_date.isoformat() if anchor else "",
        "snapshot_pipeline.anchor_cutoff": iso_utc(anchor.cutoff_at) if anchor else "",
        "snapshot_pipeline.replayed_balances": str(delta.rows),
    }
    if count_replayed:
        metadata["snapshot_pipeline.replayed_transactions"] = str(step.counted_rows)
    return table.cast(OUTPUT_SCHEMA).replace_schema_metadata(metadata)


def _filtered(rows: pa.Table, ledger_id: str | None, currency: str | None) -> pa.Table:
    mask = None
    for column, value in (("ledger_id", ledger_id), ("currency", currency)):
        if value is not None:
            condition = pc.fill_null(pc.equal(rows[column], value), False)
            mask = condition if mask is None else pc.and_(mask, condition)
    return rows if mask is None else rows.filter(mask)


# ------------------------------------------------------------------------------------ one-shot functions


def balance_at(settings: Settings, balance_id: str, at: dt.datetime, from_source: bool = False) -> BalanceAt:
    """One-shot :meth:`QueryEngine.balance_at` (opens and closes its own connections)."""
    with QueryEngine(settings, max_connections=1) as engine:
        return engine.balance_at(balance_id, at, from_source)


def balances_at(settings: Settings, at: dt.datetime, ledger_id: str | None = None,
                currency: str | None = None) -> pa.Table:
    with QueryEngine(settings, max_connections=1) as engine:
        return engine.balances_at(at, ledger_id, currency)


def balance_change(settings: Settings, balance_id: str, start: dt.datetime, end: dt.datetime,
                   from_source: bool = False) -> BalanceChange:
    with QueryEngine(settings, max_connections=1) as engine:
        return engine.balance_change(balance_id, start, end, from_source)
