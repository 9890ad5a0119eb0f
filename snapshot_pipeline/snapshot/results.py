"""What a snapshot run produces and reports: its error, its result, the pass handed to the commit,
the per-currency totals, and the batch size rule. Plain data; imported by every module of the package."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from snapshot_pipeline import amounts, names
from snapshot_pipeline.ledger import journal
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import index, parquet
from snapshot_pipeline.store.index_stream import IndexStream
from snapshot_pipeline.store.location import Store
from snapshot_pipeline.store.spool import IndexSpool

WIDE = amounts.WIDE
AmountOverflow = amounts.AmountOverflow
ROLL_VERSION = 1  # the roll-forward format a partition is computed with (only such partitions are bases)


class SnapshotError(RuntimeError):
    """A snapshot cannot be taken; nothing was published."""


@dataclasses.dataclass(frozen=True)
class RunFacts:
    """What one materialization of a partition is, fixed when it starts: every step reads it, none changes it."""

    settings: Settings
    snapshot_date: dt.date
    cutoff: dt.datetime  # the partition's cutoff instant (UTC)
    batch_size: int
    log: Callable[[str], None]
    started: float  # time.monotonic() at the start (the reported duration counts from here)
    run_id: str | None = None  # the Dagster run, when one materializes it
    reason: str = "manual"  # schedule | repair | backfill | sensor | manual (recorded with its version)
    compare_live: bool = False  # compare the changed balances with their live rows in the run's view (latest day)


@dataclasses.dataclass
class SnapshotResult:
    """What one materialization did; becomes Dagster metadata and the CLI's JSON."""

    snapshot_date: dt.date
    cutoff: dt.datetime
    watermark: dict
    rows: int
    balances_changed: int
    index_rows_written: int
    batches: int
    batch_size: int
    duration_ms: int
    snapshots_per_second: float
    bytes_written: int
    path: str  # the partition's file (its directory when it has several shard files)
    checksum: str
    mode: str
    base_date: dt.date | None
    currency_totals: list[dict]
    journal_rows: int = 0
    pending: dict = dataclasses.field(default_factory=dict)
    phases_ms: dict = dataclasses.field(default_factory=dict)
    files: list[str] = dataclasses.field(default_factory=list)  # every file of the partition, in shard order
    delta_version: int | None = None  # the version of the Delta table balance_snapshots that carries it
    generation: int | None = None  # the how-many-th publish of this partition (snapshot-pipeline history)
    live_drift: dict | None = None  # the in-run live-drift comparison (snapshot.live.LiveDrift), when it ran

    @property
    def balanced(self) -> bool:
        """Double entry: per currency, Σ balance = 0 and Σ credit = Σ debit."""
        return all(row["balance"] == 0 and row["credit"] == row["debit"] for row in self.currency_totals)

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["snapshot_date"] = self.snapshot_date.isoformat()
        out["cutoff"] = self.cutoff.replace(tzinfo=dt.UTC).isoformat()
        out["base_date"] = self.base_date.isoformat() if self.base_date else None
        out["balanced"] = self.balanced
        return out


def validate_batch_size(batch_size: int) -> int:
    problem = names.batch_size_problem(batch_size)
    if problem:
        raise SnapshotError(problem)
    return batch_size


class CurrencyTotals:
    """Per-currency row count and sums, aggregated in large chunks (no per-row Python objects)."""

    CHUNK_ROWS = parquet.ROW_GROUP_ROWS

    def __init__(self) -> None:
        self.totals: dict[str, list[int]] = {}
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def add(self, table: pa.Table) -> None:
        self._pending.append(table.select(["currency", "balance_id", "balance", "credit_balance", "debit_balance"]))
        self._pending_rows += table.num_rows
        if self._pending_rows >= self.CHUNK_ROWS:
            self._aggregate()

    def _aggregate(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        table = pa.table({
            "currency": table["currency"],
            "balance_id": table["balance_id"],
            **{name: pc.cast(table[name], WIDE) for name in ("balance", "credit_balance", "debit_balance")},
        })
        grouped = table.group_by("currency").aggregate(
            [("balance_id", "count"), ("balance", "sum"), ("credit_balance", "sum"), ("debit_balance", "sum")]
        )
        for row in grouped.to_pylist():
            entry = self.totals.setdefault(row["currency"], [0, 0, 0, 0])
            entry[0] += row["balance_id_count"]
            entry[1] += int(row["balance_sum"])
            entry[2] += int(row["credit_balance_sum"])
            entry[3] += int(row["debit_balance_sum"])

    def as_rows(self) -> list[dict]:
        self._aggregate()
        return [
            {"currency": c, "balances": v[0], "balance": v[1], "credit": v[2], "debit": v[3]}
            for c, v in sorted(self.totals.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
        ]


class ChangedRows(Protocol):
    """Where a merge puts the changed balances: the index spool, or a shard's table list."""

    def write(self, table: pa.Table) -> None: ...


class PendingComparison(Protocol):
    """The run's live-drift comparison, its later legs still being staged by another session
    (:class:`snapshot_pipeline.snapshot.live.InRunComparison`)."""

    def outcome(self, log: Callable[[str], None], snapshot_date: dt.date, phases: dict) -> dict | None: ...

    def wait(self) -> None: ...


@dataclasses.dataclass
class Pass:
    """Outputs of one pass over the ledger, handed to the commit: the staged shard files and the rest."""

    store: Store
    files: list[parquet.StagedFile]  # in shard order
    spool: IndexSpool | IndexStream  # a stream when the index rows were sent to the index as they were merged
    totals: CurrencyTotals
    batches: int
    step: journal.Step
    base: index.ManifestEntry | None
    mode: str
    phases_ms: dict
    live: PendingComparison | None = None  # the in-run live-drift comparison, finished after the commit

    @property
    def fs(self) -> pafs.FileSystem:
        return self.store.fs

    @property
    def staging_paths(self) -> list[str]:
        return [f.staging_path for f in self.files]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def checksum(self) -> str:
        return parquet.partition_checksum([f.checksum for f in self.files])
