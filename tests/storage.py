"""What a store holds, listed the same way on every backend (local disk, S3): a partition's objects, staging."""

from __future__ import annotations

import datetime as dt

import pyarrow.fs as pafs

from snapshot_pipeline.store import parquet
from snapshot_pipeline.store.location import Store


def partition_files(settings, date: dt.date) -> list[str]:
    """Every part file under ``date``'s partition directory (published or not)."""
    return parquet.list_partition(Store.at(settings.storage_uri), date)


def staged_files(settings) -> list[str]:
    """Every file left in the store's ``.staging`` area (empty once a run ended, whichever way)."""
    store = Store.at(settings.storage_uri)
    selector = pafs.FileSelector(store.staging_dir, allow_not_found=True, recursive=True)
    return [info.path for info in store.fs.get_file_info(selector) if info.type == pafs.FileType.File]
