"""What a partition said before: its versions (generations) and reading one of them (time travel).

Every publish of a partition is a generation recorded in ``snapshot_index.partition_versions``
(when, which Dagster run, the watermark, rows changed, why) and carried by one version of the Delta
table ``balance_snapshots``. Inside the history window (``SNAPSHOT_HISTORY_DAYS``) the files of
every generation are kept, so any of them can be read: by Delta version, or as of an instant (the
table as a Delta reader saw it then). This module never imports dagster.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
from deltalake.exceptions import DeltaError

from snapshot_pipeline import db
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import delta, generations, index
from snapshot_pipeline.store.location import Store


class HistoryError(LookupError):
    """The asked version of a partition does not exist (or is older than the history window)."""


def versions(settings: Settings, date: dt.date) -> dict:
    """The recorded generations of partition ``date``, oldest first, the current one marked."""
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        found = generations.versions(conn, date) if index.ready(conn) else []
        current = index.manifest(conn, date) if found else None
    rows = []
    for version in found:
        row = version.as_dict()
        row["current"] = current is not None and current.generation == version.generation
        rows.append(row)
    return {"snapshot_date": date.isoformat(), "table": Store.at(settings.storage_uri).table_uri(delta.SNAPSHOTS.name),
            "history_days": settings.history_days, "versions": rows}


def delta_version_at(settings: Settings, at: dt.datetime) -> int:
    """The Delta table version a reader saw at instant ``at`` (aware): the newest committed at or before it."""
    table = delta.load(Store.at(settings.storage_uri), delta.SNAPSHOTS)
    if table is None:
        raise HistoryError(f"no snapshot table in {settings.storage_uri}")
    try:
        table.load_as_version(at.astimezone(dt.UTC))
    except DeltaError as exc:
        raise HistoryError(f"the snapshot table has no version at or before {at.isoformat()}"
                           f" (or it is older than the history window): {exc}") from None
    return table.version()


def read_version(settings: Settings, date: dt.date, *, version: int | None = None,
                 as_of: dt.datetime | None = None) -> tuple[int, pa.Table]:
    """Partition ``date`` as Delta version ``version`` (or as of ``as_of``; default: the latest) names it:
    (the Delta version read, its rows in ``balance_id`` order)."""
    if version is None and as_of is not None:
        version = delta_version_at(settings, as_of)
    try:
        table = delta.load(Store.at(settings.storage_uri), delta.SNAPSHOTS, version)
    except DeltaError as exc:
        raise HistoryError(f"version {version} of the snapshot table cannot be read (it may be older than the"
                           f" {settings.history_days}-day history window): {exc}") from None
    if table is None:
        raise HistoryError(f"no snapshot table in {settings.storage_uri}")
    read = table.version()
    try:
        return read, delta.read_partition(Store.at(settings.storage_uri), delta.SNAPSHOTS, date, version=read)
    except FileNotFoundError:
        raise HistoryError(f"partition {date} is not in version {read} of the snapshot table") from None
