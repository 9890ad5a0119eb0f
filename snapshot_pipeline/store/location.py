"""Where the store's files live: the storage URI resolved once into a filesystem, a root and the layout.

Layout under ``<root>`` (``SNAPSHOT_STORAGE_URI``: a local path or an object-store URI; DESIGN §4, §8)::

    balance_snapshots/                            the snapshots' Delta table (with its _delta_log/)
    balance_snapshots/snapshot_date=YYYY-MM-DD/   a partition's files: part-0000k-<token>.parquet
    reports/<report>/                             each report's Delta table
    .publish/                                     holder records of the runs holding a partition's lock
    .staging/                                     files staged outside the tables (sharded runs, CSV)

A :class:`Store` is built once per URI and process (:meth:`Store.at`) and handed to every writer and
reader of the store: they take its filesystem and ask it for paths, never the URI.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import os
from pathlib import Path

import pyarrow.fs as pafs

from snapshot_pipeline.names import DATASET

CONTROL_DIR = ".publish"
STAGING_DIR = ".staging"
REPORTS_DIR = "reports"


@dataclasses.dataclass(frozen=True)
class Store:
    """A storage root: its URI, the pyarrow filesystem that reaches it, the root path on that filesystem.

    Paths handed out are the filesystem's (absolute local paths; ``bucket/prefix/...`` for object
    stores); :meth:`display` turns one back into what a user reads (with the URI's scheme).
    """

    uri: str
    fs: pafs.FileSystem = dataclasses.field(compare=False, repr=False)
    root: str

    @classmethod
    def at(cls, uri: str) -> Store:
        """The store of ``uri``, resolved once per process (pyarrow filesystems are safe to share between
        threads). A local path is cached by what it names now (``~`` and a relative path as :meth:`open`
        expands them), so a later working directory gets its own store."""
        return _cached(uri, None if "://" in uri else os.path.abspath(os.path.expanduser(uri)))

    @classmethod
    def open(cls, uri: str) -> Store:
        """Resolve ``uri`` now (uncached): a local path becomes absolute (``~`` expanded, symlinks
        resolved); an object-store URI opens its filesystem (credentials from the standard environment)."""
        if "://" not in uri:
            return cls(uri, pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve()))
        fs, path = pafs.FileSystem.from_uri(uri)
        return cls(uri, fs, path.rstrip("/"))

    def path(self, *parts: str) -> str:
        """``<root>/<part>/...`` on the store's filesystem."""
        return "/".join([self.root, *parts])

    # ------------------------------------------------------------------------------------- the snapshots

    @property
    def dataset(self) -> str:
        """``<root>/balance_snapshots``: the snapshots' Delta table."""
        return self.path(DATASET)

    def partition_dir(self, date: dt.date) -> str:
        """``<root>/balance_snapshots/snapshot_date=YYYY-MM-DD``."""
        return f"{self.dataset}/snapshot_date={date.isoformat()}"

    def partition_paths(self, date: dt.date, files: list[str]) -> list[str]:
        """Filesystem paths of a partition's files as its manifest names them (by base name, in shard order)."""
        directory = self.partition_dir(date)
        return [f"{directory}/{os.path.basename(name)}" for name in files]

    # ------------------------------------------------------------------------------------------- tables

    def table_path(self, name: str) -> str:
        """A Delta table's directory (``name``: ``balance_snapshots``, ``reports/<report>``) as a path."""
        return self.path(name)

    def table_uri(self, name: str) -> str:
        """A Delta table as Delta readers name it (a local absolute path, or ``s3://bucket/prefix/name``)."""
        if "://" in self.uri:
            return f"{self.uri.rstrip('/')}/{name}"
        return self.table_path(name)

    def report_dir(self, report: str) -> str:
        """``<root>/reports/<report>``: a report's Delta table (or, for CSV exports, its directory)."""
        return self.path(REPORTS_DIR, report)

    @property
    def reports_dir(self) -> str:
        return self.path(REPORTS_DIR)

    # ------------------------------------------------------------------------------------- out of tables

    @property
    def control_dir(self) -> str:
        """``<root>/.publish``: holder records (outside every table)."""
        return self.path(CONTROL_DIR)

    @property
    def staging_dir(self) -> str:
        """``<root>/.staging``: files staged before they are moved into a table."""
        return self.path(STAGING_DIR)

    def remove_tree(self, path: str, attempts: int = 3) -> None:
        """Delete the directory ``path`` and all it holds, if it is there. A step of another process may
        create a file in it while it is deleted (the sharded run's steps remove their own late files): the
        deletion is tried again then."""
        for attempt in range(attempts):
            if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
                return
            try:
                self.fs.delete_dir(path)
                return
            except OSError:
                if attempt == attempts - 1:
                    raise

    def display(self, path: str) -> str:
        """The user-facing location of ``path`` (keeps the URI's scheme: ``s3://bucket/...``, ``file:///...``)."""
        if "://" not in self.uri:
            return path
        scheme = self.uri.split("://", 1)[0]
        return f"{scheme}://{path}" if scheme.lower() == "file" else f"{scheme}://{path.lstrip('/')}"


@functools.lru_cache(maxsize=64)
def _cached(uri: str, local_path: str | None) -> Store:
    """:meth:`Store.open`, once per URI (and, for a local path, per absolute path it names)."""
    return Store.open(uri)
