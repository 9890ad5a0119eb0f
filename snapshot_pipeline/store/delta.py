"""Delta Lake tables: the publication every reader sees (DESIGN §8).

``balance_snapshots`` and each report are Delta tables (delta-rs, the ``deltalake`` package) under
``SNAPSHOT_STORAGE_URI``, partitioned by one column. Files are written by our own streaming Parquet
writers (sorted, zstd, exact decimals); this module only commits them: :func:`replace_partition`
is **one Delta commit** that removes a partition's current files and adds the new ones, so every
reader of the table (DuckDB ``delta_scan``, polars, Spark, Trino, ``deltalake``) sees the old
partition or the new one, never a mix and never nothing.

A commit carries an application transaction (``txn``: app id + version) when the caller gives one:
``transaction_version`` then tells whether it already landed, which makes a replayed commit
idempotent (the recovery of :mod:`snapshot_pipeline.store.publication` relies on it). Concurrent commits
of other partitions are retried on a freshly loaded table; the caller serializes commits of one
partition (its partition lock).

Files leave storage only through :func:`vacuum`, after the history window (``SNAPSHOT_HISTORY_DAYS``):
within it every earlier version can be read (:func:`read_partition` with ``version``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import time
import uuid
from collections.abc import Mapping

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import tenacity
from deltalake import CommitProperties, DeltaTable, Transaction
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction

from snapshot_pipeline.names import DATASET
from snapshot_pipeline.store import parquet
from snapshot_pipeline.store.location import Store

CHECKPOINT_INTERVAL = 50  # a checkpoint every 50 commits: opening the table reads at most 50 JSON commits
COMMIT_ATTEMPTS = 30  # a commit that lost the race to another partition's commit is retried this often


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """A Delta table under the storage root: its directory, the files' schema and its partition column."""

    name: str  # path under the storage root, e.g. "balance_snapshots" or "reports/movements"
    schema: pa.Schema  # the columns of the files (the partition column is not in the files)
    partition_column: str
    partition_type: pa.DataType = pa.date32()

    @property
    def table_schema(self) -> pa.Schema:
        return self.schema.append(pa.field(self.partition_column, self.partition_type))


SNAPSHOTS = TableSpec(DATASET, parquet.SNAPSHOT_SCHEMA, "snapshot_date")


@dataclasses.dataclass(frozen=True)
class DeltaFile:
    """A finished Parquet file inside the table's partition directory, ready to be added."""

    path: str  # the filesystem path (as pyarrow's filesystem for the storage URI names it)
    size: int
    rows: int
    min_id: str | None = None  # the first and last balance_id (files are sorted by it): data skipping
    max_id: str | None = None


# ------------------------------------------------------------------------------------------------ location


def storage_options(store: Store) -> dict[str, str] | None:
    """delta-rs options for an object store: the standard AWS environment, HTTP allowed for a local
    endpoint, and S3 conditional writes (``If-None-Match``) as the commit's atomicity, no lock service."""
    if not store.uri.startswith(("s3://", "s3a://")):
        return None
    options = {"conditional_put": "etag"}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    return options


def partition_value(value: dt.date | str) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def relative_path(store: Store, spec: TableSpec, path: str) -> str:
    """``path`` relative to the table's directory (what the log records)."""
    root = store.table_path(spec.name).rstrip("/") + "/"
    if not path.startswith(root):
        raise ValueError(f"{path} is not inside the Delta table {root}")
    return path[len(root):]


# ------------------------------------------------------------------------------------------------ tables


def configuration(history_days: int) -> dict[str, str]:
    """Table properties: superseded files and log entries are kept for the history window; checkpoints."""
    window = f"interval {max(history_days, 1)} days"
    return {
        "delta.logRetentionDuration": window,
        "delta.deletedFileRetentionDuration": window,
        "delta.checkpointInterval": str(CHECKPOINT_INTERVAL),
    }


def exists(store: Store, spec: TableSpec) -> bool:
    return DeltaTable.is_deltatable(store.table_uri(spec.name), storage_options(store))


def load(store: Store, spec: TableSpec, version: int | None = None) -> DeltaTable | None:
    """The table at its latest (or a given) version; None when it was never created."""
    try:
        return DeltaTable(store.table_uri(spec.name), version=version, storage_options=storage_options(store))
    except TableNotFoundError:
        return None


def ensure(store: Store, spec: TableSpec, history_days: int) -> DeltaTable:
    """Open the table, creating it (version 0: schema, partitioning, properties) when missing."""
    table = load(store, spec)
    if table is not None:
        return table
    if "://" not in store.uri:
        os.makedirs(store.table_path(spec.name), exist_ok=True)
    try:
        return DeltaTable.create(store.table_uri(spec.name), spec.table_schema, mode="ignore",
                                 partition_by=[spec.partition_column], configuration=configuration(history_days),
                                 storage_options=storage_options(store))
    except Exception:  # another process created it first (a conditional write lost): open theirs
        table = load(store, spec)
        if table is None:
            raise
        return table


def tables_in(store: Store, directory: str) -> list[TableSpec]:
    """The Delta tables directly under ``<root>/<directory>`` (schema-less specs: vacuum needs no schema)."""
    found = []
    for info in store.fs.get_file_info(pafs.FileSelector(store.path(directory), allow_not_found=True)):
        if info.type == pafs.FileType.Directory:
            spec = TableSpec(f"{directory}/{info.base_name}", pa.schema([]), "")
            if exists(store, spec):
                found.append(spec)
    return found


def add_actions(table: DeltaTable) -> pa.Table:
    """The table's current files: ``path``, ``size_bytes``, ``num_records``, ``partition.<column>``."""
    return pa.table(table.get_add_actions(flatten=True))


def partition_files(table: DeltaTable, spec: TableSpec, value: dt.date | str) -> list[tuple[str, int]]:
    """(relative path, bytes) of the files the table's version names for one partition."""
    actions = add_actions(table)
    if actions.num_rows == 0:
        return []
    column = f"partition.{spec.partition_column}"
    wanted = partition_value(value)
    return [(row["path"], row["size_bytes"]) for row in actions.select(["path", "size_bytes", column]).to_pylist()
            if row[column] is not None and partition_value(row[column]) == wanted]


def _stats(file: DeltaFile) -> str:
    stats: dict = {"numRecords": file.rows}
    if file.min_id is not None and file.max_id is not None:
        stats.update(minValues={"balance_id": file.min_id}, maxValues={"balance_id": file.max_id},
                     nullCount={"balance_id": 0})
    return json.dumps(stats)


def _add(store: Store, spec: TableSpec, value: str, file: DeltaFile, now_ms: int) -> AddAction:
    return AddAction(relative_path(store, spec, file.path), file.size, {spec.partition_column: value},
                     now_ms, True, _stats(file))


# ------------------------------------------------------------------------------------------------ commits


def replace_partition(store: Store, spec: TableSpec, value: dt.date | str, files: list[DeltaFile], *,
                      history_days: int, app_id: str | None = None, app_version: int | None = None,
                      metadata: Mapping[str, object] | None = None) -> int:
    """One Delta commit: partition ``value`` becomes exactly ``files`` (none: the partition is retired).

    With ``app_id``/``app_version`` the commit records that application transaction, and is skipped
    when the table already records it (a replay): returns the version that carries it. Otherwise
    returns the new version.
    """
    value = partition_value(value)
    custom = {f"snapshot_pipeline.{k}": str(v) for k, v in (metadata or {}).items() if v is not None}
    custom["snapshot_pipeline.partition"] = value
    custom["snapshot_pipeline.commit_id"] = commit_id = uuid.uuid4().hex
    if app_id is not None:
        custom.update({"snapshot_pipeline.app_id": app_id, "snapshot_pipeline.app_version": str(app_version)})
    table = ensure(store, spec, history_days)  # one open; a retry only reads the log's new commits
    attempts = 0

    @tenacity.retry(retry=tenacity.retry_if_exception_type(CommitFailedError),
                    stop=tenacity.stop_after_attempt(COMMIT_ATTEMPTS),
                    wait=tenacity.wait_random_exponential(multiplier=0.02, max=1.0), reraise=True)
    def attempt() -> bool:
        nonlocal attempts
        attempts += 1
        if attempts > 1:
            table.update_incremental()  # another partition's commit took the version: re-read, then retry
        if app_id is not None:
            landed = table.transaction_version(app_id)
            if landed is not None and landed > (app_version or 0):
                raise RuntimeError(f"{spec.name}: the log already carries {app_id} at version {landed}, above"
                                   f" {app_version}: the index and the log disagree on the partition's generations")
            if landed == app_version:
                return False  # already committed (a replay): find its version below
        now_ms = int(time.time() * 1000)
        removes = [RemoveAction(path, True, now_ms, size, {spec.partition_column: value})
                   for path, size in partition_files(table, spec, value)]
        adds = [_add(store, spec, value, f, now_ms) for f in files]
        transactions = [Transaction(app_id, app_version)] if app_id is not None and app_version is not None else None
        table.create_write_transaction(
            [*removes, *adds], "append", spec.table_schema, partition_by=[spec.partition_column],
            commit_properties=CommitProperties(custom_metadata=custom, app_transactions=transactions,
                                               max_commit_retries=0))
        return True

    before = table.version()
    if attempt():
        found = _committed_version(table, before, "snapshot_pipeline.commit_id", commit_id)
    else:
        found = version_of(store, spec, "snapshot_pipeline.app_id", app_id, "snapshot_pipeline.app_version",
                           str(app_version))
    if found is None:
        raise RuntimeError(f"{spec.name}: commit of partition {value} landed but is not in the table's history")
    return found


def _committed_version(table: DeltaTable, before: int, key: str, value: str) -> int | None:
    """The version of the commit just made through ``table`` (opened at ``before``): among the commits
    since, the one whose metadata has ``key`` = ``value`` (usually the very next one)."""
    table.update_incremental()
    for commit in table.history(max(table.version() - before, 1)):
        if commit.get(key) == value:
            return int(commit["version"])
    return None


def create_with_partitions(store: Store, spec: TableSpec, partitions: Mapping[dt.date | str, list[DeltaFile]],
                           history_days: int, app_versions: Mapping[str, int]) -> int:
    """Create the table and add existing files as its partitions in one commit (converting a store
    published before Delta: no data is rewritten); returns the version of that commit."""
    table = ensure(store, spec, history_days)
    now_ms = int(time.time() * 1000)
    adds: list[AddAction | RemoveAction] = [_add(store, spec, partition_value(value), f, now_ms)
                                            for value, files in partitions.items() for f in files]
    commit_id = uuid.uuid4().hex
    table.create_write_transaction(
        adds, "append", spec.table_schema, partition_by=[spec.partition_column],
        commit_properties=CommitProperties(
            custom_metadata={"snapshot_pipeline.commit_id": commit_id, "snapshot_pipeline.reason": "converted"},
            app_transactions=[Transaction(a, v) for a, v in app_versions.items()]))
    found = version_of(store, spec, "snapshot_pipeline.commit_id", commit_id)
    assert found is not None
    return found


def transaction_version(store: Store, spec: TableSpec, app_id: str) -> int | None:
    """The latest version of application transaction ``app_id`` the table records (None: none)."""
    table = load(store, spec)
    return table.transaction_version(app_id) if table is not None else None


def version_of(store: Store, spec: TableSpec, *key_values: str | None) -> int | None:
    """The newest table version whose commit metadata has the given key/value pairs (k1, v1, k2, v2...):
    searched among the last 20 commits first (a commit just made), then the last 10,000."""
    table = load(store, spec)
    if table is None:
        return None
    pairs = list(zip(key_values[::2], key_values[1::2], strict=True))
    for limit in (20, 10_000):
        for commit in table.history(limit):
            if all(commit.get(str(key)) == value for key, value in pairs):
                return int(commit["version"])
    return None


def vacuum(store: Store, spec: TableSpec, history_days: int, dry_run: bool = False,
           full: bool = True) -> list[str]:
    """Delete files no version of the last ``history_days`` days names (and, ``full``, files no version ever
    named, once older than the window); returns them. The history stays readable inside the window."""
    table = load(store, spec)
    if table is None:
        return []
    return table.vacuum(retention_hours=history_days * 24, dry_run=dry_run, enforce_retention_duration=False,
                        full=full)


def checkpoint(store: Store, spec: TableSpec) -> None:
    """Write a checkpoint and drop log entries older than the log retention (also done every
    ``CHECKPOINT_INTERVAL`` commits by delta-rs itself)."""
    table = load(store, spec)
    if table is not None:
        table.create_checkpoint()
        table.cleanup_metadata()


# ------------------------------------------------------------------------------------------------ reading


def read_partition(store: Store, spec: TableSpec, value: dt.date | str, *, version: int | None = None,
                   columns: list[str] | None = None) -> pa.Table:
    """One partition as a version of the table names it (the latest by default), in file order."""
    table = load(store, spec, version)
    if table is None:
        raise FileNotFoundError(f"no Delta table {spec.name} in {store.uri}")
    files = sorted(path for path, _ in partition_files(table, spec, value))
    if not files:
        raise FileNotFoundError(f"{spec.name} version {table.version()} has no partition {partition_value(value)}")
    base = store.table_path(spec.name)
    dataset = pads.dataset([f"{base}/{path}" for path in files], schema=spec.schema, format="parquet",
                           filesystem=store.fs, partitioning=None)
    return dataset.to_table(columns=columns)
