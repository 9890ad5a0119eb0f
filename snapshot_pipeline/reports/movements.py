"""``balance_movements``: what happened to every balance during day ``D``.

One row per balance in ``balance_snapshots`` ``D`` (every balance existing at the
cutoff ``C_D``), in ``balance_id`` order:

* ``closing_balance`` = the balance in snapshot ``D``;
* ``opening_balance`` = the balance in snapshot ``D-1`` (zero for a balance that
  snapshot does not hold);
* ``credits`` / ``debits`` = the change of ``credit_balance`` / ``debit_balance``
  between the two snapshots, so ``opening + credits - debits = closing`` holds
  exactly on every row;
* ``credit_legs`` / ``debit_legs`` / ``legs`` = how many APPLIED journal legs
  (a row credits its ``destination`` and debits its ``source``: two legs) the
  closing snapshot counts and the opening one does not. With ``S_D`` = {rows with
  ``id <= W_D`` and effective time ``< C_D``} (DESIGN §3), they are the legs in
  ``S_D \\ S_{D-1}``; for a balance absent from the opening snapshot, all its
  legs in ``S_D``. They include backdated rows recorded during the day and
  late rows the previous snapshot could not see: exactly the legs whose amounts
  make up ``credits`` and ``debits``.

The report verifies that last statement on every row (Σ of those legs' amounts
= the change between the snapshots) and fails, naming the balance, when it does
not hold: then one of the two snapshots is stale and must be re-materialized.

When snapshot ``D-1`` is not in the store (``D`` is the first partition, or it
was never materialized), the opening is computed from the journal instead: the
legs of ``S_D`` with effective time ``< C_{D-1}`` (the same watermark ``W_D``).

Streaming: both snapshot files are read batch by batch in their common
``balance_id`` order; only the balances touched by the day's legs are fetched
from the journal (one Arrow table).
"""

from __future__ import annotations

import datetime as dt
import time

import pyarrow as pa
import pyarrow.compute as pc

from snapshot_pipeline import calendar, db
from snapshot_pipeline.ledger.asof import WORK_MEM, ts
from snapshot_pipeline.reports.common import (
    ReportError,
    ReportResult,
    ReportWriter,
    SnapshotPartition,
    first_difference,
    narrow,
    wide,
    zeros,
)
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import align, parquet

REPORT = "balance_movements"
PARTITION_KEY = "snapshot_date"

SCHEMA = pa.schema(
    [
        pa.field("balance_id", pa.string(), nullable=False),
        pa.field("ledger_id", pa.string()),
        pa.field("currency", pa.string()),
        pa.field("opening_balance", parquet.AMOUNT, nullable=False),
        pa.field("credits", parquet.AMOUNT, nullable=False),
        pa.field("debits", parquet.AMOUNT, nullable=False),
        pa.field("closing_balance", parquet.AMOUNT, nullable=False),
        pa.field("credit_legs", pa.int64(), nullable=False),
        pa.field("debit_legs", pa.int64(), nullable=False),
        pa.field("legs", pa.int64(), nullable=False),
    ]
)

CLOSING_COLUMNS = ["balance_id", "ledger_id", "currency", "balance", "credit_balance", "debit_balance",
                   "balance_created_at"]
OPENING_COLUMNS = ["balance_id", "credit_balance", "debit_balance"]

# $1 = W_D, $2 = C_D, $3 = W_O and $4 = C_O of the opening set O (= S_{D-1}, or {id <= W_D, eff < C_{D-1}}
# when the opening comes from the journal).
# day_*: legs in S_D \ O (range scans on effective_date / created_at and the primary key).
# old_*: legs in S_D ∩ O of the balances the opening does not hold: balances created at or after C_O,
# probed one by one on the source/destination indexes; or, for a journal opening, of every balance.
_DAY_TX = """
    day_tx AS (
        SELECT t.source, t.destination, COALESCE(t.precise_amount, 0) AS amount
          FROM blnk.transactions t
         WHERE t.status = 'APPLIED' AND t.id <= $1
           AND ((t.effective_date >= $4::timestamp AND t.effective_date < $2::timestamp)
             OR (t.effective_date IS NULL AND t.created_at >= $4::timestamp AND t.created_at < $2::timestamp)
             OR (t.id > $3 AND COALESCE(t.effective_date, t.created_at) < $2::timestamp))
    )"""
_IN_O = "x.status = 'APPLIED' AND x.id <= LEAST($1, $3) AND COALESCE(x.effective_date, x.created_at) < $4::timestamp"
_OLD_NEW_BALANCES = f"""
    new_bal AS (SELECT balance_id FROM blnk.balances WHERE created_at >= $4::timestamp AND created_at < $2::timestamp),
    old_legs AS (
        SELECT nb.balance_id, l.side, l.amount
          FROM new_bal nb CROSS JOIN LATERAL (
              SELECT 'c' AS side, COALESCE(x.precise_amount, 0) AS amount FROM blnk.transactions x
               WHERE x.destination = nb.balance_id AND {_IN_O}
              UNION ALL
              SELECT 'd', COALESCE(x.precise_amount, 0) FROM blnk.transactions x
               WHERE x.source = nb.balance_id AND {_IN_O}
              OFFSET 0
          ) AS l
    )"""
_OLD_ALL_BALANCES = f"""
    old_tx AS (SELECT x.source, x.destination, COALESCE(x.precise_amount, 0) AS amount
                 FROM blnk.transactions x WHERE {_IN_O}),
    old_legs AS (
        SELECT destination AS balance_id, 'c' AS side, amount FROM old_tx
        UNION ALL SELECT source, 'd', amount FROM old_tx
    )"""
_LEGS_SELECT = """
SELECT balance_id,
       sum(day_cl)::bigint AS day_credit_legs, sum(day_dl)::bigint AS day_debit_legs,
       sum(day_c)::text AS day_credit, sum(day_d)::text AS day_debit,
       sum(old_cl)::bigint AS old_credit_legs, sum(old_dl)::bigint AS old_debit_legs,
       sum(old_c)::text AS old_credit, sum(old_d)::text AS old_debit
FROM (
    SELECT destination, 1, 0, amount, 0, 0, 0, 0, 0 FROM day_tx
    UNION ALL SELECT source, 0, 1, 0, amount, 0, 0, 0, 0 FROM day_tx
    UNION ALL SELECT balance_id, 0, 0, 0, 0,
                     CASE WHEN side = 'c' THEN 1 ELSE 0 END, CASE WHEN side = 'd' THEN 1 ELSE 0 END,
                     CASE WHEN side = 'c' THEN amount ELSE 0 END, CASE WHEN side = 'd' THEN amount ELSE 0 END
                FROM old_legs
) AS legs(balance_id, day_cl, day_dl, day_c, day_d, old_cl, old_dl, old_c, old_d)
GROUP BY balance_id
"""


def legs_sql(journal_opening: bool) -> str:
    """Per balance: leg counts and sums of ``S_D \\ O`` (day) and ``S_D ∩ O`` (old; see above)."""
    old = _OLD_ALL_BALANCES if journal_opening else _OLD_NEW_BALANCES
    return f"WITH {_DAY_TX},{old}{_LEGS_SELECT}"


_LEG_COUNTS = ("day_credit_legs", "day_debit_legs", "old_credit_legs", "old_debit_legs")
_LEG_AMOUNTS = ("day_credit", "day_debit", "old_credit", "old_debit")


def fetch_legs(settings: Settings, closing: SnapshotPartition, opening_watermark: int,
               opening_cutoff: dt.datetime, journal_opening: bool) -> pa.Table:
    """Per balance touched: leg counts and amounts of ``S_D \\ O`` and (new balances) ``S_D ∩ O``."""
    conn = db.connect_arrow(db.ledger_url(settings))
    try:
        cur = conn.cursor()
        cur.execute("BEGIN")
        cur.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")  # hash aggregation in memory, for this query only
        cur.execute(legs_sql(journal_opening),
                    parameters=(closing.watermark, ts(closing.cutoff), opening_watermark, ts(opening_cutoff)))
        table = cur.fetch_arrow_table()
        cur.execute("COMMIT")
        cur.close()
    finally:
        conn.close()
    columns = {"balance_id": table["balance_id"]}
    for name in _LEG_COUNTS:
        columns[name] = pc.cast(table[name], pa.int64())
    for name in _LEG_AMOUNTS:
        columns[name] = wide(table[name])
    return pa.table(columns)


def _lookup(legs: pa.Table, ids: pa.Array) -> dict[str, pa.Array]:
    """The legs columns aligned with ``ids`` (zero for balances with no legs)."""
    positions = pc.index_in(ids, value_set=legs["balance_id"])
    taken = legs.take(positions)
    out = {}
    for name in _LEG_COUNTS:
        out[name] = pc.fill_null(taken[name].combine_chunks(), 0)
    for name in _LEG_AMOUNTS:
        out[name] = pc.fill_null(taken[name].combine_chunks(), pa.scalar(0, taken[name].type))
    return out


def movements_page(page: pa.Table, legs: pa.Table, opening_page: pa.Table | None, journal_opening: bool,
                   names: tuple[dt.date, dt.date]) -> pa.Table:
    """One batch of snapshot ``D`` rows (and the opening rows of the same key range) -> movement rows."""
    n = page.num_rows
    ids = page["balance_id"].combine_chunks()
    found = _lookup(legs, ids)
    if journal_opening:  # the opening summed from the journal: the old legs of every balance
        held = pa.repeat(pa.scalar(True), n)
        open_credit, open_debit = found["old_credit"], found["old_debit"]
    else:
        opening_ids = (opening_page["balance_id"].combine_chunks() if opening_page is not None
                       else pa.array([], pa.string()))
        if len(opening_ids) and not pc.all(pc.is_in(opening_ids, value_set=ids)).as_py():
            raise _stale(names, "the opening snapshot holds balances the closing one does not")
        positions = pc.index_in(ids, value_set=opening_ids)
        held = pc.is_valid(positions)  # balances the opening holds
        if opening_page is not None and len(opening_ids):
            open_credit = pc.fill_null(pc.take(wide(opening_page["credit_balance"]), positions), zeros(1)[0])
            open_debit = pc.fill_null(pc.take(wide(opening_page["debit_balance"]), positions), zeros(1)[0])
        else:
            open_credit = open_debit = zeros(n)
    new = pc.invert(held)
    credits = pc.subtract(wide(page["credit_balance"]), open_credit)
    debits = pc.subtract(wide(page["debit_balance"]), open_debit)
    leg_credits = pc.add(found["day_credit"], pc.if_else(new, found["old_credit"], zeros(n)))
    leg_debits = pc.add(found["day_debit"], pc.if_else(new, found["old_debit"], zeros(n)))
    bad = first_difference(pc.or_(pc.not_equal(credits, leg_credits), pc.not_equal(debits, leg_debits)), ids)
    if bad is not None:
        raise _stale(names, f"balance {bad!r}: the change between the snapshots is not the sum of the journal"
                            " legs between them")
    credit_legs = pc.add(found["day_credit_legs"], pc.if_else(new, found["old_credit_legs"], 0))
    debit_legs = pc.add(found["day_debit_legs"], pc.if_else(new, found["old_debit_legs"], 0))
    table = pa.table(
        {
            "balance_id": ids,
            "ledger_id": page["ledger_id"],
            "currency": page["currency"],
            "opening_balance": narrow(pc.subtract(open_credit, open_debit), ids, "opening_balance"),
            "credits": narrow(credits, ids, "credits"),
            "debits": narrow(debits, ids, "debits"),
            "closing_balance": page["balance"],
            "credit_legs": credit_legs,
            "debit_legs": debit_legs,
            "legs": pc.add(credit_legs, debit_legs),
        },
        schema=SCHEMA,
    )
    return table, pc.sum(new).as_py() or 0


def _stale(names: tuple[dt.date, dt.date], why: str) -> ReportError:
    previous, date = names
    return ReportError(
        f"balance_movements {date}: snapshots {previous} and {date} are not consistent ({why}); one of them"
        " is stale: re-materialize balance_snapshots for both days"
    )


def balance_movements(settings: Settings, date: dt.date) -> ReportResult:
    """Compute and publish ``balance_movements`` for day ``date``."""
    started = time.monotonic()
    closing = SnapshotPartition.load(settings, date, f"balance_movements {date}")
    previous = date - dt.timedelta(days=1)
    opening = SnapshotPartition.find(settings, previous)
    opening_cutoff = calendar.cutoff(previous, settings.timezone)
    if opening is not None:
        legs = fetch_legs(settings, closing, opening.watermark, opening_cutoff, journal_opening=False)
        source = f"balance_snapshots {previous}"
    else:
        legs = fetch_legs(settings, closing, closing.watermark, opening_cutoff, journal_opening=True)
        source = "journal"
    moved = total_legs = new_balances = 0
    with ReportWriter(settings, REPORT, PARTITION_KEY, date.isoformat(), SCHEMA, date,
                      {"opening": source, "closing": f"balance_snapshots {date}"}) as writer:
        opening_stream = align.SortedStream(opening.batches(OPENING_COLUMNS) if opening is not None else iter([]))
        closing_stream = align.SortedStream(closing.batches(CLOSING_COLUMNS))
        for opening_page, page in align.aligned(opening_stream, closing_stream):
            if page is None or page.num_rows == 0:
                if opening_page is not None and opening_page.num_rows:
                    raise _stale((previous, date), "the opening snapshot holds balances the closing one does not")
                continue
            rows, entering = movements_page(page, legs, opening_page, opening is None, (previous, date))
            writer.write(rows)
            zero = pa.scalar(0, parquet.AMOUNT)
            changed = pc.or_(pc.greater(rows["legs"], 0),
                             pc.or_(pc.not_equal(rows["credits"], zero), pc.not_equal(rows["debits"], zero)))
            moved += pc.sum(changed).as_py() or 0
            total_legs += pc.sum(rows["legs"]).as_py() or 0
            new_balances += entering
        writer.publish()
    return writer.result(
        date.isoformat(), started,
        metrics={"opening_source": source, "balances_moved": moved, "legs": total_legs,
                 "new_balances": new_balances},
    )
