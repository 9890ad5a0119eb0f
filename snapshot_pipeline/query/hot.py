"""Hot balances: a balance with thousands of legs a day answered at any instant in microseconds of Python.

Why: with Blnk's index set (DESIGN §2) the legs of one balance are found only through ``(source)`` and
``(destination)``: no index serves an effective-time window, so the replay of :data:`~.sql.REPLAY_SQL`
reads *every* leg the balance ever had (an omnibus account with 10,000 legs a day: ~100,000 heap rows
after ten days, ~35 ms per answer, whatever the instant). Intraday anchors stored in the index would not
help: finding the legs between an anchor and ``T`` needs the same effective-time window.

What: once replays of a balance have counted at least :data:`HOT_REPLAY_LEGS` legs
:data:`HOT_AFTER_REPLAYS` times, the engine keeps the balance's
legs in memory (:class:`HotBalance`): every journal row touching it (APPLIED, INFLIGHT, VOID) and every
commit or void of its holds (found by ``parent_transaction``, whatever their own sides), sorted by
effective time with running sums, so ``balance_at(T)`` is a binary search per amount.

Exact against the journal as it is *now*, proven as follows. Journal rows are append-only (Blnk's trigger
forbids changing anything but ``meta_data`` and ``chain_*``) and their ``id`` comes from a sequence, so a
row that becomes visible later has an id that was never visible before: either above the highest id seen
(``seen``) or one of the ids at or below it that were missing when we looked (``gaps``: rolled back, or
inserted by a transaction still in flight: the late rows below a watermark). The load reads the legs, the
highest id and the gaps in one REPEATABLE READ view; every answer first *probes* the journal by primary
key for ``id > seen OR id = ANY(gaps)`` (the rows committed since, in any order, including backdated,
future-dated and late ones), folds the new rows in (deduplicated by id) and advances ``seen`` and
``gaps``. Nothing else can change what Σ over the journal returns. A probe's cost is the rows recorded
since the previous probe, ledger-wide. A balance whose id space has more than :data:`MAX_GAPS` missing
ids, or more than :data:`MAX_LEGS` legs, is not kept (the replay answers it).

The anchor partition is still looked up and reported (``anchor`` and ``replayed_transactions`` mean what
they mean for a replayed answer: the legs of ``S_T \\ S_X``), so an answer's provenance is unchanged.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import datetime as dt
import sys
import threading

import numpy as np
import psycopg

from snapshot_pipeline.settings import DEFAULT_HOT_BALANCES

HOT_REPLAY_LEGS = 1000  # a replay counting this many legs ...
HOT_AFTER_REPLAYS = 3  # ... for the third time in an engine makes its balance hot (one-shot CLI calls never load)
MAX_HOT_BALANCES = DEFAULT_HOT_BALANCES  # per engine (least recently used out); SNAPSHOT_HOT_BALANCES sets it, 0: off
MAX_LEGS = 1_000_000  # a balance with more rows than this is left to the replay
MAX_TOTAL_LEGS = 2_000_000  # rows kept per engine (~0.35 KiB each: ~700 MiB), least recently used out
MAX_GAPS = 100_000  # missing journal ids tracked at most (each is probed by primary key on every answer)
REBUILD_AFTER = 2048  # rows folded in since the last sort before the sorted arrays are rebuilt

_EPOCH = dt.datetime(1970, 1, 1)
_US = dt.timedelta(microseconds=1)


def micros(value: dt.datetime) -> int:
    """Naive UTC -> microseconds since 1970 (exact, negative before)."""
    return (value - _EPOCH) // _US


_COLUMNS = ("t.id, t.transaction_id, t.source, t.destination, t.status, t.parent_transaction,"
            " COALESCE(t.precise_amount, 0), COALESCE(t.effective_date, t.created_at)")

# The balance's own legs (Blnk's (source) and (destination) indexes, a BitmapOr).
LEGS_SQL = f"""
SELECT {_COLUMNS} FROM blnk.transactions t
 WHERE (t.source = %(b)s OR t.destination = %(b)s) AND t.status IN ('APPLIED', 'INFLIGHT', 'VOID')
"""
# Commits and voids of the given holds, whatever their sides (Blnk's (parent_transaction) index).
CHILDREN_SQL = f"""
SELECT {_COLUMNS} FROM blnk.transactions t
 WHERE t.parent_transaction = ANY(%(holds)s::text[]) AND t.status IN ('APPLIED', 'VOID')
"""
# Missing ids at or below the highest visible one, as ranges (an index-only scan of the primary key).
GAPS_SQL = """
SELECT lo, hi FROM (
    SELECT COALESCE(lag(id) OVER (ORDER BY id), 0) + 1 AS lo, id - 1 AS hi FROM blnk.transactions
) s WHERE hi >= lo
"""
# Every row recorded since the last look (id above it, or one of the ids missing then), by primary key.
PROBE_SQL = f"""
SELECT {_COLUMNS} FROM blnk.transactions t WHERE t.id > %(seen)s OR t.id = ANY(%(gaps)s::bigint[])
"""
BALANCE_SQL = "SELECT currency, ledger_id, created_at FROM blnk.balances WHERE balance_id = %(b)s"


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    id: int
    transaction_id: str | None  # kept for holds only (their commits and voids name it)
    source: str | None
    destination: str | None
    status: str
    parent: str | None
    amount: int
    effective: int  # microseconds since 1970


def _row(values) -> Row:
    id_, tid, source, destination, status, parent, amount, effective = values
    source = sys.intern(source) if source is not None else None  # a few balances, many rows each
    destination = sys.intern(destination) if destination is not None else None
    return Row(int(id_), tid if status == "INFLIGHT" else None, source, destination, sys.intern(status), parent,
               int(amount), micros(effective))


class _Series:
    """Signed amounts keyed by instant (µs): Σ of those with key <= T by binary search over running sums."""

    def __init__(self, items: list[tuple[int, int]]):
        items.sort()
        self.keys = [k for k, _ in items]
        self.sums = [0]
        for _, amount in items:
            self.sums.append(self.sums[-1] + amount)

    def upto(self, t: int) -> int:
        return self.sums[bisect.bisect_right(self.keys, t)]


@dataclasses.dataclass
class HotAmounts:
    facts: tuple  # currency, ledger_id, created_at
    credit: int
    debit: int
    held_in: int
    held_out: int
    legs: int


@dataclasses.dataclass(frozen=True)
class _View:
    """The sorted rows' running sums and arrays, plus the rows folded in since (scanned per answer)."""

    series: tuple[_Series, ...]  # credit, debit, held in, held out
    ids: np.ndarray  # the legs' ids, by effective time
    effective: np.ndarray  # their effective times (µs)
    recent: tuple[Row, ...] = ()
    recent_children: tuple[Row, ...] = ()


class TooBig(Exception):
    """The balance is not worth (or not safe) to keep: more legs or missing ids than allowed."""


class HotBalance:
    """The legs of one balance and of its holds' commits and voids, kept exact by primary-key probes.

    Loading and folding are serialized per balance by :class:`HotCache`; answers read the current
    :class:`_View` without a lock (a writer replaces it whole).
    """

    def __init__(self, balance_id: str):
        self.balance_id = balance_id
        self.legs: dict[int, Row] = {}  # rows with source or destination = balance_id
        self.children: dict[int, Row] = {}  # APPLIED/VOID rows whose parent is one of its INFLIGHT legs
        self.holds: dict[str, Row] = {}  # its INFLIGHT legs by transaction_id
        self.seen = 0
        self.gaps: list[int] = []
        self.facts: tuple = ()  # currency, ledger_id, created_at (never updated by Blnk)
        self._pending = 0  # rows folded in since the last build
        self._view: _View | None = None  # what answers read: replaced whole, never changed (no lock to read)

    # ----------------------------------------------------------------------------------- keeping up

    def load(self, conn: psycopg.Connection) -> None:
        """Everything in one REPEATABLE READ view (``conn`` in autocommit outside it)."""
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            facts = conn.execute(BALANCE_SQL, {"b": self.balance_id}).fetchone()
            if facts is None:
                raise TooBig("no such balance")
            self.facts = tuple(facts)
            rows = [_row(r) for r in conn.execute(LEGS_SQL, {"b": self.balance_id})]
            if len(rows) > MAX_LEGS:
                raise TooBig(f"{len(rows)} legs")
            top = conn.execute("SELECT COALESCE(max(id), 0) FROM blnk.transactions").fetchone()
            self.seen = int(top[0]) if top else 0
            gaps: list[int] = []
            for lo, hi in conn.execute(GAPS_SQL):
                if len(gaps) + (hi - lo + 1) > MAX_GAPS:
                    raise TooBig("too many missing journal ids")
                gaps.extend(range(int(lo), int(hi) + 1))
            self.gaps = gaps
            self._fold(conn, rows)

    def probe(self, conn: psycopg.Connection, lock: threading.Lock) -> None:
        """Fold in the rows recorded since the last look. The query runs outside ``lock`` (concurrent answers
        probe concurrently), the fold inside it: a probe made from an older (``seen``, ``gaps``) still covers
        everything the current ones leave open (``seen`` only grows, ``gaps`` at or below it only shrink),
        so its visible ids close those gaps and the ids it did not find above ``seen`` open new ones."""
        with lock:
            seen, gaps = self.seen, self.gaps  # (gaps is replaced on change, never mutated in place)
        found = conn.execute(PROBE_SQL, {"seen": seen, "gaps": gaps}).fetchall()
        if not found:
            return
        with lock:
            ids = {int(r[0]) for r in found}
            top = max(ids)
            missing = [g for g in self.gaps if g not in ids]
            missing.extend(i for i in range(self.seen + 1, top + 1) if i not in ids)
            if len(missing) > MAX_GAPS:
                raise TooBig("too many missing journal ids")
            self.seen, self.gaps = max(self.seen, top), missing
            b = self.balance_id
            self._fold(conn, [_row(r) for r in found if r[2] == b or r[3] == b or r[5] is not None])

    def _fold(self, conn: psycopg.Connection, rows: list[Row]) -> None:
        """Add rows (idempotent by id): the balance's legs, new holds (then their earlier children), children."""
        b = self.balance_id
        new_holds: list[str] = []
        new_legs: list[Row] = []
        new_children: list[Row] = []
        for row in rows:
            if (row.source == b or row.destination == b) and row.status in ("APPLIED", "INFLIGHT", "VOID") \
                    and row.id not in self.legs:
                self.legs[row.id] = row
                new_legs.append(row)
                if row.status == "INFLIGHT" and row.transaction_id is not None:
                    self.holds[row.transaction_id] = row
                    new_holds.append(row.transaction_id)
        candidates = [r for r in rows if r.parent is not None]
        if new_holds:  # commits/voids may have been recorded before their hold
            candidates += [_row(r) for r in conn.execute(CHILDREN_SQL, {"holds": new_holds})]
        for row in candidates:
            if row.parent in self.holds and row.status in ("APPLIED", "VOID") and row.id not in self.children:
                self.children[row.id] = row
                new_children.append(row)
        if len(self.legs) + len(self.children) > MAX_LEGS:
            raise TooBig("too many legs")
        self._pending += len(new_legs) + len(new_children)
        if self._view is None or self._pending > REBUILD_AFTER:
            self._build()
        elif new_legs or new_children:  # (a hold is in `holds` before any view holds one of its children)
            self._view = dataclasses.replace(self._view, recent=self._view.recent + tuple(new_legs),
                                             recent_children=self._view.recent_children + tuple(new_children))

    # ----------------------------------------------------------------------------------- answering

    def _build(self) -> None:
        b = self.balance_id
        credit, debit, held_in, held_out = [], [], [], []
        for row in self.legs.values():
            if row.status == "APPLIED":
                if row.destination == b:
                    credit.append((row.effective, row.amount))
                if row.source == b:
                    debit.append((row.effective, row.amount))
            elif row.status == "INFLIGHT":
                if row.destination == b:
                    held_in.append((row.effective, row.amount))
                if row.source == b:
                    held_out.append((row.effective, row.amount))
        for child in self.children.values():
            parent = self.holds[child.parent or ""]
            key = max(child.effective, parent.effective)  # released only once both are in S_T
            if parent.destination == b:
                held_in.append((key, -child.amount))
            if parent.source == b:
                held_out.append((key, -child.amount))
        ordered = sorted(self.legs.values(), key=lambda r: r.effective)
        self._view = _View(
            (_Series(credit), _Series(debit), _Series(held_in), _Series(held_out)),
            np.fromiter((r.id for r in ordered), dtype=np.int64, count=len(ordered)),
            np.fromiter((r.effective for r in ordered), dtype=np.int64, count=len(ordered)))
        self._pending = 0

    def amounts(self, at: dt.datetime, cutoff: dt.datetime | None, watermark: int) -> HotAmounts:
        """The four sums over effective time <= ``at``, and the legs of ``S_T \\ S_X`` for the anchor
        ``X`` = (``cutoff``, ``watermark``) (all legs <= ``at`` without one), as the replay counts them."""
        view = self._view
        assert view is not None  # (loaded)
        t = micros(at)
        values = [s.upto(t) for s in view.series]
        b = self.balance_id
        recent = view.recent
        for row in recent:
            if row.effective <= t:
                if row.status == "APPLIED":
                    values[0] += row.amount if row.destination == b else 0
                    values[1] += row.amount if row.source == b else 0
                elif row.status == "INFLIGHT":
                    values[2] += row.amount if row.destination == b else 0
                    values[3] += row.amount if row.source == b else 0
        for child in view.recent_children:
            parent = self.holds[child.parent or ""]
            if max(child.effective, parent.effective) <= t:
                values[2] -= child.amount if parent.destination == b else 0
                values[3] -= child.amount if parent.source == b else 0
        hi = int(np.searchsorted(view.effective, t, side="right"))
        if cutoff is None:
            legs = hi + sum(r.effective <= t for r in recent)
        else:
            c = micros(cutoff)
            lo = int(np.searchsorted(view.effective, c, side="left"))
            late = int(np.count_nonzero(view.ids[:lo] > watermark))
            legs = (hi - lo if hi > lo else 0) + late + sum(
                (c <= r.effective <= t) or (r.id > watermark and r.effective < c) for r in recent)
        return HotAmounts(self.facts, values[0], values[1], values[2], values[3], legs)


class HotCache:
    """The engine's hot balances (at most :data:`MAX_HOT_BALANCES`, least recently used out), thread-safe."""

    def __init__(self, max_balances: int = MAX_HOT_BALANCES, min_legs: int = HOT_REPLAY_LEGS):
        self.max_balances = max_balances
        self.min_legs = min_legs  # a replay counting this many legs ...
        self.after_replays = HOT_AFTER_REPLAYS  # ... this many times makes its balance hot
        self._heavy: collections.Counter[str] = collections.Counter()
        self._balances: collections.OrderedDict[str, tuple[threading.Lock, list[HotBalance | None]]] = \
            collections.OrderedDict()
        self._refused: set[str] = set()
        self._lock = threading.Lock()

    def __contains__(self, balance_id: str) -> bool:
        return balance_id in self._balances

    def _trim(self, keep: str) -> None:
        """Least recently used balances out until the kept rows fit :data:`MAX_TOTAL_LEGS` (``keep`` stays)."""
        with self._lock:
            sizes = {b: len(box[0].legs) + len(box[0].children) for b, (_, box) in self._balances.items() if box[0]}
            total = sum(sizes.values())
            for balance_id in list(self._balances):
                if total <= MAX_TOTAL_LEGS:
                    break
                if balance_id != keep and balance_id in sizes:
                    del self._balances[balance_id]
                    total -= sizes[balance_id]

    def get(self, balance_id: str) -> HotBalance | None:
        """The kept legs of ``balance_id`` (None: not kept, or still loading)."""
        entry = self._balances.get(balance_id)
        return entry[1][0] if entry else None

    def wants(self, balance_id: str, replayed_legs: int) -> bool:
        if self.max_balances <= 0 or replayed_legs < self.min_legs or balance_id in self._balances \
                or balance_id in self._refused:
            return False
        with self._lock:
            if len(self._heavy) > 100 * max(self.max_balances, 1):
                self._heavy.clear()  # (bounded: counts of balances that never became hot)
            self._heavy[balance_id] += 1
            return self._heavy[balance_id] >= self.after_replays

    def clear(self) -> None:
        with self._lock:
            self._balances.clear()
            self._refused.clear()

    def answer(self, conn: psycopg.Connection, balance_id: str, at: dt.datetime, cutoff: dt.datetime | None,
               watermark: int) -> HotAmounts | None:
        """The hot answer (after a probe), loading the balance when asked to; None when it is not kept."""
        with self._lock:
            entry = self._balances.get(balance_id)
            if entry is None:
                entry = (threading.Lock(), [None])
                self._balances[balance_id] = entry
                while len(self._balances) > self.max_balances:
                    self._balances.popitem(last=False)
            else:
                self._balances.move_to_end(balance_id)
        lock, box = entry
        try:
            with lock:  # the first answer loads it (the others wait for it)
                current = box[0]
                loaded_now = current is None
                if current is None:
                    current = HotBalance(balance_id)
                    current.load(conn)
                    box[0] = current
                    self._trim(balance_id)
            hot: HotBalance = current
            if not loaded_now:
                hot.probe(conn, lock)
        except (TooBig, psycopg.DataError):  # (DataError: a timestamp Python cannot hold, e.g. infinity)
            with self._lock:
                self._balances.pop(balance_id, None)
                self._refused.add(balance_id)
            return None
        except Exception:
            with self._lock:  # a failed load or fold leaves nothing half-folded behind
                self._balances.pop(balance_id, None)
            raise
        return hot.amounts(at, cutoff, watermark)  # reads one immutable view: no lock
