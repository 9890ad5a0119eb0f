"""Set queries: every balance at an instant as one Arrow table, the snapshot core's roll-forward step run
from the latest published partition (its Parquet streamed, the journal since read by key)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from snapshot_pipeline import db, snapshot
from snapshot_pipeline.ledger import asof, journal
from snapshot_pipeline.query.errors import QueryError
from snapshot_pipeline.query.instants import MICROSECOND, iso_utc
from snapshot_pipeline.snapshot import merge
from snapshot_pipeline.store import index, published
from snapshot_pipeline.store import parquet as store

if TYPE_CHECKING:
    from snapshot_pipeline.query.engine import QueryEngine

OUTPUT_SCHEMA = pa.schema([f for f in store.SNAPSHOT_SCHEMA if f.name != "cutoff_at"])


def _published_anchor(engine: QueryEngine, at: dt.datetime) -> index.ManifestEntry | None:
    """The latest roll-forward partition with cutoff <= at whose Parquet file exists (None: genesis)."""
    def work(conn):
        if not engine._has_index(conn):
            return []
        return index.roll_forward_dates_at_or_before(conn, at, snapshot.ROLL_VERSION)

    fs, _ = store.resolve(engine.settings.storage_uri)
    for date in engine._index_query(work):
        entry = engine._index_query(lambda conn, date=date: index.manifest(conn, date))
        if published.present_paths(fs, engine.settings.storage_uri, entry) is not None:
            return entry
    return None


def balances_at_table(engine: QueryEngine, at: dt.datetime, ledger_id: str | None,
                      currency: str | None, count_replayed: bool = False) -> pa.Table:
    """Every balance at ``at``: the anchor partition rolled forward to ``at`` (the snapshot core's own step).

    The journal is read by key only (rows above the anchor's watermark and its pending set), so the cost
    is the anchor's Parquet plus the journal since its cutoff.
    """
    anchor = _published_anchor(engine, at)
    end = at + MICROSECOND  # effective <= at  <=>  effective < at + 1µs
    origin = (engine._index_query(lambda conn: snapshot.origin_of(conn, anchor)) if anchor is not None
              else journal.Origin.genesis())
    fs, _ = store.resolve(engine.settings.storage_uri)
    base_batches = (store.iter_files(fs, published.entry_paths(engine.settings.storage_uri, anchor),
                                     merge.BASE_COLUMNS, batch_rows=store.ROW_GROUP_ROWS)
                    if anchor is not None else iter([]))
    parts = []
    ledger = db.connect_arrow(engine.ledger_url)
    try:
        cur = ledger.cursor()
        try:
            view = journal.open_view(cur)
            step = journal.begin_step(cur, view, end, origin)
            delta = merge.Counted(journal.delta_reader(cur, end))
            for rows, _changed in merge.roll(base_batches, delta, end, store.ROW_GROUP_ROWS):
                parts.append(_filtered(rows, ledger_id, currency))
            cur.execute("COMMIT")
        except snapshot.AmountOverflow as exc:
            raise QueryError(str(exc)) from exc
        finally:
            asof.rollback_quietly(cur)
            cur.close()
    finally:
        ledger.close()
    table = pa.concat_tables(parts).select(OUTPUT_SCHEMA.names) if parts else OUTPUT_SCHEMA.empty_table()
    metadata = {
        "snapshot_pipeline.at": iso_utc(at),
        "snapshot_pipeline.anchor_date": anchor.snapshot_date.isoformat() if anchor else "",
        "snapshot_pipeline.anchor_cutoff": iso_utc(anchor.cutoff_at) if anchor else "",
        "snapshot_pipeline.replayed_balances": str(delta.rows),
    }
    if count_replayed:
        metadata["snapshot_pipeline.replayed_transactions"] = str(step.counted_rows)
    return table.cast(OUTPUT_SCHEMA).replace_schema_metadata(metadata)


def _filtered(rows: pa.Table, ledger_id: str | None, currency: str | None) -> pa.Table:
    mask = None
    for column, value in (("ledger_id", ledger_id), ("currency", currency)):
        if value is not None:
            condition = pc.fill_null(pc.equal(rows[column], value), False)
            mask = condition if mask is None else pc.and_(mask, condition)
    return rows if mask is None else rows.filter(mask)
