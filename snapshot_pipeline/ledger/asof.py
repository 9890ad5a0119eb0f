"""Consistent reads of the Blnk journal: views, watermarks, and the effective-time delta.

Each partition records its *watermark*: the highest ``blnk.transactions.id`` and
the row count its view could see, so ``S_D = {id <= W_D, effective < C_D}``.
This module opens such views and sums ``S_T \\ S_P`` by effective-time ranges
(:func:`prepare_delta`) for the reconciliation report; what a partition could not see is found by
:mod:`snapshot_pipeline.quality.lateness`.

The snapshot core does not use the effective-time delta: no Blnk index serves
it, so it rolls partitions forward by key instead (:mod:`snapshot_pipeline.ledger.journal`).
Amounts travel as text and become exact decimals in Arrow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Iterator

from snapshot_pipeline import db

# Statuses that move money (APPLIED), hold it (INFLIGHT) or release a hold (VOID children).
_RELEVANT = "('APPLIED', 'INFLIGHT', 'VOID')"

WORK_MEM = "256MB"

_EFF = "COALESCE({t}.effective_date, {t}.created_at)"


def effective_time(alias: str) -> str:
    """The journal's effective time of the row aliased ``alias``, as SQL (the one definition, DESIGN §3)."""
    return _EFF.format(t=alias)


@dataclasses.dataclass(frozen=True)
class Base:
    """The partition an incremental read builds on: its cutoff and watermark."""

    cutoff: dt.datetime
    max_transaction_id: int
    transaction_count: int


def ts(value: dt.datetime) -> str:
    """A naive-UTC timestamp literal for a ``$n::timestamp`` parameter (independent of the session time zone)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(sep=" ")


@contextlib.contextmanager
def ledger_cursor(url: str, what: str = "ledger database") -> Iterator:
    """An ADBC cursor on its own connection for one read of the ledger; the body opens its view and COMMITs it.
    On a failure the open read is rolled back; the cursor and the connection are closed either way."""
    ledger = db.connect_arrow(url, what)
    try:
        cur = ledger.cursor()
        try:
            yield cur
        except BaseException:
            rollback_quietly(cur)
            raise
        finally:
            cur.close()
    finally:
        ledger.close()


def rollback_quietly(cur) -> None:
    """End the open read after a failure; the connection may already be gone, which is fine."""
    try:
        cur.execute("ROLLBACK")
    except Exception:  # noqa: BLE001 - best effort on an already failing path
        pass


def base_is_intact(cur, base: Base) -> bool:
    """True when the base's journal prefix is unchanged (no row with ``id <= W`` appeared or vanished since)."""
    cur.execute(
        "SELECT count(*)::bigint FROM blnk.transactions WHERE id <= $1",
        parameters=(base.max_transaction_id,),
    )
    return int(cur.fetchone()[0]) == base.transaction_count


# Longer than 60 lines: one SQL statement, written out (splitting it would hide how its parts join).
def _delta_sql(incremental: bool) -> str:
    """Leg rows (balance_id, credit, debit, inflight_credit, inflight_debit) of ``S_D \\ S_P`` (+ new balances).

    Parameters: $1 = C_D, $2 = C_P, $3 = W_P (genesis: C_P = -infinity, W_P = 0).
    """
    in_p = "({t}.id <= $3 AND " + _EFF + " < $2::timestamp)"
    new_tx = f"""
        new_tx AS (  -- rows in S_D but not in S_P
            SELECT t.id, t.transaction_id, t.source, t.destination, t.status, t.parent_transaction,
                   COALESCE(t.precise_amount, 0) AS amount
            FROM blnk.transactions t
            WHERE t.status IN {_RELEVANT}
              AND ((t.effective_date >= $2::timestamp AND t.effective_date < $1::timestamp)
                OR (t.effective_date IS NULL AND t.created_at >= $2::timestamp AND t.created_at < $1::timestamp)
                OR (t.id > $3 AND {effective_time('t')} < $1::timestamp))
        )"""
    legs = f"""
        SELECT destination, amount, 0, 0, 0 FROM new_tx WHERE status = 'APPLIED'
        UNION ALL SELECT source, 0, amount, 0, 0 FROM new_tx WHERE status = 'APPLIED'
        UNION ALL SELECT destination, 0, 0, amount, 0 FROM new_tx WHERE status = 'INFLIGHT'
        UNION ALL SELECT source, 0, 0, 0, amount FROM new_tx WHERE status = 'INFLIGHT'
        -- (a) new children (commit/void) of inflight parents in S_D
        UNION ALL SELECT x.balance_id, 0, 0, x.inflight_credit, x.inflight_debit
        FROM new_tx c
        JOIN blnk.transactions p ON p.transaction_id = c.parent_transaction
        CROSS JOIN LATERAL (VALUES (p.destination, -c.amount, 0), (p.source, 0, -c.amount))
            AS x(balance_id, inflight_credit, inflight_debit)
        WHERE c.status IN ('APPLIED', 'VOID') AND c.parent_transaction IS NOT NULL
          AND p.status = 'INFLIGHT' AND {effective_time('p')} < $1::timestamp
        -- (b) children already in S_P of inflight parents new in S_D
        UNION ALL SELECT x.balance_id, 0, 0, x.inflight_credit, x.inflight_debit
        FROM new_tx p
        JOIN blnk.transactions c ON c.parent_transaction = p.transaction_id
        CROSS JOIN LATERAL (VALUES (p.destination, -COALESCE(c.precise_amount, 0), 0),
                                   (p.source, 0, -COALESCE(c.precise_amount, 0)))
            AS x(balance_id, inflight_credit, inflight_debit)
        WHERE p.status = 'INFLIGHT' AND c.status IN ('APPLIED', 'VOID')
          AND {in_p.format(t='c')}"""
    ctes = [new_tx]
    if incremental:
        # Balances created since the base have no base row: add their legs already in S_P,
        # on their own side only (the other side's balance already holds them).
        ctes.append(
            """
        new_bal AS (
            SELECT balance_id FROM blnk.balances
            WHERE created_at >= $2::timestamp AND created_at < $1::timestamp
        )"""
        )
        ctes.append(
            f"""
        old_legs AS (  -- legs in S_P on a new balance: side 'c' (destination) or 'd' (source)
            -- LATERAL ... OFFSET 0 keeps these as per-balance index probes on source/destination
            SELECT nb.balance_id, t.side, t.transaction_id, t.status, t.amount
            FROM new_bal nb CROSS JOIN LATERAL (
                SELECT 'c' AS side, x.transaction_id, x.status, COALESCE(x.precise_amount, 0) AS amount
                FROM blnk.transactions x
                WHERE x.destination = nb.balance_id AND x.status IN {_RELEVANT} AND {in_p.format(t='x')}
                UNION ALL
                SELECT 'd', x.transaction_id, x.status, COALESCE(x.precise_amount, 0)
                FROM blnk.transactions x
                WHERE x.source = nb.balance_id AND x.status IN {_RELEVANT} AND {in_p.format(t='x')}
                OFFSET 0
            ) AS t
        )"""
        )
        legs += f"""
        UNION ALL SELECT balance_id,
                         CASE WHEN side = 'c' THEN amount ELSE 0 END, CASE WHEN side = 'd' THEN amount ELSE 0 END,
                         0, 0
            FROM old_legs WHERE status = 'APPLIED'
        UNION ALL SELECT balance_id, 0, 0,
                         CASE WHEN side = 'c' THEN amount ELSE 0 END, CASE WHEN side = 'd' THEN amount ELSE 0 END
            FROM old_legs WHERE status = 'INFLIGHT'
        -- (c) pairs entirely in S_P whose inflight parent touches a new balance
        UNION ALL SELECT p.balance_id, 0, 0,
                         CASE WHEN p.side = 'c' THEN -COALESCE(c.precise_amount, 0) ELSE 0 END,
                         CASE WHEN p.side = 'd' THEN -COALESCE(c.precise_amount, 0) ELSE 0 END
            FROM old_legs p
            JOIN blnk.transactions c ON c.parent_transaction = p.transaction_id
            WHERE p.status = 'INFLIGHT' AND c.status IN ('APPLIED', 'VOID') AND {in_p.format(t='c')}"""
    return f"""
        INSERT INTO snapshot_delta
        WITH {",".join(ctes)}
        SELECT balance_id, sum(credit), sum(debit), sum(inflight_credit), sum(inflight_debit)
        FROM ({legs}) AS legs(balance_id, credit, debit, inflight_credit, inflight_debit)
        GROUP BY balance_id"""


def prepare_delta(cur, cutoff: dt.datetime, base: Base | None, *, new_balance_legs: bool = True) -> int:
    """Fill the temp table ``snapshot_delta`` inside the open read; returns how many balances it holds.

    """
    # Session-local memory for the aggregation (hash instead of on-disk sort); ends with the transaction.
    cur.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
    cur.execute("SET LOCAL jit = off")  # compiling this one-off query costs seconds and saves none
    cur.execute(
        "CREATE TEMP TABLE snapshot_delta (balance_id text PRIMARY KEY, credit numeric, debit numeric,"
        " inflight_credit numeric, inflight_debit numeric) ON COMMIT DROP"
    )
    if base is None:
        params = (ts(cutoff), "-infinity", 0)
    else:
        params = (ts(cutoff), ts(base.cutoff), base.max_transaction_id)
    # Without ``new_balance_legs``, only S_D \\ S_P: for a caller whose base row is zero for every balance
    # the base does not hold (a roll-forward partition holds every balance a leg of S_P touches).
    cur.execute(_delta_sql(incremental=base is not None and new_balance_legs), parameters=params)
    cur.execute("ANALYZE snapshot_delta")
    cur.execute("SELECT count(*) FROM snapshot_delta")
    return int(cur.fetchone()[0])
