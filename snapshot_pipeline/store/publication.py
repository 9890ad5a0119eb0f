"""Publication: making a new generation of a snapshot partition visible, in the index and the Delta table.

Two stores hold a partition: the Postgres index (manifest row, index rows, roll-forward state,
``partition_versions``) and the Delta table ``<root>/balance_snapshots`` every other reader reads.
No single operation changes both, so the protocol (DESIGN §8, docs/publication.md) is:

1. the shard files are written to run-unique names inside the partition's directory
   (``snapshot_date=D/part-0000k-<token>.parquet``): no Delta version names them yet, so no Delta
   reader sees them (a sharded run stages them elsewhere and moves them in under the lock, step 2);
2. one index transaction writes the index rows, the manifest row (generation ``g``) and the
   ``partition_versions`` row naming the files, and COMMITs: **the commit point**. From here on
   ``balance_at``, ``balances_at`` and the next day's roll-forward use generation ``g``;
3. one Delta commit replaces partition ``D`` by those files, carrying the application transaction
   (``snapshot_pipeline.balance_snapshots.D``, ``g``); its version is then recorded in the index.
   Delta readers switch from generation ``g-1`` to ``g`` at this commit, whole.

A crash before 2 leaves files no generation names (orphans: deleted by the next holder of the
partition's lock). A crash between 2 and 3 leaves the index ahead of the log: the next holder of
the lock, the ``crash_recovery_sensor`` and ``doctor`` replay step 3 (:func:`sync_partition`), which
the application transaction makes idempotent (a commit already in the log is only recorded). Files
of earlier generations are never deleted here: superseded files stay for the history window and
only :func:`snapshot_pipeline.store.delta.vacuum` (retention) removes them.

Who converges after a crash, and how a run holds a partition: :mod:`snapshot_pipeline.store.recovery`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import psycopg
import pyarrow.fs as pafs

from snapshot_pipeline import faults
from snapshot_pipeline.store import delta, generations, index, parquet
from snapshot_pipeline.store.location import Store

logger = logging.getLogger(__name__)

CONVERTED = "converted"  # the reason of a generation (and of the Delta commit) that converted a pre-Delta store


# -------------------------------------------------------------------------------------------------- publish


class Publication:
    """One publish of a partition's shard files (see the module docstring).

    Use::

        publication = Publication(store, date, files)
        try:
            with conn.transaction():
                ...  # index rows, manifest row and partition_versions row naming publication.names
                publication.move_in()
        except BaseException:
            publication.abandon()
            raise
        publication.finish(conn, generation)  # the Delta commit
    """

    def __init__(self, store: Store, date: dt.date, files: list[parquet.StagedFile], *,
                 log: Callable[[str], None] | None = None):
        self.store = store
        self.date = date
        self.files = files
        self.log = log or logger.info
        self._moved: list[parquet.StagedFile] = []

    @property
    def names(self) -> list[str]:
        """The user-facing locations of the new files, in shard order (what the manifest records)."""
        return [self.store.display(f.final_path) for f in self.files]

    def move_in(self) -> None:
        """Move staged files (a sharded run's) into the partition's directory; call inside the index
        transaction. Files written in place need no move. No Delta reader sees them before step 3."""
        for staged in self.files:
            self._moved.append(staged)  # first: a move that fails half-way (S3: copied, not deleted) is withdrawn too
            staged.move_in()

    def finish(self, conn: psycopg.Connection, history_days: int) -> int:
        """After the index COMMIT: the Delta commit of the new generation; returns its Delta version."""
        version = sync_partition(self.store, conn, self.date, history_days, log=self.log)
        assert version is not None  # the generation just committed is not in the log yet, or is
        return version

    def abandon(self) -> None:
        """After a failure before or at the COMMIT: delete the new files (no generation names them).

        If this process dies first, the next holder of the partition's lock deletes them as orphans.
        """
        for staged in self.files:
            try:
                if staged in self._moved:
                    staged.withdraw()
                staged.abort()
            except Exception as exc:  # noqa: BLE001 - best effort; the next lock holder sweeps orphans
                self.log(f"partition {self.date}: could not remove {staged.final_path} ({exc}); left to the next run")


def app_id(date: dt.date) -> str:
    """The Delta application transaction id of partition ``date`` (its version is the generation)."""
    return f"snapshot_pipeline.{delta.SNAPSHOTS.name}.{date.isoformat()}"


def describe_files(fs: pafs.FileSystem, paths: list[str]) -> list[delta.DeltaFile]:
    """What a Delta add action records of each file (size, rows, first and last balance_id), from the
    files themselves: the same for a fresh publish and for a replay after a crash."""
    described = []
    for path, info in zip(paths, fs.get_file_info(paths), strict=True):
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(f"{path} is named by the snapshot index but missing from the store")
        rows, first, last = parquet.row_count_and_id_range(fs, path)
        described.append(delta.DeltaFile(path, int(info.size or 0), rows, first, last))
    return described


def sync_partition(store: Store, conn: psycopg.Connection, date: dt.date, history_days: int, *,
                   log: Callable[[str], None] | None = None) -> int | None:
    """Make the Delta table's partition ``date`` what the latest recorded generation says (step 3 of the
    protocol, replayable): returns the Delta version carrying it, or None when there was nothing to do.

    The caller holds ``date``'s partition lock.
    """
    latest = generations.latest_version(conn, date)
    if latest is None or latest.delta_version is not None:
        return None
    files = describe_files(store.fs, store.partition_paths(date, list(latest.files)))
    version = delta.replace_partition(
        store, delta.SNAPSHOTS, date, files, history_days=history_days, app_id=app_id(date),
        app_version=latest.generation,
        metadata={"generation": latest.generation, "dagster_run_id": latest.dagster_run_id, "reason": latest.reason,
                  "watermark": latest.max_transaction_id, "rows": latest.row_count,
                  "rows_changed": latest.changed_count, "checksum": latest.checksum})
    faults.pause_point("delta")
    generations.set_delta_version(conn, date, latest.generation, version)
    (log or logger.info)(f"partition {date}: generation {latest.generation} is Delta version {version}"
                         f" ({'retired' if latest.retired else f'{len(files)} file(s)'})")
    return version


def ensure_table(store: Store, conn: psycopg.Connection, history_days: int) -> None:
    """Create the Delta table on first use, and convert in place what the store published before Delta.

    Which partitions still need converting is the index's to say (manifest rows of generation 0), not the
    table's existence: a conversion that died half-way is finished by the next call. One commit adds
    every manifest-named file of those partitions (no data rewritten), each with its application
    transaction; a partition the log already carries (a commit whose index transaction died) is only
    recorded.
    """
    if not generations.has_unconverted(conn):
        if not delta.exists(store, delta.SNAPSHOTS):
            delta.ensure(store, delta.SNAPSHOTS, history_days)
        return
    with conn.transaction():
        index.lock_commits(conn)  # one converter at a time
        entries = [e for e in index.all_partitions(conn) if e.generation == 0]
        table = delta.ensure(store, delta.SNAPSHOTS, history_days)
        to_add: dict[dt.date | str, list[delta.DeltaFile]] = {}
        carried: list[dt.date] = []
        for entry in entries:
            paths = store.partition_paths(entry.snapshot_date, list(entry.files))
            if not parquet.all_present(store.fs, paths):
                logger.warning("partition %s: files missing, not converted", entry.snapshot_date)
                continue
            conn.execute("UPDATE snapshot_index.partitions SET generation = 1 WHERE snapshot_date = %s",
                         (entry.snapshot_date,))
            generations.record_version(conn, _version_of_entry(entry, 1, CONVERTED))
            if table.transaction_version(app_id(entry.snapshot_date)) is None:
                to_add[entry.snapshot_date] = describe_files(store.fs, paths)
            else:
                carried.append(entry.snapshot_date)
        versions: dict[dt.date | str, int | None] = {}
        if to_add:
            added = delta.create_with_partitions(store, delta.SNAPSHOTS, to_add, history_days,
                                                 {app_id(e.snapshot_date): 1 for e in entries
                                                  if e.snapshot_date in to_add})
            versions.update(dict.fromkeys(to_add, added))
        if carried:
            earlier = delta.version_of(store, delta.SNAPSHOTS, "snapshot_pipeline.reason", CONVERTED)
            versions.update(dict.fromkeys(carried, earlier))
        for date, recorded in versions.items():
            if recorded is not None:
                conn.execute("UPDATE snapshot_index.partition_versions SET delta_version = %s,"
                             " synced_at = (clock_timestamp() AT TIME ZONE 'UTC')"
                             " WHERE snapshot_date = %s AND generation = 1", (recorded, date))
                conn.execute("UPDATE snapshot_index.partitions SET delta_version = %s WHERE snapshot_date = %s",
                             (recorded, date))
        logger.info("converted %d published partition(s) to the Delta table", len(versions))


def _version_of_entry(entry: index.ManifestEntry, generation: int, reason: str) -> generations.PartitionVersion:
    return generations.PartitionVersion(
        snapshot_date=entry.snapshot_date, generation=generation, files=list(entry.files), delta_version=None,
        row_count=entry.row_count, changed_count=entry.changed_count, max_transaction_id=entry.max_transaction_id,
        read_at=entry.read_at, checksum=entry.checksum, dagster_run_id=entry.dagster_run_id, reason=reason)


def retirement(date: dt.date, generation: int) -> generations.PartitionVersion:
    """The ``partition_versions`` row of a partition retention removes (no files: the Delta commit removes
    the partition's files from the table's current version)."""
    return generations.PartitionVersion(snapshot_date=date, generation=generation, files=[], delta_version=None,
                                  row_count=0, changed_count=0, max_transaction_id=None, read_at=None,
                                  checksum=None, dagster_run_id=None, reason="retention")


def version_record(entry: index.ManifestEntry) -> generations.PartitionVersion:
    """The ``partition_versions`` row of a manifest entry being committed (its generation)."""
    return _version_of_entry(entry, entry.generation, entry.reason or "manual")
