"""What every report shares: where it is written, how it is published, which snapshot it reads.

Layout: each report is a Delta table partitioned by its key::

    <SNAPSHOT_STORAGE_URI>/reports/<report>/_delta_log/
    <SNAPSHOT_STORAGE_URI>/reports/<report>/<key>=<value>/part-00000-<uuid>.parquet

Each partition file is streamed by :class:`snapshot_pipeline.store.parquet.PartitionWriter` to a
unique name no Delta version names yet, then one Delta commit replaces the partition
(:func:`snapshot_pipeline.store.delta.replace_partition`): a report partition appears whole or not
at all to every reader, and a re-run replaces it atomically while the previous version stays
readable for the history window. Amounts stay exact: ``decimal128(38, 0)`` on disk,
``decimal256`` while adding.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.fs as pafs

from snapshot_pipeline import amounts, calendar
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import catalog, delta, parquet, records
from snapshot_pipeline.store.location import REPORTS_DIR, Store

READ_BATCH_ROWS = parquet.READ_BATCH_ROWS


class ReportError(RuntimeError):
    """A report cannot be computed; nothing was written."""


# --------------------------------------------------------------------------------------------- layout


def partition_path(store: Store, report: str, key: str, value: str) -> str:
    """A new, unique file of the report's partition (no Delta version names it until its commit)."""
    return f"{store.report_dir(report)}/{key}={value}/part-00000-{uuid.uuid4().hex[:16]}.parquet"


def table_spec(report: str, key: str, schema: pa.Schema) -> delta.TableSpec:
    """The report's Delta table: partitioned by ``key`` (a date for ``snapshot_date``, else a string)."""
    return delta.TableSpec(f"{REPORTS_DIR}/{report}", schema, key,
                           pa.date32() if key == "snapshot_date" else pa.string())


# ----------------------------------------------------------------------------------------- the source


@dataclasses.dataclass(frozen=True)
class SnapshotPartition:
    """A published ``balance_snapshots`` partition, described by its Parquet footer."""

    snapshot_date: dt.date
    cutoff: dt.datetime  # naive UTC
    timezone: str
    watermark: int
    transaction_count: int
    max_balance_id: int
    paths: list[str]  # its files, in shard order (as the manifest names them)
    fs: pafs.FileSystem

    @classmethod
    def find(cls, settings: Settings, date: dt.date) -> SnapshotPartition | None:
        """The partition ``date`` if it is published and its files exist in the store, else None."""
        paths = catalog.paths(settings, date)
        if paths is None:
            return None
        fs = Store.at(settings.storage_uri).fs
        meta = parquet.read_file_metadata(fs, paths[0])
        cutoff = dt.datetime.fromisoformat(meta["cutoff"]).astimezone(dt.UTC).replace(tzinfo=None)
        if meta.get("timezone") != settings.timezone or cutoff != calendar.cutoff(date, settings.timezone):
            raise ReportError(
                f"balance_snapshots {date} was taken in time zone {meta.get('timezone')!r} (cutoff {cutoff}Z);"
                f" reports run in {settings.timezone!r}: re-materialize it or set SNAPSHOT_TIMEZONE"
            )
        return cls(
            snapshot_date=date,
            cutoff=cutoff,
            timezone=meta["timezone"],
            watermark=int(meta["watermark"]),
            transaction_count=int(meta["watermark_transaction_count"]),
            max_balance_id=int(meta["watermark_max_balance_id"]),
            paths=paths,
            fs=fs,
        )

    @classmethod
    def load(cls, settings: Settings, date: dt.date, needed_by: str) -> SnapshotPartition:
        """The partition ``date``, or :class:`ReportError` saying it must be materialized first."""
        found = cls.find(settings, date)
        if found is None:
            raise ReportError(
                f"{needed_by} needs balance_snapshots {date}, which is not materialized in"
                f" {settings.storage_uri}: materialize that partition first"
            )
        return found

    def batches(self, columns: list[str], batch_rows: int = READ_BATCH_ROWS):
        """The partition's rows in file (``balance_id``) order, one Arrow table per batch."""
        for batch in parquet.iter_files(self.fs, self.paths, columns, batch_rows):
            yield pa.Table.from_batches([batch])


# ---------------------------------------------------------------------------------------- arithmetic


def wide(column) -> pa.Array:
    """Exact amounts (text or decimal) as decimal256, room to add without overflow."""
    try:
        return amounts.widen(column)
    except amounts.AmountOverflow as exc:
        raise ReportError(str(exc)) from exc


def zeros(n: int) -> pa.Array:
    return amounts.zeros(n)


def narrow(values: pa.Array, labels: pa.Array, name: str) -> pa.Array:
    """decimal256 -> decimal128(38, 0), failing with the first row (by label) whose value does not fit."""
    try:
        return amounts.narrow(values, labels, name)
    except amounts.AmountOverflow as exc:
        raise ReportError(str(exc)) from exc


def first_difference(mask: pa.Array, labels: pa.Array) -> str | None:
    """The label of the first row where ``mask`` is true, or None."""
    if not pc.any(mask).as_py():
        return None
    return labels[pc.index(mask, True).as_py()].as_py()


# ------------------------------------------------------------------------------------------- writing


@dataclasses.dataclass
class ReportResult:
    """What one report partition holds; becomes Dagster metadata."""

    report: str
    partition: str
    rows: int
    path: str
    bytes_written: int
    duration_ms: int
    metrics: dict
    csv_path: str | None = None


def convert_report(store: Store, spec: delta.TableSpec, history_days: int, skip: str) -> None:
    """A report written before its Delta table existed: its partitions' files become the table's first
    version, in place (no data rewritten), so no partition is lost to Delta readers (or to vacuum).
    ``skip``: the file being published now (its own commit adds it)."""
    if delta.exists(store, spec):
        return
    root = store.table_path(spec.name)
    partitions: dict[dt.date | str, list[delta.DeltaFile]] = {}
    for info in store.fs.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=True)):
        key, _, value = info.path.rsplit("/", 2)[-2].partition("=")
        if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet") or info.path == skip \
                or key != spec.partition_column:
            continue
        rows = parquet.count_rows(store.fs, [info.path])
        partitions.setdefault(value, []).append(delta.DeltaFile(info.path, int(info.size or 0), rows))
    if partitions:
        delta.create_with_partitions(store, spec, partitions, history_days, {})


class ReportWriter:
    """One report partition: streamed into a new Parquet file, then published by one Delta commit.

    A context manager: whatever fails inside the ``with`` block (the writing or the publish), the
    partition's new file is deleted and the failure raised; the published partition's
    :class:`ReportResult` comes from :meth:`result`."""

    def __init__(self, settings: Settings, report: str, key: str, value: str, schema: pa.Schema,
                 date: dt.date, metadata: dict[str, str]):
        self.store = Store.at(settings.storage_uri)
        self.history_days = settings.history_days
        self.spec = table_spec(report, key, schema)
        self.value = value
        self.final_path = partition_path(self.store, report, key, value)
        self._writer = parquet.PartitionWriter(
            self.store, date, {"report": report, key: value, **metadata},
            schema=schema, final_path=self.final_path,
        )
        self.schema = schema
        self.report = report
        self.delta_version: int | None = None
        self.path: str | None = None  # where publish() made it visible (a display path)
        self.size = 0

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            self.abort()

    @property
    def rows(self) -> int:
        return self._writer.rows

    def write(self, table: pa.Table) -> None:
        for batch in table.cast(self.schema).to_batches():
            self._writer.write(batch)

    def publish(self) -> tuple[str, int]:
        """Make the partition visible (one Delta commit replacing it); returns (path, bytes)."""
        size, _ = self._writer.close({})
        convert_report(self.store, self.spec, self.history_days, skip=self.final_path)
        self.delta_version = delta.replace_partition(
            self.store, self.spec, self.value, [delta.DeltaFile(self.final_path, size, self._writer.rows)],
            history_days=self.history_days)
        self.path, self.size = self.store.display(self.final_path), size
        return self.path, size

    def result(self, partition: str, started: float, metrics: dict, csv_path: str | None = None) -> ReportResult:
        """The result of the partition :meth:`publish` published (``started``: ``time.monotonic()`` at the start)."""
        if self.path is None:
            raise RuntimeError(f"{self.report} {self.value} was not published")
        return ReportResult(report=self.report, partition=partition, rows=self.rows, path=self.path,
                            bytes_written=self.size, duration_ms=int((time.monotonic() - started) * 1000),
                            metrics=metrics, csv_path=csv_path)

    def abort(self) -> None:
        self._writer.abort()


class CsvWriter:
    """A CSV file with a header row, staged outside the reports (like the Parquet writer) and moved into place."""

    def __init__(self, settings: Settings, final_path: str, schema: pa.Schema):
        self.store = Store.at(settings.storage_uri)
        self.fs = self.store.fs
        self.final_path = final_path
        self.fs.create_dir(self.store.staging_dir, recursive=True)
        self.staging_path = f"{self.store.staging_dir}/{uuid.uuid4().hex}.csv"
        self._sink = self.fs.open_output_stream(self.staging_path)
        self._writer = pcsv.CSVWriter(self._sink, schema)

    def __enter__(self) -> CsvWriter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            self.abort()

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def publish(self) -> str:
        self._writer.close()
        self._sink.close()
        parquet.move_into(self.fs, self.staging_path, self.final_path)
        return self.store.display(self.final_path)

    def abort(self) -> None:
        try:
            self._writer.close()
            self._sink.close()
        except Exception:  # noqa: BLE001 - best effort on an already failing path
            pass
        records.delete_if_file(self.fs, self.staging_path)
