"""Generations: every version of a partition the index has recorded
(``snapshot_index.partition_versions``), the Delta version that carries it, and what is not synced yet.

A generation is recorded in the publishing index transaction (:mod:`snapshot_pipeline.store.publication`);
its Delta version is set once the Delta commit is done (or replayed by the recovery).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import psycopg
from psycopg import sql

from snapshot_pipeline import db


@dataclasses.dataclass(frozen=True)
class PartitionVersion:
    """One generation of a partition, as recorded in ``snapshot_index.partition_versions``."""

    snapshot_date: dt.date
    generation: int
    files: list
    delta_version: int | None
    row_count: int
    changed_count: int
    max_transaction_id: int | None
    read_at: dt.datetime | None
    checksum: str | None
    dagster_run_id: str | None
    reason: str
    committed_at: dt.datetime | None = None
    synced_at: dt.datetime | None = None

    @property
    def retired(self) -> bool:
        return not self.files

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["snapshot_date"] = self.snapshot_date.isoformat()
        for key in ("read_at", "committed_at", "synced_at"):
            value = getattr(self, key)
            out[key] = value.replace(tzinfo=dt.UTC).isoformat() if value is not None else None
        out["retired"] = self.retired
        return out


_VERSION_FIELDS = [f.name for f in dataclasses.fields(PartitionVersion)]
_VERSION_SELECT = sql.SQL("SELECT {} FROM snapshot_index.partition_versions").format(
    sql.SQL(", ").join(map(sql.Identifier, _VERSION_FIELDS)))


def next_generation(conn: psycopg.Connection, date: dt.date) -> int:
    """The generation number the next publish (or retirement) of ``date`` takes."""
    return int(db.scalar(conn, "SELECT COALESCE(max(generation), 0) + 1 FROM snapshot_index.partition_versions"
                               " WHERE snapshot_date = %s", (date,)))


def record_version(conn: psycopg.Connection, version: PartitionVersion) -> None:
    """Within the caller's transaction: record a generation (its Delta version is set once committed)."""
    values = dataclasses.asdict(version)
    values.pop("committed_at")
    values.pop("synced_at")
    values["files"] = json.dumps(values["files"])
    columns = list(values)
    conn.execute(sql.SQL("INSERT INTO snapshot_index.partition_versions ({}) VALUES ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL(", ").join(sql.Placeholder(c) for c in columns)),
        values)


def versions(conn: psycopg.Connection, date: dt.date) -> list[PartitionVersion]:
    """Every recorded generation of ``date``, oldest first."""
    rows = conn.execute(_VERSION_SELECT + sql.SQL(" WHERE snapshot_date = %s ORDER BY generation"), (date,))
    return [PartitionVersion(**dict(zip(_VERSION_FIELDS, row, strict=True))) for row in rows]


def latest_version(conn: psycopg.Connection, date: dt.date) -> PartitionVersion | None:
    found = versions(conn, date)
    return found[-1] if found else None


def has_unconverted(conn: psycopg.Connection) -> bool:
    """Whether a manifest row predates the Delta table (generation 0: published before Delta, not converted)."""
    return bool(db.scalar(conn, "SELECT EXISTS (SELECT 1 FROM snapshot_index.partitions WHERE generation = 0)"))


def has_unsynced_manifest(conn: psycopg.Connection) -> bool:
    """Whether a manifest row's files are not carried by the Delta log yet (unconverted or unsynced)."""
    return bool(db.scalar(conn, "SELECT EXISTS (SELECT 1 FROM snapshot_index.partitions"
                                " WHERE delta_version IS NULL)"))


def unsynced_dates(conn: psycopg.Connection) -> list[dt.date]:
    """Partitions whose latest generation is not recorded in the Delta log yet."""
    if db.scalar(conn, "SELECT to_regclass('snapshot_index.partition_versions')") is None:
        return []
    return [row[0] for row in conn.execute(
        "SELECT v.snapshot_date FROM snapshot_index.partition_versions v WHERE v.delta_version IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM snapshot_index.partition_versions n"
        "                 WHERE n.snapshot_date = v.snapshot_date AND n.generation > v.generation)"
        " ORDER BY 1")]


def set_delta_version(conn: psycopg.Connection, date: dt.date, generation: int, delta_version: int) -> None:
    """Record that generation ``generation`` of ``date`` is Delta version ``delta_version``."""
    with conn.transaction():
        conn.execute("UPDATE snapshot_index.partition_versions SET delta_version = %s,"
                     " synced_at = (clock_timestamp() AT TIME ZONE 'UTC')"
                     " WHERE snapshot_date = %s AND generation = %s", (delta_version, date, generation))
        conn.execute("UPDATE snapshot_index.partitions SET delta_version = %s"
                     " WHERE snapshot_date = %s AND generation = %s", (delta_version, date, generation))


def prune_versions(conn: psycopg.Connection, before: dt.datetime) -> int:
    """Forget generations whose successor's Delta commit was recorded before ``before``: the Delta commit
    that superseded their files is older than the history window, so vacuum may remove them. The latest
    generation of a partition always stays (a retirement too): the next publish of the partition takes the
    next generation number, above the application transaction version the Delta log keeps for it."""
    return conn.execute("""
        DELETE FROM snapshot_index.partition_versions v
        WHERE EXISTS (SELECT 1 FROM snapshot_index.partition_versions n
                      WHERE n.snapshot_date = v.snapshot_date AND n.generation > v.generation
                        AND n.synced_at IS NOT NULL AND n.synced_at < %(before)s)
        """, {"before": before}).rowcount
