"""The journal delta of one roll-forward step, read under one consistent view (DESIGN §3, roll-forward).

Snapshot(D) is the previous published partition P rolled forward by the legs in
``S_D \\ S_P``. Reading them never scans the journal by effective time (no Blnk
index serves that); every statement touches ``blnk.transactions`` and
``blnk.balances`` by key only:

* journal rows above P's *re-read point* ``L_P`` (a primary-key range scan):
  ``L_P`` is just below the first row recorded at or after P's cutoff, so the
  range holds the rows recorded since (a day's activity, plus what was recorded
  between P's cutoff and P's read); rows P already counted are skipped;
* P's *pending* rows below ``L_P``: rows recorded before P's cutoff but dated
  at or after it (future-dated); P's state carries their legs (Blnk's journal rows never change: a
  trigger forbids updating any column but ``meta_data`` and ``chain_*``), so they are not read again
  (a state written before the legs were carried lists ids only: those are read by primary key);
* P's *id gaps*: ids at or below P's watermark that P's view could not see (a
  transaction in flight at the read commits later, out of id order), by primary
  key; the ones that became visible are rolled in;
* P's *orphan children*: commits and voids in ``S_P`` whose INFLIGHT parent was
  not in ``S_P`` yet; they release their hold once the parent counts;
* the parent of every new child, by ``transaction_id`` (a unique key);
* balances above P's balance re-read point and P's gap balances, by primary
  key; attributes of the balances that changed, by ``balance_id`` (a unique key).

Genesis is the same step from an empty base (everything at zero): the only full read.
What a step leaves for the next (:class:`Step`): the re-read points, and a small
state of listed ids (future-dated rows, orphans, unresolved gaps).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from snapshot_pipeline.amounts import AMOUNT_COLUMNS
from snapshot_pipeline.ledger.asof import WORK_MEM, ts

# ADBC's PostgreSQL driver cuts a streamed result into batches of about 16 MB by default: the day's delta at
# 1M balances came as 2 batches, the first after 1.8 s. At 1 MB the first comes as soon as PostgreSQL's sort
# is done (0.9 s) and the rest every ~50 ms, while PostgreSQL goes on probing.
BATCH_SIZE_HINT_OPTION = "adbc.postgresql.batch_size_hint_bytes"
STREAM_BATCH_BYTES = 1 << 20

# State kinds, as stored in snapshot_index.roll_state.
PENDING_TRANSACTION = "T"
ORPHAN_CHILD = "O"
TRANSACTION_GAP = "G"
BALANCE_GAP = "H"

# A pending row (kind T) carries its leg: transaction_id .. currency (amount as exact text); other kinds are ids.
LEG_COLUMNS = ("transaction_id", "source", "destination", "status", "parent_transaction", "amount", "currency")
STATE_SCHEMA = pa.schema([
    pa.field("kind", pa.string(), nullable=False),
    pa.field("id", pa.int64(), nullable=False),
    pa.field("at", pa.timestamp("us")),
    pa.field("seen_xmax", pa.int64()),
    *[pa.field(name, pa.string()) for name in LEG_COLUMNS],
])


def empty_state() -> pa.Table:
    return STATE_SCHEMA.empty_table()


class StoredState(Protocol):
    """A base's state kept in the ledger's own database, staged without reading it into the client
    (:class:`snapshot_pipeline.store.roll_state.Stored`)."""

    def stage(self, cur, table: str, schema: pa.Schema) -> None: ...


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where a roll-forward step starts: the base partition's cutoff, watermarks and state (genesis: zeros)."""

    cutoff: dt.datetime | None
    max_transaction_id: int
    transaction_count: int
    max_balance_id: int
    reread_transaction_id: int
    reread_balance_id: int
    state: pa.Table | StoredState

    @classmethod
    def genesis(cls) -> Origin:
        return cls(None, 0, 0, 0, 0, 0, empty_state())


@dataclasses.dataclass(frozen=True)
class View:
    """The consistent read a step runs in: its watermarks and snapshot."""

    max_transaction_id: int
    transaction_count: int
    max_balance_id: int
    pg_snapshot: str
    read_at: dt.datetime
    reread_transaction_id: int = 0  # the next step reads blnk.transactions from above this id
    reread_balance_id: int = 0  # and blnk.balances from above this one

    @property
    def xmin(self) -> int:
        return int(self.pg_snapshot.split(":")[0])

    @property
    def xmax(self) -> int:
        return int(self.pg_snapshot.split(":")[1])

    def as_dict(self) -> dict:
        return {
            "max_transaction_id": self.max_transaction_id,
            "transaction_count": self.transaction_count,
            "max_balance_id": self.max_balance_id,
            "pg_snapshot": self.pg_snapshot,
            "read_at": self.read_at.isoformat(),
            "reread_transaction_id": self.reread_transaction_id,
            "reread_balance_id": self.reread_balance_id,
        }


@dataclasses.dataclass
class Step:
    """The outcome of :func:`begin_step`: the view, the counts and the state the next step needs."""

    view: View
    state: pa.Table
    counted_rows: int
    released_rows: int
    resolved_gaps: int
    entering_balances: int

    def next_origin(self, cutoff: dt.datetime) -> Origin:
        """Where the step after this one starts (what :func:`snapshot_pipeline.snapshot.roll.origin_of` reads
        back from the partition this step publishes)."""
        view = self.view
        return Origin(cutoff, view.max_transaction_id, view.transaction_count, view.max_balance_id,
                      view.reread_transaction_id, view.reread_balance_id, self.state)

    def state_counts(self) -> dict[str, int]:
        counts = {row["values"]: row["counts"] for row in pc.value_counts(self.state["kind"]).to_pylist()}
        return {name: counts.get(kind, 0) for name, kind in (
            ("pending_transactions", PENDING_TRANSACTION), ("orphan_children", ORPHAN_CHILD),
            ("transaction_gaps", TRANSACTION_GAP),
            ("balance_gaps", BALANCE_GAP))}


_RELEVANT = "('APPLIED', 'INFLIGHT', 'VOID')"
_TX_COLUMNS = """t.id, t.transaction_id, t.source, t.destination, t.status, t.parent_transaction,
                 COALESCE(t.precise_amount, 0) AS amount, t.currency,
                 COALESCE(t.effective_date, t.created_at) AS eff"""

# $1 = L_P, $2 = W_P, $3 = C_P, $4 = C_D. The legs of S_D \ S_P: rows above the base's re-read point L_P
# (a primary-key range) and its listed pending and gap rows (by key), less what the base already counted.
_ROLL_TX_SQL = f"""
    CREATE TEMP TABLE roll_tx ON COMMIT DROP AS
    SELECT c.* FROM (
        (SELECT {_TX_COLUMNS} FROM blnk.transactions t WHERE t.id > $1 AND t.status IN {_RELEVANT} OFFSET 0)
        UNION ALL  -- pending rows carried with their legs: not read again
        SELECT r.id, r.transaction_id, r.source, r.destination, r.status, r.parent_transaction,
               r.amount::numeric, r.currency, r.at
          FROM roll_base r WHERE r.kind = '{PENDING_TRANSACTION}' AND r.transaction_id IS NOT NULL AND r.id <= $1
        UNION ALL  -- gap rows, and pending rows of a state that lists ids only, by primary key
        SELECT t.* FROM roll_base r CROSS JOIN LATERAL (
            SELECT {_TX_COLUMNS} FROM blnk.transactions t WHERE t.id = r.id AND t.status IN {_RELEVANT} OFFSET 0
        ) AS t
         WHERE (r.kind = '{TRANSACTION_GAP}' OR (r.kind = '{PENDING_TRANSACTION}' AND r.transaction_id IS NULL))
           AND r.id <= $1
    ) AS c
     WHERE c.eff < $4::timestamp
       AND NOT (c.id <= $2 AND c.eff < $3::timestamp  -- in S_P already, unless the base's view missed it
                AND NOT EXISTS (SELECT 1 FROM roll_base g WHERE g.kind = '{TRANSACTION_GAP}' AND g.id = c.id))"""

# $1 = C_D. Children that count now (new commits/voids and the base's orphans) with their parent hold,
# found by transaction_id (a unique key; LATERAL ... OFFSET 0 keeps it one index probe per child, and the
# children sorted by parent_transaction make those probes walk the index in key order).
_ROLL_CHILDREN_SQL = f"""
    CREATE TEMP TABLE roll_children ON COMMIT DROP AS
    SELECT c.id, c.amount, p.source, p.destination,
           COALESCE(p.status = 'INFLIGHT' AND p.eff < $1::timestamp, false) AS releases,
           (p.status IS NULL OR (p.status = 'INFLIGHT' AND p.eff >= $1::timestamp)) AS waits
      FROM (
        SELECT id, amount, parent_transaction FROM roll_tx
         WHERE status IN ('APPLIED', 'VOID') AND parent_transaction IS NOT NULL
        UNION ALL
        SELECT o.id, COALESCE(o.precise_amount, 0), o.parent_transaction
          FROM roll_base r CROSS JOIN LATERAL (
            SELECT x.id, x.precise_amount, x.parent_transaction FROM blnk.transactions x WHERE x.id = r.id OFFSET 0
          ) AS o
         WHERE r.kind = '{ORPHAN_CHILD}'
         ORDER BY parent_transaction
      ) AS c
      LEFT JOIN LATERAL (
        SELECT x.status, x.source, x.destination, COALESCE(x.effective_date, x.created_at) AS eff
          FROM blnk.transactions x WHERE x.transaction_id = c.parent_transaction OFFSET 0
      ) AS p ON true"""

# $1 = LB_P, $2 = B_P, $3 = C_P, $4 = C_D. Balances entering the snapshot: above the base's re-read
# point (a primary-key range) and its gap balances (by key), created before C_D, not in the base already.
_ROLL_BAL_SQL = f"""
    CREATE TEMP TABLE roll_bal ON COMMIT DROP AS
    SELECT c.* FROM (
        (SELECT b.id, b.balance_id, b.created_at FROM blnk.balances b WHERE b.id > $1 OFFSET 0)
        UNION ALL
        SELECT b.* FROM roll_base r CROSS JOIN LATERAL (
            SELECT b.id, b.balance_id, b.created_at FROM blnk.balances b WHERE b.id = r.id OFFSET 0
        ) AS b
         WHERE r.kind = '{BALANCE_GAP}' AND r.id <= $1
    ) AS c
     WHERE c.created_at < $4::timestamp
       AND NOT (c.id <= $2 AND c.created_at < $3::timestamp
                AND NOT EXISTS (SELECT 1 FROM roll_base g WHERE g.kind = '{BALANCE_GAP}' AND g.id = c.id))"""

# The step's legs (kind: 0 credit, 1 debit, 2/3 inflight in/out), and every balance it adds (kind NULL).
LEGS_SQL = """
        SELECT destination AS balance_id, currency, 0 AS kind, amount FROM roll_tx WHERE status = 'APPLIED'
        UNION ALL SELECT source, currency, 1, amount FROM roll_tx WHERE status = 'APPLIED'
        UNION ALL SELECT destination, currency, 2, amount FROM roll_tx WHERE status = 'INFLIGHT'
        UNION ALL SELECT source, currency, 3, amount FROM roll_tx WHERE status = 'INFLIGHT'
        UNION ALL SELECT destination, NULL, 2, -amount FROM roll_children WHERE releases
        UNION ALL SELECT source, NULL, 3, -amount FROM roll_children WHERE releases
        UNION ALL SELECT balance_id, NULL, NULL, NULL FROM roll_bal"""

# A balance's legs summed by kind (one numeric addition per leg, FILTER, not four): the one definition of
# which kind is which amount, for the delta and for the live-drift comparison (snapshot/live.py).
LEG_SUMS = """
               COALESCE(sum(amount) FILTER (WHERE kind = 0), 0) AS credit,
               COALESCE(sum(amount) FILTER (WHERE kind = 1), 0) AS debit,
               COALESCE(sum(amount) FILTER (WHERE kind = 2), 0) AS inflight_credit,
               COALESCE(sum(amount) FILTER (WHERE kind = 3), 0) AS inflight_debit"""

# The live amounts of a balance (amounts.AMOUNT_COLUMNS) as exact text, as the delta carries them when asked.
LIVE_PREFIX = "live_"


def delta_sql(legs: str, *, live_amounts: bool = False) -> str:
    """The per-balance delta of ``legs`` (a statement of balance_id, currency, kind, amount).

    Per balance: the sums of the counted legs, for every balance the step touches or adds, with its
    attributes (by balance_id, a unique key), in byte order (COLLATE "C", the order Arrow compares in).
    The sums are sorted before the attribute probes, not after: probes in key order walk the balance_id
    index's leaves once, in order (at 1M balances: 144k probes 1.06 s -> 0.6 s, half the buffer reads),
    and the nested loop keeps that order, so the final ORDER BY costs no second sort. ``live_amounts``:
    the same probe also returns the balance's live amounts (:data:`amounts.AMOUNT_COLUMNS`, as ``live_<name>``
    text), for the run's live-drift comparison, so that no second read of blnk.balances is needed."""
    probed = "".join(f", x.{name}" for name in AMOUNT_COLUMNS) if live_amounts else ""
    returned = "".join(f",\n           b.{name}::text AS {LIVE_PREFIX}{name}" for name in AMOUNT_COLUMNS) \
        if live_amounts else ""
    return f"""
    WITH legs (balance_id, currency, kind, amount) AS ({legs}
    ), sums AS (
        SELECT balance_id, min(currency) AS leg_currency,{LEG_SUMS}
          FROM legs GROUP BY balance_id ORDER BY balance_id COLLATE "C"
    )
    SELECT s.balance_id, b.ledger_id, b.identity_id, b.indicator,
           COALESCE(b.currency, s.leg_currency) AS currency, b.created_at AS balance_created_at,
           (b.id IS NOT NULL) AS known,
           s.credit::text AS credit, s.debit::text AS debit,
           s.inflight_credit::text AS inflight_credit, s.inflight_debit::text AS inflight_debit{returned}
      FROM sums s LEFT JOIN LATERAL (  -- one probe per changed balance: unchanged ones are never read
        SELECT x.id, x.ledger_id, x.identity_id, x.indicator, x.currency, x.created_at{probed}
          FROM blnk.balances x WHERE x.balance_id = s.balance_id OFFSET 0
      ) AS b ON true
     ORDER BY s.balance_id COLLATE "C" """


_DELTA_SQL = delta_sql(LEGS_SQL)
_DELTA_LIVE_SQL = delta_sql(LEGS_SQL, live_amounts=True)

# $1 = L, $2 = C_D, $3 = W_D (or B_D): where the next step re-reads a table from: just below the first row
# recorded at or after the cutoff (every row at or below it was recorded before the cutoff).
def reread_sql(table: str, *, from_genesis: bool) -> str:
    """The re-read point of ``blnk.<table>`` (``transactions`` or ``balances``).

    A rolled-forward step walks the primary key up from ``L`` (the base's re-read point): the walk stops at the
    first row recorded since the cutoff, after about a day's rows. From genesis (``L`` = 0) that walk crosses
    every row recorded before the cutoff, most of the journal for a recent day (300k balances: 0.74-0.96 s for
    the journal, 0.42-0.55 s for the balances); there the first such id is a ``min`` that PostgreSQL serves
    from Blnk's indexes on ``created_at`` (the rows recorded since the cutoff) or from one sequential scan,
    whichever it estimates cheaper (0.02-0.07 s and 0.005 s). ``id + 0`` keeps it from turning the ``min``
    back into the primary-key walk."""
    if from_genesis:
        first = f"SELECT min(id + 0) - 1 FROM blnk.{table} WHERE id > $1 AND created_at >= $2::timestamp"
    else:
        first = f"SELECT id - 1 FROM blnk.{table} WHERE id > $1 AND created_at >= $2::timestamp ORDER BY id LIMIT 1"
    return f"SELECT COALESCE(({first}), $3)::bigint"


# A pending row with its leg, as the state stores it (after kind, id, at, seen_xmax).
_LEG = ("t.transaction_id, t.source, t.destination, t.status, t.parent_transaction,"
        " COALESCE(t.precise_amount, 0)::text, t.currency")
_NO_LEG = ", ".join(["NULL::text"] * len(LEG_COLUMNS))

# $1 = C_D, $2 = D's xmin, $3 = L_P, $4 = L_D. What the next step needs besides its re-read ranges:
# rows below L_D dated at or after C_D (future-dated) with their legs, orphans, and the ids this view could not see.
_STATE_SQL = f"""
    SELECT '{PENDING_TRANSACTION}'::text, t.id::bigint, COALESCE(t.effective_date, t.created_at), NULL::bigint, {_LEG}
      FROM blnk.transactions t
     WHERE t.id > $3 AND t.id <= $4 AND t.status IN {_RELEVANT}
       AND COALESCE(t.effective_date, t.created_at) >= $1::timestamp
    UNION ALL
    SELECT r.kind, r.id, r.at, NULL, r.transaction_id, r.source, r.destination, r.status, r.parent_transaction,
           r.amount, r.currency
      FROM roll_base r
     WHERE r.kind = '{PENDING_TRANSACTION}' AND r.transaction_id IS NOT NULL AND r.id <= $3 AND r.at >= $1::timestamp
    UNION ALL  -- by key: pending rows of a state that lists ids only, and gap rows of the base that became
    SELECT '{PENDING_TRANSACTION}', t.id::bigint, COALESCE(t.effective_date, t.created_at), NULL, {_LEG}
      FROM roll_base r CROSS JOIN LATERAL (  -- visible dated at or after the cutoff (pending from now on)
        SELECT * FROM blnk.transactions t WHERE t.id = r.id AND t.status IN {_RELEVANT} OFFSET 0
    ) AS t
     WHERE (r.kind = '{TRANSACTION_GAP}' OR (r.kind = '{PENDING_TRANSACTION}' AND r.transaction_id IS NULL))
       AND r.id <= $3 AND COALESCE(t.effective_date, t.created_at) >= $1::timestamp
    UNION ALL SELECT '{ORPHAN_CHILD}', id::bigint, NULL, NULL, {_NO_LEG} FROM roll_children WHERE waits
    UNION ALL SELECT kind, id, NULL, seen_xmax, {_NO_LEG} FROM roll_new_gaps
    UNION ALL
    SELECT r.kind, r.id, NULL, r.seen_xmax, {_NO_LEG} FROM roll_base r
     WHERE r.kind = '{TRANSACTION_GAP}' AND r.seen_xmax >= $2
       AND NOT EXISTS (SELECT 1 FROM blnk.transactions t WHERE t.id = r.id)
    UNION ALL
    SELECT r.kind, r.id, NULL, r.seen_xmax, {_NO_LEG} FROM roll_base r
     WHERE r.kind = '{BALANCE_GAP}' AND r.seen_xmax >= $2
       AND NOT EXISTS (SELECT 1 FROM blnk.balances b WHERE b.id = r.id)"""

# $1 = W_P, $2 = W_D, $3 = B_P, $4 = B_D, $5 = D's xmax. Ids in the new ranges this view cannot see,
# from primary-key range scans: every hole between two consecutive visible ids. A range whose count of
# visible rows says it has no hole is passed empty (W_P = W_D, B_P = B_D): see :func:`finish_step`.
_NEW_GAPS_SQL = f"""
    CREATE TEMP TABLE roll_new_gaps ON COMMIT DROP AS
    SELECT '{TRANSACTION_GAP}'::text AS kind, generate_series(prev + 1, id - 1)::bigint AS id,
           $5::bigint AS seen_xmax
      FROM (SELECT id, lag(id::bigint, 1, $1::bigint) OVER (ORDER BY id) AS prev
              FROM blnk.transactions WHERE id > $1 AND id <= $2) AS t
     WHERE id > prev + 1
    UNION ALL
    SELECT '{BALANCE_GAP}', generate_series(prev + 1, id - 1)::bigint, $5::bigint
      FROM (SELECT id, lag(id::bigint, 1, $3::bigint) OVER (ORDER BY id) AS prev
              FROM blnk.balances WHERE id > $3 AND id <= $4) AS b
     WHERE id > prev + 1"""


def open_view(cur) -> View:
    """Start one REPEATABLE READ view on an autocommit ADBC cursor; read its watermarks (by key only)."""
    cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    cur.execute(
        "SELECT COALESCE((SELECT max(id) FROM blnk.transactions), 0)::bigint,"
        " COALESCE((SELECT max(id) FROM blnk.balances), 0)::bigint,"
        " pg_current_snapshot()::text, (now() AT TIME ZONE 'UTC')::timestamp"
    )
    max_id, max_balance, snapshot, read_at = cur.fetchone()
    return View(int(max_id), 0, int(max_balance), snapshot, read_at)


def begin_step(cur, view: View, cutoff: dt.datetime, origin: Origin) -> Step:
    """Inside the open view: stage the step's rows in temp tables and compute the next state.

    Afterwards :func:`delta_reader` streams the per-balance delta. ``origin`` is the
    base partition (or :meth:`Origin.genesis`).
    """
    stage_step(cur, cutoff, origin)
    return finish_step(cur, view, cutoff, origin)


def stage_step(cur, cutoff: dt.datetime, origin: Origin) -> None:
    """Inside the open view: stage the step's rows (temp tables roll_tx, roll_children, roll_bal): its legs."""
    cur.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
    cur.execute("SET LOCAL jit = off")  # compiling these one-off queries costs seconds and saves none
    cur.execute("DROP TABLE IF EXISTS roll_base")
    if isinstance(origin.state, pa.Table):
        cur.adbc_ingest("roll_base", origin.state.cast(STATE_SCHEMA), mode="create", temporary=True)
    else:
        origin.state.stage(cur, "roll_base", STATE_SCHEMA)
    cur.execute("CREATE INDEX ON roll_base (kind, id)")
    # statistics of the columns the step filters on only: the legs' text columns made ANALYZE 5x slower
    # (68k state rows at 1M balances: 0.11 s -> 0.02 s)
    cur.execute("ANALYZE roll_base (kind, id, at, seen_xmax)")
    cutoff_text = ts(cutoff)
    base_cutoff = ts(origin.cutoff) if origin.cutoff is not None else "-infinity"
    cur.execute(_ROLL_TX_SQL, parameters=(origin.reread_transaction_id, origin.max_transaction_id, base_cutoff,
                                          cutoff_text))
    cur.execute(_ROLL_CHILDREN_SQL, parameters=(cutoff_text,))
    cur.execute(_ROLL_BAL_SQL, parameters=(origin.reread_balance_id, origin.max_balance_id, base_cutoff,
                                           cutoff_text))


def staged_rows(cur) -> int:
    """After :func:`stage_step`: how many journal rows the step counts (the rows of ``roll_tx``)."""
    cur.execute("SELECT count(*) FROM roll_tx")
    return int(cur.fetchone()[0])


def finish_step(cur, view: View, cutoff: dt.datetime, origin: Origin) -> Step:
    """After :func:`stage_step`, in the same view: the next state, the re-read points and the counts.

    The ids this view cannot see are searched for only in a range whose count of visible rows is short of its
    width: a range without a hole (most days, and a genesis on a journal whose ids have none) is not walked
    pair by pair (300k balances, genesis: the journal's walk 1.0-1.3 s, against the count it needs anyway)."""
    cutoff_text = ts(cutoff)
    cur.execute(
        "SELECT (SELECT count(*) FROM roll_children WHERE releases),"
        " (SELECT count(*) FROM roll_bal),"
        # rows the view sees that the base's count did not hold: new ids, and base gaps filled since
        " (SELECT count(*) FROM blnk.transactions WHERE id > $1),"
        " (SELECT count(*) FROM roll_base r JOIN blnk.transactions t ON t.id = r.id"
        "   WHERE r.kind = $2 AND t.id <= $1),"
        " (SELECT count(*) FROM blnk.balances WHERE id > $3)",
        parameters=(origin.max_transaction_id, TRANSACTION_GAP, origin.max_balance_id),
    )
    released, entering, above, filled, balances_above = (int(v) for v in cur.fetchone())
    # every visible id above the base's watermark is at most the view's: the count is short only across a hole
    tx_from = origin.max_transaction_id if above < view.max_transaction_id - origin.max_transaction_id \
        else view.max_transaction_id
    balances_from = origin.max_balance_id if balances_above < view.max_balance_id - origin.max_balance_id \
        else view.max_balance_id
    cur.execute(_NEW_GAPS_SQL, parameters=(tx_from, view.max_transaction_id, balances_from, view.max_balance_id,
                                           view.xmax))
    genesis = origin.cutoff is None  # Origin.genesis(): no base
    cur.execute(reread_sql("transactions", from_genesis=genesis),
                parameters=(origin.reread_transaction_id, cutoff_text, view.max_transaction_id))
    reread_tx = int(cur.fetchone()[0])
    cur.execute(reread_sql("balances", from_genesis=genesis),
                parameters=(origin.reread_balance_id, cutoff_text, view.max_balance_id))
    reread_bal = int(cur.fetchone()[0])
    cur.execute(_STATE_SQL, parameters=(cutoff_text, view.xmin, origin.reread_transaction_id, reread_tx))
    raw = cur.fetch_arrow_table()
    state = pa.table(raw.columns, names=STATE_SCHEMA.names).cast(STATE_SCHEMA)
    counted = staged_rows(cur)
    view = dataclasses.replace(view, transaction_count=origin.transaction_count + above + filled,
                               reread_transaction_id=reread_tx, reread_balance_id=reread_bal)
    return Step(view, state, counted, released, filled, entering)


def delta_reader(cur, *, live_amounts: bool = False) -> pa.RecordBatchReader:
    """Stream the step's per-balance delta in ``balance_id`` byte order (amounts as exact text; with
    ``live_amounts``, each balance's live amounts too: :func:`delta_sql`).

    The statement takes no parameters, on purpose: ADBC streams a parameterless query through ``COPY``,
    so PostgreSQL's probes and the caller's merge run side by side and only a batch is held at a time;
    a bound parameter makes ADBC execute it as a prepared statement whose whole result libpq holds before
    the first batch (at 1M balances: +76 MB peak RSS, the merge waiting for the last probe)."""
    stream_in_small_batches(cur)
    cur.execute(_DELTA_LIVE_SQL if live_amounts else _DELTA_SQL)
    return cur.fetch_record_batch()


def stream_in_small_batches(cur) -> None:
    """Ask ADBC for record batches of about :data:`STREAM_BATCH_BYTES` on this cursor's next queries."""
    cur.adbc_statement.set_options(**{BATCH_SIZE_HINT_OPTION: str(STREAM_BATCH_BYTES)})
