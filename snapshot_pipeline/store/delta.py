"""Delta Lake tables: the publication every reader sees (DESIGN §8).

``balance_snapshots`` and each report are Delta tables (delta-rs, the ``deltalake`` package) under
``SNAPSHOT_STORAGE_URI``, partitioned by one column. Files are written by our own streaming Parquet
writers (sorted, zstd, exact decimals); this module only commits them: :func:`replace_partition`
is **one Delta commit** that removes a partition's current files and adds the new ones, so every
reader of the table (DuckDB ``delta_scan``, polars, Spark, Trino, ``deltalake``) sees the old
partition or the new one, never a mix and never nothing.

A commit carries an application transaction (``txn``: app id + version) when the caller gives one:
``transaction_version`` then tells whether it already landed, which makes a replayed commit
idempotent (the recovery of :mod:`snapshot_pipeline.store.publish` relies on it). Concurrent commits
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
import tenacity
from deltalake import CommitProperties, DeltaTable, Transaction
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction

from snapshot_pipeline.store import parquet as store

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


SNAPSHOTS = TableSpec("balance_snapshots", store.SNAPSHOT_SCHEMA, "snapshot_date")


@dataclasses.dataclass(frozen=True)
class DeltaFile:
    """A finished Parquet file inside the table's partition directory, ready to be added."""

    path: str  # the filesystem path (as pyarrow's filesystem for the storage URI names it)
    size: int
    rows: int
    min_id: str | None = None  # the first and last balance_id (files are sorted by it): data skipping
    max_id: str | None = None


# ------------------------------------------------------------------------------------------------ location


def table_path(storage_uri: str, spec: TableSpec) -> str:
    """The table's directory as a filesystem path (pyarrow's)."""
    return f"{store.resolve(storage_uri)[1]}/{spec.name}"


def table_uri(storage_uri: str, spec: TableSpec) -> str:
    """The table's URI as Delta readers name it (a local absolute path, or ``s3://bucket/prefix/name``)."""
    if "://" in storage_uri:
        return f"{storage_uri.rstrip('/')}/{spec.name}"
    return table_path(storage_uri, spec)


def storage_options(storage_uri: str) -> dict[str, str] | None:
    """delta-rs options for an object store: the standard AWS environment, HTTP allowed for a local
    endpoint, and S3 conditional writes (``If-None-Match``) as the commit's atomicity, no lock service."""
    if not storage_uri.startswith(("s3://", "s3a://")):
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


def relative_path(storage_uri: str, spec: TableSpec, path: str) -> str:
    """``path`` relative to the table's directory (what the log records)."""
    root = table_path(storage_uri, spec).rstrip("/") + "/"
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


def exists(storage_uri: str, spec: TableSpec) -> bool:
    return DeltaTable.is_deltatable(table_uri(storage_uri, spec), storage_options(storage_uri))


def load(storage_uri: str, spec: TableSpec, version: int | None = None) -> DeltaTable | None:
    """The table at its latest (or a given) version; None when it was never created."""
    try:
        return DeltaTable(table_uri(storage_uri, spec), version=version, storage_options=storage_options(storage_uri))
    except TableNotFoundError:
        return None


def ensure(storage_uri: str, spec: TableSpec, history_days: int) -> DeltaTable:
    """Open the table, creating it (version 0: schema, partitioning, properties) when missing."""
    table = load(storage_uri, spec)
    if table is not None:
        return table
    if "://" not in storage_uri:
        os.makedirs(table_path(storage_uri, spec), exist_ok=True)
    try:
        return DeltaTable.create(table_uri(storage_uri, spec), spec.table_schema, mode="ignore",
                                 partition_by=[spec.partition_column], configuration=configuration(history_days),
                                 storage_options=storage_options(storage_uri))
    except Exception:  # another process created it first (a conditional write lost): open theirs
        table = load(storage_uri, spec)
        if table is None:
            raise
        return table


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


def _add(storage_uri: str, spec: TableSpec, value: str, file: DeltaFile, now_ms: int) -> AddAction:
    return AddAction(relative_path(storage_uri, spec, file.path), file.size, {spec.partition_column: value},
                     now_ms, True, _stats(file))


# ------------------------------------------------------------------------------------------------ commits


def replace_partition(storage_uri: str, spec: TableSpec, value: dt.date | str, files: list[DeltaFile], *,
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
    table = ensure(storage_uri, spec, history_days)  # one open; a retry only reads the log's new commits
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
        adds = [_add(storage_uri, spec, value, f, now_ms) for f in files]
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
        found = version_of(storage_uri, spec, "snapshot_pipeline.app_id", app_id, "snapshot_pipeline.app_version",
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


def create_with_partitions(storage_uri: str, spec: TableSpec, partitions: Mapping[dt.date | str, list[DeltaFile]],
                           history_days: int, app_versions: Mapping[str, int]) -> int:
    """Create the table and add existing files as its partitions in one commit (converting a store
    published before Delta: no data is rewritten); returns the version of that commit."""
    table = ensure(storage_uri, spec, history_days)
    now_ms = int(time.time() * 1000)
    adds: list[AddAction | RemoveAction] = [_add(storage_uri, spec, partition_value(value), f, now_ms)
                                            for value, files in partitions.items() for f in files]
    commit_id = uuid.uuid4().hex
    table.create_write_transaction(
        adds, "append", spec.table_schema, partition_by=[spec.partition_column],
        commit_properties=CommitProperties(
            custom_metadata={"snapshot_pipeline.commit_id": commit_id, "snapshot_pipeline.reason": "converted"},
            app_transactions=[Transaction(a, v) for a, v in app_versions.items()]))
    found = version_of(storage_uri, spec, "snapshot_pipeline.commit_id", commit_id)
    assert found is not None
    return found


def transaction_version(storage_uri: str, spec: TableSpec, app_id: str) -> int | None:
    """The latest version of application transaction ``app_id`` the table records (None: none)."""
    table = load(storage_uri, spec)
    return table.transaction_version(app_id) if table is not None else None


def version_of(storage_uri: str, spec: TableSpec, *key_values: str | None) -> int | None:
    """The newest table version whose commit metadata has the given key/value pairs (k1, v1, k2, v2...):
    searched among the last 20 commits first (a commit just made), then the last 10,000."""
    table = load(storage_uri, spec)
    if table is None:
        return None
    pairs = list(zip(key_values[::2], key_values[1::2], strict=True))
    for limit in (20, 10_000):
        for commit in table.history(limit):
            if all(commit.get(str(key)) == value for key, value in pairs):
                return int(commit["version"])
    return None


def vacuum(storage_uri: str, spec: TableSpec, history_days: int, dry_run: bool = False,
           full: bool = True) -> list[str]:
    """Delete files no version of the last ``history_days`` days names (and, ``full``, files no version ever
    named, once older than the window); returns them. The history stays readable inside the window."""
    table = load(storage_uri, spec)
    if table is None:
        return []
    return table.vacuum(retention_hours=history_days * 24, dry_run=dry_run, enforce_retention_duration=False,
                        full=full)


def checkpoint(storage_uri: str, spec: TableSpec) -> None:
    """Write a checkpoint and drop log entries older than the log retention (also done every
    ``CHECKPOINT_INTERVAL`` commits by delta-rs itself)."""
    table = load(storage_uri, spec)
    if table is not None:
        table.create_checkpoint()
        table.cleanup_metadata()


# ------------------------------------------------------------------------------------------------ reading


def read_partition(storage_uri: str, spec: TableSpec, value: dt.date | str, *, version: int | None = None,
                   columns: list[str] | None = None) -> pa.Table:
    """One partition as a version of the table names it (the latest by default), in file order."""
    table = load(storage_uri, spec, version)
    if table is None:
        raise FileNotFoundError(f"no Delta table {spec.name} in {storage_uri}")
    files = sorted(path for path, _ in partition_files(table, spec, value))
    if not files:
        raise FileNotFoundError(f"{spec.name} version {table.version()} has no partition {partition_value(value)}")
    fs, _ = store.resolve(storage_uri)
    base = table_path(storage_uri, spec)
    dataset = pads.dataset([f"{base}/{path}" for path in files], schema=spec.schema, format="parquet",
                           filesystem=fs, partitioning=None)
    return dataset.to_table(columns=columns)
