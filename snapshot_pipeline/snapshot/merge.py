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
from collections.abc import Iterator

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
BASE_SCHEMA = pa.schema([f for f in parquet.SNAPSHOT_SCHEMA if f.name != "cutoff_at"])
BASE_COLUMNS = BASE_SCHEMA.names


def _column(table: pa.Table, name: str) -> pa.Array:
    """One column as one array; a column of one chunk is that chunk (``combine_chunks`` would copy it)."""
    column = table[name]
    if not isinstance(column, pa.ChunkedArray):
        return column
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _delta_attributes(delta: pa.Table) -> dict[str, pa.Array]:
    return {name: _column(delta, name) for name in ATTRIBUTES}


def _prepared(batches) -> Iterator[pa.Table]:
    """The delta's batches as the merge adds them: the four sums (exact text) as wide decimals and the
    creation time in UTC, converted once per batch as it arrives, not once per chunk of ``batch_size`` rows."""
    for batch in batches:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        ids = _column(table, "balance_id")
        for name, field in DELTA_TO_FIELD.items():
            table = table.set_column(table.schema.get_field_index(name), name,
                                     amounts.widen(_column(table, name), ids, field))
        at = table.schema.get_field_index("balance_created_at")
        yield table.set_column(at, "balance_created_at", pc.cast(table["balance_created_at"], parquet.UTC_TS))


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


def _updated(base: pa.Table, delta: pa.Table, positions: pa.Array, entering: pa.Array | None, cutoff: dt.datetime
             ) -> tuple[pa.Table, pa.Table]:
    """Base rows with the delta applied where a delta row matches: (all rows, the changed ones).

    ``positions`` gives each base row's delta row (null: none). Rows without a delta row pass through untouched
    (no decimal arithmetic); only matched rows are widened, added to, narrowed back and given the ledger's
    current attributes. ``entering`` marks the rows that enter the snapshot here (changed even when their sums
    are zero); None: no row enters. Every delta row has its base row.
    """
    ids = _column(base, "balance_id")
    matched = pc.is_valid(positions)
    rows = pc.filter(positions, matched)
    hit = base.filter(matched)
    hit_ids = _column(hit, "balance_id")
    known = pc.take(_column(delta, "known"), rows)
    fresh = _delta_attributes(delta)
    attributes = {name: pc.if_else(known, pc.take(fresh[name], rows), _column(hit, name)) for name in ATTRIBUTES}
    sums = {}
    touched = pc.filter(entering, matched) if entering is not None else pa.repeat(pa.scalar(False), len(rows))
    for name, field in DELTA_TO_FIELD.items():
        add = pc.take(_column(delta, name), rows)
        sums[field] = pc.add(amounts.widen(_column(hit, field)), add)
        touched = pc.or_(touched, pc.not_equal(add, pa.scalar(0, amounts.WIDE)))
    new_hit = _finish(hit_ids, attributes, sums, cutoff)
    columns = []
    for field in parquet.SNAPSHOT_SCHEMA:
        if field.name == "cutoff_at":
            columns.append(pa.repeat(pa.scalar(cutoff.replace(tzinfo=dt.UTC), parquet.UTC_TS), len(ids)))
        else:
            columns.append(_replaced(_column(base, field.name), matched, _column(hit, field.name),
                                     _column(new_hit, field.name)))
    return pa.Table.from_arrays(columns, schema=parquet.SNAPSHOT_SCHEMA), new_hit.filter(touched)


def _replaced(column: pa.Array, matched: pa.Array, old: pa.Array, new: pa.Array) -> pa.Array:
    """``column`` with its ``matched`` rows (now ``old``) set to ``new``; the column itself when nothing differs.

    The ids, and most chunks' attributes, are what the base holds: rebuilding a string column costs ~40 ms per
    million rows, comparing the matched rows a fraction of it (``equals`` counts nulls and types too)."""
    if new.equals(old):
        return column
    return pc.replace_with_mask(column, matched, new)


def _with_cutoff(base: pa.Table, cutoff: dt.datetime) -> pa.Table:
    """Base rows as they are, stamped with this partition's cutoff."""
    n = base.num_rows
    columns = [_column(base, f.name) if f.name != "cutoff_at" else
               pa.repeat(pa.scalar(cutoff.replace(tzinfo=dt.UTC), parquet.UTC_TS), n)
               for f in parquet.SNAPSHOT_SCHEMA]
    return pa.Table.from_arrays(columns, schema=parquet.SNAPSHOT_SCHEMA)


def _entering_rows(delta: pa.Table) -> pa.Table:
    """Delta rows of balances the base does not hold, as base rows (:data:`BASE_SCHEMA`) at zero with the
    delta's attributes: the delta's sums are then added to them as to any base row."""
    zero = pa.repeat(pa.scalar(0, parquet.AMOUNT), delta.num_rows)
    attributes = _delta_attributes(delta)
    return pa.Table.from_arrays(
        [_column(delta, "balance_id"), *[attributes[name] for name in ATTRIBUTES[:4]],
         *[zero for _ in parquet.AMOUNT_COLUMNS], attributes["balance_created_at"]], schema=BASE_SCHEMA)


def _joined(base: pa.Table, positions: pa.Array, arriving: pa.Table, arriving_positions: pa.Array
            ) -> tuple[pa.Table, pa.Array, pa.Array]:
    """The base rows and the entering ones (:func:`_entering_rows`) in key order, column by column under
    :data:`BASE_SCHEMA`, with each row's delta row (``positions`` for the base's, ``arriving_positions`` for
    the entering ones) and which of them enter."""
    joined = pa.Table.from_arrays([pa.concat_arrays([_column(base, name), _column(arriving, name)])
                                   for name in BASE_COLUMNS], schema=BASE_SCHEMA)
    order = pc.sort_indices(joined["balance_id"])
    flags = pa.concat_arrays([pa.repeat(pa.scalar(False), base.num_rows),
                              pa.repeat(pa.scalar(True), arriving.num_rows)])
    rows = pa.concat_arrays([positions, arriving_positions.cast(positions.type)])
    return joined.take(order), pc.take(rows, order), pc.take(flags, order)


def roll_chunk(base: pa.Table | None, delta: pa.Table | None, cutoff: dt.datetime) -> tuple[pa.Table, pa.Table]:
    """One aligned chunk -> (rows of the new partition, the changed ones among them).

    ``delta`` is prepared (:func:`_prepared`: wide sums, UTC creation times). Balances entering here (delta rows
    the base does not hold) join the base rows at zero, in key order, so that one pass adds every delta row to
    its row; with no base rows, the delta's rows are the chunk's rows."""
    has_delta = delta is not None and delta.num_rows > 0
    has_base = base is not None and base.num_rows > 0
    if not has_delta:
        empty = parquet.SNAPSHOT_SCHEMA.empty_table()
        return (_with_cutoff(base, cutoff).combine_chunks() if has_base and base is not None else empty), empty
    assert delta is not None
    delta_ids = _column(delta, "balance_id")
    if not has_base or base is None:  # every balance enters (a genesis, or past the base's last key)
        sums = {field: _column(delta, name) for name, field in DELTA_TO_FIELD.items()}
        rows = _finish(delta_ids, _delta_attributes(delta), sums, cutoff)
        return rows, rows
    # each base row's delta row; the delta rows no base row matched enter here
    positions, new_rows = align.match(_column(base, "balance_id"), delta_ids)
    entering = None
    if len(new_rows):
        base, positions, entering = _joined(base, positions, _entering_rows(delta.take(new_rows)), new_rows)
    rows, touched = _updated(base, delta, positions, entering, cutoff)
    return rows.combine_chunks(), touched


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
    delta = align.SortedStream(align.rechunk(_prepared(delta_batches), batch_size))
    for base_chunk, delta_chunk in align.aligned(base, delta):
        rows, changed = roll_chunk(base_chunk, delta_chunk, cutoff)
        if rows.num_rows:
            yield rows, changed
