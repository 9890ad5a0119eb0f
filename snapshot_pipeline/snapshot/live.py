"""Live drift: a snapshot plus the legs it does not include, against the live ``blnk.balances`` rows.

:func:`compare` is the one definition of drift, used by the ``live_balances_match`` check and by the
reconciliation report (:mod:`snapshot_pipeline.reports.reconciliation`, over every live balance).

For a partition ``D`` and its changed balances, the legs it does not include are ``S_now \\ S_D``:
:func:`later_and_live` stages ``D``'s step to the end of time with the core's own key-only step
(:func:`snapshot_pipeline.ledger.journal.stage_step`: the rows recorded since ``D``'s re-read point, its
pending and gap rows, by primary key) and reads the live rows in the same consistent view, so a
transaction committing meanwhile cannot show up as drift. Two callers:

* the snapshot run itself (:class:`InRunComparison`), in the REPEATABLE READ view it computed ``D`` in, with
  the changed balances' values as it merges them and their live amounts from the probe that read their
  attributes: no second read of the index rows or of ``blnk.balances`` (the state is staged again, by a
  second session, for the later legs); the run records the outcome with its materialization and the check
  reports it;
* the check alone (:func:`snapshot_pipeline.quality.drift.live_drift`), in a new view, when no run
  recorded an outcome for the partition's current generation (re-run from the UI, a later day, the CLI).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import functools
import threading
import time
from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from snapshot_pipeline import amounts, db
from snapshot_pipeline.ledger import asof, journal, sessions
from snapshot_pipeline.snapshot import merge
from snapshot_pipeline.store import parquet

AMOUNTS = parquet.AMOUNT_COLUMNS
# The columns a snapshot and the later legs add up; balance and inflight_balance follow from them.
SUMMED = merge.SUMMED
END_OF_TIME = dt.datetime(9999, 12, 31)  # the cutoff of "everything the journal holds now"
RECORDED_IDS = 100  # drifting balance ids an outcome keeps
# The in-run comparison compares changed rows this many at a time (their ids and amounts, and the live
# amounts of the delta rows up to them, are held meanwhile: about 20 MB).
COMPARED_ROWS = 65_536
# How long the run waits for the later legs' session to join its view before it leaves the comparison to the check.
JOIN_TIMEOUT_SECONDS = 60


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Live amounts against snapshot + later legs, row by row (wide decimals, by column name)."""

    live: dict[str, pa.Array]
    expected: dict[str, pa.Array]
    differs: dict[str, pa.Array]  # per amount column: live != expected
    drifting: pa.Array  # per row: any of the six differs

    def balance_drift(self) -> pa.Array:
        """live − expected ``balance``, per row."""
        return pc.subtract(self.live["balance"], self.expected["balance"])


def compare(snapshot: Mapping[str, pa.Array], later: Mapping[str, pa.Array],
            live: Mapping[str, pa.Array]) -> Comparison:
    """The one definition of live drift.

    ``snapshot`` and ``later`` hold the :data:`SUMMED` columns (the snapshot's values, zero where it has no
    row, and the sums of the legs it does not include), ``live`` the six :data:`AMOUNTS` of the live rows,
    all wide (:data:`snapshot_pipeline.amounts.WIDE`) and aligned by row. Expected = snapshot + later for
    the summed columns, ``balance = credit − debit`` and ``inflight_balance = inflight_credit −
    inflight_debit``; a row drifts when any of its six live amounts differs from the expected one (a NULL
    live amount differs from every value).
    """
    expected = {name: pc.add(snapshot[name], later[name]) for name in SUMMED}
    expected["balance"] = pc.subtract(expected["credit_balance"], expected["debit_balance"])
    expected["inflight_balance"] = pc.subtract(expected["inflight_credit_balance"], expected["inflight_debit_balance"])
    live = {name: live[name] for name in AMOUNTS}
    differs = {name: pc.fill_null(pc.not_equal(live[name], expected[name]), True) for name in AMOUNTS}
    return Comparison(live, expected, differs, functools.reduce(pc.or_, differs.values()))


@dataclasses.dataclass(frozen=True)
class LiveDrift:
    """The outcome of one comparison: how many balances were compared, which drift, and by how much."""

    balances_compared: int
    drifting_balances: int
    total_absolute_balance_drift: int
    drifting_balance_ids: list[str]  # sorted, the first RECORDED_IDS
    compared_at: str  # when the view compared in was read (ISO, UTC)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, value: Mapping) -> LiveDrift:
        return cls(**{field.name: value[field.name] for field in dataclasses.fields(cls)})


# For the balances in the temp table drift_ids, two statements, so that neither sorts or scans more than it must:
# their live rows, one probe per balance by the unique balance_id index, the ids sorted in byte order first so
# that the probes walk the index in key order and the rows come out in that order (no sort after the probes;
# a join here let the planner read every row of blnk.balances instead); and the sums of the staged legs on
# them (S_now \ S_D), a few rows, aligned with the first in Arrow.
_LIVE_SQL = """
SELECT i.balance_id, b.balance_id IS NOT NULL AS known, b.balance::text AS balance,
       b.credit_balance::text AS credit_balance, b.debit_balance::text AS debit_balance,
       b.inflight_balance::text AS inflight_balance, b.inflight_credit_balance::text AS inflight_credit_balance,
       b.inflight_debit_balance::text AS inflight_debit_balance
  FROM (SELECT balance_id FROM drift_ids ORDER BY balance_id COLLATE "C") AS i
  LEFT JOIN LATERAL (
    SELECT x.balance_id, x.balance, x.credit_balance, x.debit_balance, x.inflight_balance,
           x.inflight_credit_balance, x.inflight_debit_balance
      FROM blnk.balances x WHERE x.balance_id = i.balance_id OFFSET 0
  ) AS b ON true
 ORDER BY i.balance_id COLLATE "C" """


def _later_sums_sql(balances: str) -> str:
    """The staged legs (S_now \\ S_D) summed per balance, as text, for the balances ``balances`` selects."""
    return f"""
WITH legs (balance_id, currency, kind, amount) AS ({journal.LEGS_SQL}
)
SELECT balance_id, credit::text AS credit, debit::text AS debit, inflight_credit::text AS inflight_credit,
       inflight_debit::text AS inflight_debit
  FROM (SELECT balance_id,{journal.LEG_SUMS}
          FROM legs WHERE kind IS NOT NULL AND {balances}
         GROUP BY balance_id) AS later"""


_LATER_SQL = _later_sums_sql("balance_id IN (SELECT balance_id FROM drift_ids)")
# every balance the staged legs touch: the run filters them by its changed balances in Arrow
_ALL_LATER_SQL = _later_sums_sql("true")


def widened(table: pa.Table, names) -> pa.Table:
    """``balance_id`` and the named amount columns as exact wide decimals."""
    ids = table["balance_id"]
    return pa.table({"balance_id": ids, **{name: amounts.widen(table[name], ids, name) for name in names}})


def later_and_live(cur, origin: journal.Origin, ids: pa.Array) -> tuple[pa.Table, pa.Table]:
    """Inside an open REPEATABLE READ view: the live rows of the balances ``ids`` and the legs of
    ``S_now \\ S_D`` on them, summed per balance (``D``'s step to the end of time from ``origin``, staged by
    key only; zero where a balance has none), both in ``balance_id`` byte order."""
    journal.stage_step(cur, END_OF_TIME, origin)
    cur.execute("DROP TABLE IF EXISTS drift_ids")
    cur.adbc_ingest("drift_ids", pa.table({"balance_id": ids}), mode="create", temporary=True)
    cur.execute("ANALYZE drift_ids")
    cur.execute(_LIVE_SQL)
    live = cur.fetch_arrow_table()
    cur.execute(_LATER_SQL)
    sums = cur.fetch_arrow_table()
    return _aligned_sums(live["balance_id"], sums), live


def _aligned_sums(ids: pa.Array | pa.ChunkedArray, sums: pa.Table) -> pa.Table:
    """The per-balance ``sums`` (``balance_id`` and the delta's four sums as text, some balances) as the
    :data:`SUMMED` columns, wide, one row per id of ``ids`` in its order: zero where a balance has none."""
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    at = pc.index_in(ids, value_set=sums["balance_id"].combine_chunks())
    zero = amounts.zeros(len(ids))
    return pa.table({"balance_id": ids, **{
        field: pc.fill_null(pc.take(amounts.widen(sums[name], sums["balance_id"], field), at), zero)
        for name, field in merge.DELTA_TO_FIELD.items()}})


def _aligned(snap: pa.Table, later: pa.Table, live: pa.Table) -> pa.Table:
    """The three tables side by side by ``balance_id``: as they are when all three list the same ids in the
    same order (``snap`` sorted in byte order, as a merge writes and the index is read; the SQL sorts so
    too), else joined."""
    ids = snap["balance_id"]
    if later["balance_id"].equals(ids) and live["balance_id"].equals(ids):
        columns = {name: snap[name] for name in snap.column_names}
        columns |= {f"{name}_later": later[name] for name in SUMMED}
        columns |= {(f"{name}_live" if name in SUMMED else name): live[name] for name in live.column_names
                    if name != "balance_id"}
        return pa.table(columns)
    return snap.join(later, "balance_id", join_type="left outer", right_suffix="_later") \
        .join(live, "balance_id", join_type="left outer", right_suffix="_live")


def drift_of(snap: pa.Table, later: pa.Table, live: pa.Table, compared_at: dt.datetime) -> LiveDrift:
    """The drift of the balances of ``snap`` (``balance_id`` and the :data:`SUMMED` amounts, wide): a snapshot
    row with no live row drifts too; the total is Σ |balance drift| of the drifting rows."""
    joined = _aligned(snap, later, live)
    missing = pc.invert(pc.fill_null(joined["known"], False))
    drifting = joined.filter(missing)["balance_id"].to_pylist()
    present = joined.filter(pc.invert(missing))
    total = 0
    if present.num_rows:
        ids = present["balance_id"]
        zero = amounts.zeros(present.num_rows)
        base = {name: present[name].combine_chunks() for name in SUMMED}
        after = {name: pc.fill_null(present[f"{name}_later"], zero).combine_chunks() for name in SUMMED}
        now = {name: amounts.widen(present[name if name not in SUMMED else f"{name}_live"], ids, name)
               for name in AMOUNTS}
        found = compare(base, after, now)
        drifting += pc.filter(ids, found.drifting).to_pylist()
        total = int(pc.sum(pc.abs(pc.filter(found.balance_drift(), found.drifting))).as_py() or 0)
    drifting.sort()
    return LiveDrift(snap.num_rows, len(drifting), total, drifting[:RECORDED_IDS],
                     compared_at.replace(tzinfo=dt.UTC).isoformat())


class InRunComparison:
    """The run's own live-drift comparison, made as its merge goes, in the view it computed the partition in.

    The delta the run reads carries each balance's live amounts from the probe that reads its attributes
    (:func:`snapshot_pipeline.ledger.journal.delta_sql` with ``live_amounts``): no second read of
    ``blnk.balances``. :meth:`delta` passes the delta's batches on to the merge and keeps their live amounts
    until the merge writes the changed rows they belong to (:meth:`write`: both come in key order, so only the
    rows since the last comparison are held); each changed row's live amounts minus its merged ones are kept
    only where they differ, beside the changed ids. The legs the partition does not include are then staged
    by a second session in the same view while the run commits (:meth:`stage_later`); :meth:`finish`
    compares: a balance drifts when live − merged differs from its later legs (:func:`compare` with a zero
    snapshot, the same definition as snapshot + later = live, without the merged values held).

    Memory follows the day's changes: about 40 bytes per changed balance (its id), about 240 more per
    changed balance whose live amounts differ from the merged ones (legs recorded since the cutoff: few
    when the run follows the cutoff, most of the day's balances when the latest day is run again late), and
    the later legs' sums of every balance touched since the cutoff."""

    def __init__(self, spool, read_at: dt.datetime) -> None:
        self.spool = spool
        self.read_at = read_at  # when the run's view was read (the comparison's time)
        self.error: Exception | None = None  # why the comparison cannot be made (the merge goes on without it)
        self._waiting: list[pa.Table] = []  # the delta's live amounts not yet matched with a changed row
        self._written: list[pa.Table] = []  # changed rows written, not yet compared
        self._written_rows = 0
        self._ids: list[pa.Array] = []  # every changed balance
        self._differing: list[pa.Table] = []  # changed balances whose live amounts differ from the merged ones
        self._later: concurrent.futures.Future | None = None  # the later legs' sums (stage_later)

    def delta(self, batches):
        """The delta's batches without their live amounts, which are kept until their rows are written."""
        live_names = [journal.LIVE_PREFIX + name for name in AMOUNTS]
        for batch in batches:
            if self.error is None:
                self._waiting.append(pa.Table.from_batches([batch.select(["balance_id", "known", *live_names])]))
            yield batch.select([name for name in batch.schema.names if name not in live_names])

    def write(self, table: pa.Table) -> None:
        self.spool.write(table)
        if not table.num_rows or self.error is not None:
            return
        self._written.append(table.select(["balance_id", *AMOUNTS]))
        self._written_rows += table.num_rows
        if self._written_rows >= COMPARED_ROWS:
            self._compare_written()

    def _compare_written(self) -> None:
        """Compare the changed rows written since the last time, in one go (a merge writes a few hundred rows
        at a time: comparing them one write at a time cost 0.64 s at 1M balances, in one go 0.1 s)."""
        if not self._written or self.error is not None:
            return
        table, self._written, self._written_rows = pa.concat_tables(self._written), [], 0
        try:
            self._compare(table)
        except Exception as exc:  # noqa: BLE001 - reported by finish(); the partition is computed without it
            self.error, self._waiting, self._differing = exc, [], []

    def _compare(self, table: pa.Table) -> None:
        ids = table["balance_id"].combine_chunks()
        waiting = pa.concat_tables(self._waiting)
        waiting_ids = waiting["balance_id"].combine_chunks()
        positions = pc.index_in(ids, value_set=waiting_ids)
        if positions.null_count:
            raise RuntimeError("a changed balance's live amounts were not in the delta read before it")
        found = waiting.take(positions)
        last = pc.max(ids)  # rows up to the last written one are done with (both come in key order)
        self._waiting = [waiting.filter(pc.greater(waiting_ids, last))]
        self._ids.append(ids)
        self._keep_differing(ids, table, found)

    def _keep_differing(self, ids: pa.Array, merged: pa.Table, found: pa.Table) -> None:
        known = pc.fill_null(found["known"], False).combine_chunks()
        differ = {name: pc.subtract(amounts.widen(found[journal.LIVE_PREFIX + name], ids, name),
                                    amounts.widen(merged[name])) for name in AMOUNTS}
        nonzero = functools.reduce(pc.or_, (pc.fill_null(pc.not_equal(value, pa.scalar(0, amounts.WIDE)), True)
                                            for value in differ.values()))  # a NULL live amount is kept too
        keep = pc.or_(pc.invert(known), nonzero)
        if pc.any(keep).as_py():
            self._differing.append(pa.table({"balance_id": ids, "known": known, **differ}).filter(keep))

    def stage_later(self, cur, ledger_url: str, origin: journal.Origin) -> None:
        """Inside the run's open view, after the merge: stage the legs the partition does not include (``D``'s
        step to the end of time from ``origin``, the one after the run's, by key only) and sum them per balance,
        in a second session joined to the same view (:func:`snapshot_pipeline.ledger.sessions.join_view`), on a
        thread of its own. Returns once that session has joined: the run's own view may then end, and the
        staging goes on while the run commits (its PostgreSQL work beside the index rows' COPY; 1M balances:
        the 0.8 s the run waited for it before)."""
        if self.error is not None:  # the comparison cannot be made: nothing to stage
            return
        try:
            snapshot_id = sessions.export_snapshot(cur)
        except Exception as exc:  # noqa: BLE001 - reported by finish(); the run goes on without the comparison
            self.error = exc
            asof.rollback_quietly(cur)  # the run's reads are done: its view may end here
            return
        joined = threading.Event()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="later-legs")
        self._later = pool.submit(_later_sums, ledger_url, snapshot_id, origin, joined)
        pool.shutdown(wait=False)  # the thread ends with its one task (not waited for here, unlike `with`)
        if not joined.wait(JOIN_TIMEOUT_SECONDS):  # once the run's view ends, a late join fails on its own
            self.error = TimeoutError(f"the later legs' session did not join the run's view in"
                                      f" {JOIN_TIMEOUT_SECONDS} s")

    def finish(self) -> LiveDrift:
        """The later legs' sums on the changed balances (waited for), and the comparison. Raises what kept the
        comparison from being made."""
        self._compare_written()
        if self.error is not None:  # not waited for: a session that did not join may never end
            raise self.error
        sums = self._later.result() if self._later is not None else None
        if sums is None:
            raise RuntimeError("the later legs were not staged")
        changed = pa.chunked_array(self._ids, pa.string())
        sums = sums.filter(pc.is_in(sums["balance_id"], value_set=changed.combine_chunks()))
        differing = pa.concat_tables(self._differing) if self._differing else None
        return _drift_from_differences(len(changed), differing, sums, self.read_at)

    def outcome(self, log, snapshot_date: dt.date, phases: dict) -> dict | None:
        """:meth:`finish` as the run reports it: a warning, never the run's failure. When the comparison cannot
        be made (a live row beyond the widest amount, say), the run says why and the check compares on its
        own; ``phases['live_drift_ms']`` is the time waited for the later legs and spent comparing."""
        mark = time.monotonic()
        try:
            found = self.finish()
        except Exception as exc:  # noqa: BLE001 - the comparison is a WARN check, the partition is computed
            log(f"operation=balance_snapshot snapshot_date={snapshot_date} live_drift=not_compared"
                f" error={type(exc).__name__}: {exc}")
            return None
        phases["live_drift_ms"] = int((time.monotonic() - mark) * 1000)
        return found.as_dict()

    def wait(self) -> None:
        """Let the later legs' session end (a run that fails after :meth:`stage_later` waits for it, so that no
        session outlives the run)."""
        if self._later is not None:
            concurrent.futures.wait([self._later])


def _later_sums(ledger_url: str, snapshot_id: str, origin: journal.Origin, joined: threading.Event) -> pa.Table:
    """In a new session joined to the exported view (``joined`` is set once it has, or has failed to): the step
    from ``origin`` to the end of time staged, and its legs summed per balance (:data:`_ALL_LATER_SQL`)."""
    try:
        conn = db.connect_arrow(ledger_url)
        try:
            cur = conn.cursor()
            try:
                sessions.join_view(cur, snapshot_id)
                joined.set()
                journal.stage_step(cur, END_OF_TIME, origin)
                cur.execute(_ALL_LATER_SQL)
                return cur.fetch_arrow_table()
            finally:
                asof.rollback_quietly(cur)
                cur.close()
        finally:
            conn.close()
    finally:
        joined.set()  # also when it failed: the run does not wait for a join that will not come


def _drift_from_differences(compared: int, differing: pa.Table | None, sums: pa.Table,
                            compared_at: dt.datetime) -> LiveDrift:
    """The drift of ``compared`` changed balances from the ones whose live amounts differ from the merged ones
    (``differing``: ``balance_id``, ``known`` and live − merged per amount, wide) and the later legs' sums on
    them (``sums``: text, as :data:`_ALL_LATER_SQL` gives them): a balance drifts when it has no live row or
    when its differences are not exactly its later legs."""
    ids = pa.concat_arrays([*([differing["balance_id"].combine_chunks()] if differing is not None else []),
                            sums["balance_id"].combine_chunks()])
    ids = pc.unique(ids)
    ids = pc.take(ids, pc.sort_indices(ids))  # byte order
    zero = amounts.zeros(len(ids))
    later = _aligned_sums(ids, sums)
    if differing is not None:
        at = pc.index_in(ids, value_set=differing["balance_id"].combine_chunks())
        listed = pc.is_valid(at)  # zero differences where a balance is not listed; a listed NULL stays NULL
        known = pc.fill_null(pc.take(differing["known"].combine_chunks(), at), True)
        differ = {name: pc.if_else(listed, pc.take(differing[name].combine_chunks(), at), zero) for name in AMOUNTS}
    else:
        known = pa.repeat(pa.scalar(True), len(ids))
        differ = {name: zero for name in AMOUNTS}
    found = compare({name: zero for name in SUMMED}, {name: later[name] for name in SUMMED}, differ)
    drifting = pc.or_(pc.invert(known), pc.fill_null(found.drifting, True))
    present = pc.and_(drifting, known)
    total = int(pc.sum(pc.abs(pc.filter(found.balance_drift(), present))).as_py() or 0)
    drifting_ids = pc.filter(ids, drifting).to_pylist()
    return LiveDrift(compared, len(drifting_ids), total, drifting_ids[:RECORDED_IDS],
                     compared_at.replace(tzinfo=dt.UTC).isoformat())
