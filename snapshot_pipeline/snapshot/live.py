"""Live drift: a snapshot plus the legs it does not include, against the live ``blnk.balances`` rows.

:func:`compare` is the one definition of drift, used by the ``live_balances_match`` check and by the
reconciliation report (:mod:`snapshot_pipeline.reports.reconciliation`, over every live balance).

For a partition ``D`` and its changed balances, the legs it does not include are ``S_now \\ S_D``:
:func:`later_and_live` stages ``D``'s step to the end of time with the core's own key-only step
(:func:`snapshot_pipeline.ledger.journal.stage_step`: the rows recorded since ``D``'s re-read point, its
pending and gap rows, by primary key) and reads the live rows in the same consistent view, so a
transaction committing meanwhile cannot show up as drift. Two callers:

* the snapshot run itself (:func:`in_view`), in the REPEATABLE READ view it computed ``D`` in, with the
  changed balances' values it has just merged: no second read of the index, of the state or of a view;
  the run records the outcome with its materialization and the check reports it;
* the check alone (:func:`snapshot_pipeline.quality.drift.live_drift`), in a new view, when no run
  recorded an outcome for the partition's current generation (re-run from the UI, a later day, the CLI).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from snapshot_pipeline import amounts
from snapshot_pipeline.ledger import journal
from snapshot_pipeline.snapshot import merge
from snapshot_pipeline.store import parquet

AMOUNTS = parquet.AMOUNT_COLUMNS
# The columns a snapshot and the later legs add up; balance and inflight_balance follow from them.
SUMMED = merge.SUMMED
END_OF_TIME = dt.datetime(9999, 12, 31)  # the cutoff of "everything the journal holds now"
RECORDED_IDS = 100  # drifting balance ids an outcome keeps
# The most changed balances a run compares in its own view (their ids and amounts are held beside the merge,
# about 1 KB each while compared); a day with more leaves the comparison to the check, after the publish.
IN_RUN_MAX_ROWS = 250_000


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
    inflight_debit``; a row drifts when any of its six live amounts differs from the expected one.
    """
    expected = {name: pc.add(snapshot[name], later[name]) for name in SUMMED}
    expected["balance"] = pc.subtract(expected["credit_balance"], expected["debit_balance"])
    expected["inflight_balance"] = pc.subtract(expected["inflight_credit_balance"], expected["inflight_debit_balance"])
    live = {name: live[name] for name in AMOUNTS}
    differs = {name: pc.not_equal(live[name], expected[name]) for name in AMOUNTS}
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
_LATER_SQL = f"""
WITH legs (balance_id, currency, kind, amount) AS ({journal.LEGS_SQL}
)
SELECT balance_id, credit::text AS credit, debit::text AS debit, inflight_credit::text AS inflight_credit,
       inflight_debit::text AS inflight_debit
  FROM (SELECT balance_id,{journal.LEG_SUMS}
          FROM legs WHERE kind IS NOT NULL AND balance_id IN (SELECT balance_id FROM drift_ids)
         GROUP BY balance_id) AS later"""


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


def _aligned_sums(ids: pa.ChunkedArray, sums: pa.Table) -> pa.Table:
    """The per-balance ``sums`` (``balance_id`` and the delta's four sums as text, some balances) as the
    :data:`SUMMED` columns, wide, one row per id of ``ids`` in its order: zero where a balance has none."""
    ids = ids.combine_chunks()
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


def in_view(cur, step: journal.Step, cutoff: dt.datetime, changed: pa.Table) -> LiveDrift:
    """In the run's own view, after its delta is read: the partition's ``changed`` balances (``balance_id``
    and the :data:`SUMMED` amounts as merged) plus the legs it does not include, against their live rows."""
    journal.drop_step(cur)
    later, live = later_and_live(cur, step.next_origin(cutoff), changed["balance_id"])
    return drift_of(widened(changed.sort_by("balance_id"), SUMMED), later, live, step.view.read_at)


class ChangedAmounts:
    """Where a merge puts its changed balances when the run compares them with the live rows: the index
    spool, and beside it their ``balance_id`` and :data:`SUMMED` amounts (a few columns, Arrow only)."""

    def __init__(self, spool, max_rows: int | None = None) -> None:
        self.spool = spool
        self.max_rows = IN_RUN_MAX_ROWS if max_rows is None else max_rows
        self.overflowed = False  # more than max_rows changed: nothing kept (the check compares them)
        self._parts: list[pa.Table] = []
        self._rows = 0

    def write(self, table: pa.Table) -> None:
        self.spool.write(table)
        if not table.num_rows or self.overflowed:
            return
        self._rows += table.num_rows
        if self._rows > self.max_rows:
            self.overflowed, self._parts = True, []
            return
        self._parts.append(table.select(["balance_id", *SUMMED]))

    def table(self) -> pa.Table:
        if not self._parts:
            return pa.table({"balance_id": pa.array([], pa.string()),
                             **{name: pa.array([], parquet.AMOUNT) for name in SUMMED}})
        return pa.concat_tables(self._parts)
