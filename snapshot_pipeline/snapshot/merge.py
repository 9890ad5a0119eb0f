"""Rolling a partition forward, chunk by chunk: base rows + the journal delta -> the new rows.

Both inputs are sorted by ``balance_id`` (byte order) and walked together
(:func:`snapshot_pipeline.store.align.aligned`). For each aligned chunk:

* a base row with a delta row gets the delta's sums added and, when the balance
  row exists in the ledger, its attributes refreshed;
* a delta row without a base row is a balance entering the snapshot (created
  since the base, or touched by a leg dated before its creation);
* a base row without a delta row is copied as it is.

Changed rows (entering, or any sum not zero) are also returned, for the index.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc

from snapshot_pipeline import amounts
from snapshot_pipeline.store import align, parquet

ATTRIBUTES = ("ledger_id", "identity_id", "indicator", "currency", "balance_created_at")
DELTA_TO_FIELD = {
    "credit": "credit_balance",
    "debit": "debit_balance",
    "inflight_credit": "inflight_credit_balance",
    "inflight_debit": "inflight_debit_balance",
}
SUMMED = tuple(DELTA_TO_FIELD.values())
BASE_COLUMNS = [f.name for f in parquet.SNAPSHOT_SCHEMA if f.name != "cutoff_at"]


def _column(table: pa.Table, name: str) -> pa.Array:
    column = table[name]
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _delta_attributes(delta: pa.Table) -> dict[str, pa.Array]:
    out = {name: _column(delta, name) for name in ATTRIBUTES}
    out["balance_created_at"] = pc.cast(out["balance_created_at"], parquet.UTC_TS)
    return out


def _finish(ids: pa.Array, attributes: dict[str, pa.Array], sums: dict[str, pa.Array], cutoff: dt.datetime
            ) -> pa.Table:
    """Wide sums -> a table of the snapshot schema (overflow names the balance)."""
    values = dict(sums)
    values["balance"] = pc.subtract(values["credit_balance"], values["debit_balance"])
    values["inflight_balance"] = pc.subtract(values["inflight_credit_balance"], values["inflight_debit_balance"])
    stored = {name: amounts.narrow(values[name], ids, name) for name in parquet.AMOUNT_COLUMNS}
    n = len(ids)
    return pa.Table.from_arrays(
        [
            ids,
            *[attributes[name] for name in ATTRIBUTES[:4]],
            *[stored[name] for name in parquet.AMOUNT_COLUMNS],
            attributes["balance_created_at"],
            pa.repeat(pa.scalar(cutoff.replace(tzinfo=dt.UTC), parquet.UTC_TS), n),
        ],
        schema=parquet.SNAPSHOT_SCHEMA,
    )


def _updated(base: pa.Table, delta: pa.Table, delta_ids: pa.Array, cutoff: dt.datetime
             ) -> tuple[pa.Table, pa.Table | None]:
    """Base rows with the delta applied where a delta row matches: (all rows, the changed ones).

    Rows without a delta row pass through untouched (no decimal arithmetic); only matched rows are
    widened, added to, narrowed back and given the ledger's current attributes.
    """
    ids = _column(base, "balance_id")
    positions = pc.index_in(ids, value_set=delta_ids)
    matched = pc.is_valid(positions)
    if not pc.any(matched).as_py():
        return _with_cutoff(base, cutoff), None
    rows = pc.filter(positions, matched)
    hit = base.filter(matched)
    hit_ids = _column(hit, "balance_id")
    known = pc.take(_column(delta, "known"), rows)
    fresh = _delta_attributes(delta)
    attributes = {name: pc.if_else(known, pc.take(fresh[name], rows), _column(hit, name)) for name in ATTRIBUTES}
    sums, touched = {}, pa.repeat(pa.scalar(False), len(rows))
    for name, field in DELTA_TO_FIELD.items():
        add = pc.take(amounts.widen(_column(delta, name), delta_ids, field), rows)
        sums[field] = pc.add(amounts.widen(_column(hit, field)), add)
        touched = pc.or_(touched, pc.not_equal(add, pa.scalar(0, amounts.WIDE)))
    new_hit = _finish(hit_ids, attributes, sums, cutoff)
    columns = []
    for field in parquet.SNAPSHOT_SCHEMA:
        if field.name == "cutoff_at":
            columns.append(pa.repeat(pa.scalar(cutoff.replace(tzinfo=dt.UTC), parquet.UTC_TS), len(ids)))
        else:
            columns.append(pc.replace_with_mask(_column(base, field.name), matched,
                                                new_hit[field.name].combine_chunks()))
    return pa.Table.from_arrays(columns, schema=parquet.SNAPSHOT_SCHEMA), new_hit.filter(touched)


def _with_cutoff(base: pa.Table, cutoff: dt.datetime) -> pa.Table:
    """Base rows as they are, stamped with this partition's cutoff."""
    n = base.num_rows
    columns = [_column(base, f.name) if f.name != "cutoff_at" else
               pa.repeat(pa.scalar(cutoff.replace(tzinfo=dt.UTC), parquet.UTC_TS), n)
               for f in parquet.SNAPSHOT_SCHEMA]
    return pa.Table.from_arrays(columns, schema=parquet.SNAPSHOT_SCHEMA)


def roll_chunk(base: pa.Table | None, delta: pa.Table | None, cutoff: dt.datetime) -> tuple[pa.Table, pa.Table]:
    """One aligned chunk -> (rows of the new partition, the changed ones among them)."""
    has_delta = delta is not None and delta.num_rows > 0
    has_base = base is not None and base.num_rows > 0
    delta_ids = _column(delta, "balance_id") if has_delta else pa.array([], pa.string())
    parts, changed = [], []
    if has_base:
        if has_delta:
            rows, touched = _updated(base, delta, delta_ids, cutoff)
        else:
            rows, touched = _with_cutoff(base, cutoff), None
        parts.append(rows)
        if touched is not None:
            changed.append(touched)
    if delta is not None and has_delta:
        new = delta.filter(pc.invert(pc.is_in(delta_ids, value_set=_column(base, "balance_id")))) \
            if has_base else delta
        if new.num_rows:
            new_ids = _column(new, "balance_id")
            sums = {field: amounts.widen(_column(new, name), new_ids, field) for name, field in DELTA_TO_FIELD.items()}
            rows = _finish(new_ids, _delta_attributes(new), sums, cutoff)
            parts.append(rows)
            changed.append(rows)
    if not parts:
        empty = parquet.SNAPSHOT_SCHEMA.empty_table()
        return empty, empty
    out = pa.concat_tables(parts)
    if len(parts) > 1:
        out = out.take(pc.sort_indices(out["balance_id"]))
    changed_rows = pa.concat_tables(changed) if changed else parquet.SNAPSHOT_SCHEMA.empty_table()
    return out.combine_chunks(), changed_rows


class Counted:
    """Batches passed through unchanged, counting their rows (how many balances a delta touched)."""

    def __init__(self, batches):
        self._batches = batches
        self.rows = 0

    def __iter__(self):
        for batch in self._batches:
            self.rows += batch.num_rows
            yield batch


def roll(base_batches, delta_batches, cutoff: dt.datetime, batch_size: int):
    """Yield (rows, changed rows) for the whole partition, in ``balance_id`` order."""
    base = align.SortedStream(base_batches)
    delta = align.SortedStream(align.rechunk(delta_batches, batch_size))
    for base_chunk, delta_chunk in align.aligned(base, delta):
        rows, changed = roll_chunk(base_chunk, delta_chunk, cutoff)
        if rows.num_rows:
            yield rows, changed
