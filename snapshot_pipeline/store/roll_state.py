"""The roll-forward state of each partition (``snapshot_index.roll_state``): what the next partition reads
by key instead of scanning the journal (:mod:`snapshot_pipeline.ledger.journal` defines its columns).

Written by one COPY in the commit's transaction, beside the partition's manifest row, and read back by one
COPY straight into Arrow: no Python object per row. Its rows go with their partition's manifest row
(:func:`snapshot_pipeline.store.index.delete_manifests`).
"""

from __future__ import annotations

import datetime as dt
import io

import psycopg
import pyarrow as pa
import pyarrow.csv as pcsv
from psycopg import sql


def replace(conn: psycopg.Connection, date: dt.date, state: pa.Table) -> int:
    """Within the caller's transaction: the roll-forward state of ``date`` (an Arrow table whose columns are
    ``snapshot_index.roll_state``'s) replaces the old, by one COPY."""
    conn.execute("DELETE FROM snapshot_index.roll_state WHERE snapshot_date = %s", (date,))
    if state.num_rows == 0:
        return 0
    table = pa.table({"snapshot_date": pa.repeat(pa.scalar(date, pa.date32()), state.num_rows),
                      **{name: state[name] for name in state.column_names}})
    buffer = io.BytesIO()
    pcsv.write_csv(table, buffer, pcsv.WriteOptions(include_header=False))
    copy_sql = sql.SQL("COPY snapshot_index.roll_state ({}) FROM STDIN WITH (FORMAT csv)").format(
        sql.SQL(", ").join(map(sql.Identifier, table.column_names)))
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        copy.write(buffer.getvalue())
    return state.num_rows


def read(conn: psycopg.Connection, date: dt.date, schema: pa.Schema) -> pa.Table:
    """The roll-forward state recorded with partition ``date``: the columns of ``schema`` (an Arrow schema) in
    ``(kind, id)`` order, read by one COPY straight into Arrow (no Python object per row). A NULL stays null
    and an empty string stays empty."""
    copy_sql = sql.SQL("COPY (SELECT {} FROM snapshot_index.roll_state WHERE snapshot_date = {}"
                       " ORDER BY kind, id) TO STDOUT WITH (FORMAT csv)").format(
        sql.SQL(", ").join(map(sql.Identifier, schema.names)), sql.Placeholder())
    buffer = io.BytesIO()
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET LOCAL DateStyle TO ISO")  # COPY prints timestamps in the session's DateStyle
        with cur.copy(copy_sql, (date,)) as copy:
            for block in copy:
                buffer.write(block)
    if buffer.tell() == 0:
        return schema.empty_table()
    buffer.seek(0)
    return pcsv.read_csv(buffer, read_options=pcsv.ReadOptions(column_names=schema.names),
                         parse_options=pcsv.ParseOptions(newlines_in_values=True),
                         convert_options=pcsv.ConvertOptions(column_types=schema, null_values=[""],
                                                             strings_can_be_null=True,
                                                             quoted_strings_can_be_null=False))


class StateChanged(RuntimeError):
    """The partition was published again (or retired) since its manifest row was read: its stored state is of
    another generation."""


class Stored:
    """The roll-forward state of a published partition where it is kept, for a step whose ledger view is in the
    index's own database: :meth:`stage` copies it into the view's temp table without a round trip through the
    client (at 1M balances, 68k rows: its CSV read and Arrow ingest cost 0.3-0.6 s)."""

    def __init__(self, date: dt.date, generation: int, checksum: str) -> None:
        self.date, self.generation, self.checksum = date, generation, checksum  # of the manifest row read

    def stage(self, cur, table: str, schema: pa.Schema) -> None:
        """Inside the caller's open view (an ADBC cursor): create temp table ``table`` with the columns of
        ``schema`` (as an ingest of that Arrow schema creates them) and fill it with the state, text as
        :func:`read` returns it (``kind`` and ``amount`` as text). The view must hold the generation whose
        manifest row was read (its state is written with it, in one transaction), else :class:`StateChanged`."""
        cur.execute("SELECT generation, checksum FROM snapshot_index.partitions WHERE snapshot_date = $1::date",
                    parameters=(self.date.isoformat(),))
        row = cur.fetchone()
        if row is None or (int(row[0]), row[1]) != (self.generation, self.checksum):
            raise StateChanged(f"partition {self.date} was published again or retired while it was read")
        cur.adbc_ingest(table, schema.empty_table(), mode="create", temporary=True)
        cur.execute(f"INSERT INTO {table} ({', '.join(schema.names)})"
                    f" SELECT {', '.join(f'{name}::text' if name in _TEXT_CAST else name for name in schema.names)}"
                    " FROM snapshot_index.roll_state WHERE snapshot_date = $1::date",
                    parameters=(self.date.isoformat(),))


_TEXT_CAST = {"kind", "amount"}  # CHAR(1) and NUMERIC in the table, text in the state
