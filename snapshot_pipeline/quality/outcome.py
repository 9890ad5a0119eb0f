"""What every quality check returns, and how a check finds the partition it checks."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from snapshot_pipeline import db
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import catalog, index
from snapshot_pipeline.store.location import Store

SAMPLE_IDS = 10  # balance ids a failing check names


@dataclasses.dataclass
class Outcome:
    """Result of one check: ``passed``, numeric ``metrics`` (plotted in the UI) and ``details``."""

    passed: bool
    description: str
    metrics: dict[str, int | float] = dataclasses.field(default_factory=dict)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


class NotPublished(RuntimeError):
    """The partition has no manifest row or no Parquet file."""


def published_entry(settings: Settings, date: dt.date) -> index.ManifestEntry:
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        entry = index.manifest(conn, date) if index.ready(conn) else None
    if entry is None:
        raise NotPublished(f"partition {date} is not published (no manifest row in snapshot_index.partitions)")
    if catalog.present_paths(Store.at(settings.storage_uri), entry) is None:
        raise NotPublished(f"partition {date} has a manifest row but its Parquet files are missing from"
                           f" {settings.storage_uri}")
    return entry


def entry_files(settings: Settings, entry: index.ManifestEntry) -> list[str]:
    """The files of a partition :func:`published_entry` returned."""
    return catalog.entry_paths(Store.at(settings.storage_uri), entry)


def partition_batches(settings: Settings, date: dt.date, columns: list[str]):
    yield from catalog.iter_partition(settings, date, columns)
