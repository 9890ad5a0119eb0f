"""Read indexes on ``blnk.transactions`` that make per-balance replay cheap (``snapshot-pipeline ledger-indexes``).

snapshot_pipeline never changes a user's ledger on its own: this module only lists the indexes,
says which exist, and creates the missing ones with ``CREATE INDEX CONCURRENTLY`` (no write lock
on the journal) when the command is run with ``--create``.

* Blnk's own ``(source)``, ``(destination)`` and ``(parent_transaction)`` indexes: without them a
  replay scans the journal;
* ``(source|destination, COALESCE(effective_date, created_at))``: the legs of one balance in an
  effective-time window, so a replay reads only the legs since its snapshot anchor;
* ``(source|destination, id)``: the legs of one balance recorded after the anchor's watermark
  (late and backdated rows).
"""

from __future__ import annotations

import dataclasses

import psycopg
from psycopg import sql

from snapshot_pipeline import db

TABLE = "transactions"
SCHEMA = "blnk"


@dataclasses.dataclass(frozen=True)
class ReadIndex:
    name: str
    columns: str  # the key list as written in the DDL
    purpose: str
    leading_column: str | None = None  # Blnk's single-column indexes: any valid index on it counts

    def ddl(self) -> str:
        return f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {self.name} ON {SCHEMA}.{TABLE} ({self.columns})"


READ_INDEXES = (
    ReadIndex("idx_transactions_source", "source", "Blnk's: legs by source", "source"),
    ReadIndex("idx_transactions_destination", "destination", "Blnk's: legs by destination", "destination"),
    ReadIndex("idx_transactions_parent_transaction", "parent_transaction",
              "Blnk's: commits and voids of an inflight transaction", "parent_transaction"),
    ReadIndex("idx_snapshot_transactions_source_effective",
              "source, (COALESCE(effective_date, created_at))",
              "replay: debit legs of a balance in an effective-time window"),
    ReadIndex("idx_snapshot_transactions_destination_effective",
              "destination, (COALESCE(effective_date, created_at))",
              "replay: credit legs of a balance in an effective-time window"),
    ReadIndex("idx_snapshot_transactions_source_id", "source, id",
              "replay: debit legs recorded after a snapshot's watermark"),
    ReadIndex("idx_snapshot_transactions_destination_id", "destination, id",
              "replay: credit legs recorded after a snapshot's watermark"),
)

_EXISTING_SQL = """
SELECT c.relname, i.indisvalid, a.attname
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]
WHERE n.nspname = %s AND t.relname = %s
"""


def status(conn: psycopg.Connection) -> list[dict]:
    """Every read index with its state: ``present``, ``missing`` or ``invalid`` (a failed concurrent build)."""
    if not db.scalar(conn, "SELECT to_regclass('blnk.transactions') IS NOT NULL"):
        raise LookupError("blnk.transactions does not exist in this database")
    rows = conn.execute(_EXISTING_SQL, (SCHEMA, TABLE)).fetchall()
    by_name = {name: valid for name, valid, _ in rows}
    valid_leading = {column for _, valid, column in rows if valid and column}
    out = []
    for index in READ_INDEXES:
        if index.name in by_name:
            state = "present" if by_name[index.name] else "invalid"
        elif index.leading_column and index.leading_column in valid_leading:
            state = "present"
        else:
            state = "missing"
        out.append({"name": index.name, "state": state, "purpose": index.purpose, "ddl": index.ddl()})
    return out


def create_missing(conn: psycopg.Connection, log=print) -> list[str]:
    """Create every missing index concurrently (an invalid leftover is dropped first). Returns the names built.

    ``conn`` must be in autocommit mode: ``CREATE INDEX CONCURRENTLY`` cannot run in a transaction.
    """
    if not conn.autocommit:
        raise ValueError("create_missing needs an autocommit connection")
    built = []
    for entry in status(conn):
        if entry["state"] == "present":
            continue
        name = sql.Identifier(SCHEMA, entry["name"])
        if entry["state"] == "invalid":
            log(f"dropping the invalid index {entry['name']} left by a failed build")
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(name))
        log(f"creating {entry['name']} (CONCURRENTLY; the journal stays writable)")
        conn.execute(entry["ddl"])
        built.append(entry["name"])
    if built:
        conn.execute("ANALYZE blnk.transactions")
    return built
