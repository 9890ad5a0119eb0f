"""The delta of one roll-forward step in K sessions that share one exported snapshot (one cut, K workers).

The session that staged the step (:func:`snapshot_pipeline.ledger.journal.stage_step`) exports its
snapshot (:func:`export_snapshot`); each shard session imports it (:func:`join_view`: it then sees exactly
what the staging session sees), receives the legs of its ``balance_id`` range (:func:`legs_reader`,
:func:`load_legs`: temp tables are per session) and computes that range's delta
(:func:`shard_delta_reader`), probing the attributes of its own balances only.
"""

from __future__ import annotations

import re

import pyarrow as pa

from snapshot_pipeline.ledger import journal
from snapshot_pipeline.ledger.asof import WORK_MEM

# $1 = low, $2 = high (UTF-8 bytes; NULL: unbounded). The staged step's legs of one balance_id range, in
# byte order as Arrow compares (a boundary may hold any character, NUL too), amounts as exact text, for a
# shard session (which sees the same snapshot but not this session's temp tables).
_RANGE_LEGS_SQL = f"""
    SELECT l.balance_id, l.currency, l.kind, l.amount::text AS amount FROM ({journal.LEGS_SQL}
    ) AS l
     WHERE ($1::bytea IS NULL OR convert_to(l.balance_id, 'UTF8') >= $1::bytea)
       AND ($2::bytea IS NULL OR convert_to(l.balance_id, 'UTF8') < $2::bytea)"""

# In a shard session: the delta of the legs it was given (the temp table roll_legs), as _DELTA_SQL.
_SHARD_DELTA_SQL = journal.delta_sql("""
        SELECT balance_id, currency, kind, amount::numeric FROM roll_legs""")

LEGS_SCHEMA = pa.schema([
    pa.field("balance_id", pa.string()),
    pa.field("currency", pa.string()),
    pa.field("kind", pa.int32()),
    pa.field("amount", pa.string()),
])

# $1 = K. K-1 cut points splitting the balances the step adds into K near-equal balance_id ranges (genesis:
# every balance), in byte order.
_QUANTILES_SQL = """
    SELECT percentile_disc(ARRAY(SELECT k::float8 / $1 FROM generate_series(1, $1 - 1) AS k))
           WITHIN GROUP (ORDER BY balance_id COLLATE "C")::text[] FROM roll_bal"""

# One cut, K sessions: the session that staged the step exports its snapshot; each shard session imports it
# (it then sees exactly what the staging session sees), receives the legs of its balance_id range, and
# computes that range's delta, probing the attributes of its balances only.

_SNAPSHOT_ID = re.compile(r"^[0-9A-Fa-f]+(-[0-9A-Fa-f]+)+$")


def export_snapshot(cur) -> str:
    """Inside the open view: export its snapshot for other sessions (valid while this transaction is open)."""
    cur.execute("SELECT pg_export_snapshot()")
    return str(cur.fetchone()[0])


def join_view(cur, snapshot_id: str) -> None:
    """Start a REPEATABLE READ transaction on an autocommit ADBC cursor that sees exactly the exported view."""
    if not _SNAPSHOT_ID.match(snapshot_id):
        raise ValueError(f"not an exported snapshot id: {snapshot_id!r}")
    cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    cur.execute(f"SET TRANSACTION SNAPSHOT '{snapshot_id}'")  # must come before any query of the transaction
    cur.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
    cur.execute("SET LOCAL jit = off")


def balance_quantiles(cur, shards: int) -> list[str]:
    """Inside a staged step: K-1 increasing cut points splitting the balances it adds into near-equal ranges."""
    if shards <= 1:
        return []
    cur.execute(_QUANTILES_SQL, parameters=(shards,))
    row = cur.fetchone()
    values = row[0] if row is not None else None
    return sorted({v for v in values if v is not None}) if values else []


def legs_reader(cur, low: str | None, high: str | None) -> pa.RecordBatchReader:
    """Inside a staged step: its legs of ``[low, high)`` (byte order; None unbounded), schema :data:`LEGS_SCHEMA`."""
    cur.execute(_RANGE_LEGS_SQL, parameters=(None if low is None else low.encode(),
                                             None if high is None else high.encode()))
    return cur.fetch_record_batch()


def load_legs(cur, legs: pa.RecordBatchReader) -> int:
    """In a session joined to the step's view (:func:`join_view`): take one balance_id range of the step's
    legs (from :func:`legs_reader`) for :func:`shard_delta_reader`; returns their count."""
    cur.execute("DROP TABLE IF EXISTS roll_legs")
    return int(cur.adbc_ingest("roll_legs", _as_legs(legs), mode="create", temporary=True))


def shard_delta_reader(cur) -> pa.RecordBatchReader:
    """After :func:`load_legs`: the delta of those legs, as :func:`delta_reader` gives it for their range
    (the attributes probed, by ``balance_id``, for that range's balances only; streamed through ``COPY``,
    no parameters, as there)."""
    journal.stream_in_small_batches(cur)
    cur.execute(_SHARD_DELTA_SQL)
    return cur.fetch_record_batch()


def _as_legs(legs: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """``legs`` with :data:`LEGS_SCHEMA`'s types (the driver's may differ in integer width)."""
    def batches():
        for batch in legs:
            yield pa.RecordBatch.from_arrays([batch.column(i).cast(f.type) for i, f in enumerate(LEGS_SCHEMA)],
                                             schema=LEGS_SCHEMA)
    return pa.RecordBatchReader.from_batches(LEGS_SCHEMA, batches())
