"""Set queries: every balance at an instant as one Arrow table, the snapshot core's roll-forward step run
from the latest published partition (its Parquet streamed, the journal since read by key)."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc

from snapshot_pipeline import db, snapshot
from snapshot_pipeline.ledger import asof, journal
from snapshot_pipeline.query.errors import QueryError
from snapshot_pipeline.query.instants import MICROSECOND, iso_utc
from snapshot_pipeline.snapshot import merge
from snapshot_pipeline.store import catalog, index, parquet
from snapshot_pipeline.store.location import Store

OUTPUT_SCHEMA = pa.schema([f for f in parquet.SNAPSHOT_SCHEMA if f.name != "cutoff_at"])


def balances_at_table(store: Store, ledger_url: str, at: dt.datetime, anchor: index.ManifestEntry | None,
                      origin: journal.Origin, ledger_id: str | None, currency: str | None,
                      count_replayed: bool = False) -> pa.Table:
    """Every balance at ``at``: the anchor partition (None: genesis) rolled forward to ``at`` (the snapshot
    core's own step), from ``origin``, the anchor's roll-forward state (the query engine finds both).

    The journal is read by key only (rows above the anchor's watermark and its pending set), so the cost
    is the anchor's Parquet plus the journal since its cutoff.
    """
    end = at + MICROSECOND  # effective <= at  <=>  effective < at + 1µs
    # the anchor's first rows are read on a thread while the journal is staged, the rest as the merge goes
    base_batches = catalog.read_ahead(store, anchor, merge.BASE_COLUMNS, parquet.ROW_GROUP_ROWS)
    try:
        parts, delta, replayed = _rolled(ledger_url, end, origin, base_batches, ledger_id, currency, count_replayed)
    finally:
        base_batches.close()
    table = pa.concat_tables(parts).select(OUTPUT_SCHEMA.names) if parts else OUTPUT_SCHEMA.empty_table()
    metadata = {
        "snapshot_pipeline.at": iso_utc(at),
        "snapshot_pipeline.anchor_date": anchor.snapshot_date.isoformat() if anchor else "",
        "snapshot_pipeline.anchor_cutoff": iso_utc(anchor.cutoff_at) if anchor else "",
        "snapshot_pipeline.replayed_balances": str(delta.rows),
    }
    if count_replayed:
        metadata["snapshot_pipeline.replayed_transactions"] = str(replayed)
    return table.cast(OUTPUT_SCHEMA).replace_schema_metadata(metadata)


def _rolled(ledger_url: str, end: dt.datetime, origin: journal.Origin, base_batches, ledger_id: str | None,
            currency: str | None, count_replayed: bool) -> tuple[list[pa.Table], merge.Counted, int | None]:
    """The base rows rolled forward to ``end`` in one view of the ledger: (the rows, the delta, journal rows)."""
    parts = []
    ledger = db.connect_arrow(ledger_url)
    try:
        cur = ledger.cursor()
        try:
            journal.open_view(cur)
            journal.stage_step(cur, end, origin)  # the legs only: no next state is computed for a query
            replayed = journal.staged_rows(cur) if count_replayed else None
            delta = merge.Counted(journal.delta_reader(cur))
            for rows, _changed in merge.roll(base_batches, delta, end, parquet.ROW_GROUP_ROWS):
                parts.append(_filtered(rows, ledger_id, currency))
            cur.execute("COMMIT")
        except snapshot.AmountOverflow as exc:
            raise QueryError(str(exc)) from exc
        finally:
            asof.rollback_quietly(cur)
            cur.close()
    finally:
        ledger.close()
    return parts, delta, replayed


def _filtered(rows: pa.Table, ledger_id: str | None, currency: str | None) -> pa.Table:
    mask = None
    for column, value in (("ledger_id", ledger_id), ("currency", currency)):
        if value is not None:
            condition = pc.fill_null(pc.equal(rows[column], value), False)
            mask = condition if mask is None else pc.and_(mask, condition)
    return rows if mask is None else rows.filter(mask)
