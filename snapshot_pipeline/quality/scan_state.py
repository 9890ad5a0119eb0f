"""The late-row scan's model: partitions as scanned, findings, and the state kept in the sensor's cursor.

:mod:`snapshot_pipeline.quality.lateness` runs the scan; this module holds what it reads and returns,
and the compact JSON state (``ScanState``) it resumes from.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import struct

from snapshot_pipeline.store import index

RECENT = dt.timedelta(days=1)  # longer than any partition's commit transaction
STATE_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Partition:
    """The manifest facts of one published partition that lateness depends on."""

    date: dt.date
    cutoff: dt.datetime
    max_transaction_id: int
    transaction_count: int
    max_balance_id: int
    pg_snapshot: str
    materialized_at: dt.datetime

    @classmethod
    def from_entry(cls, entry: index.ManifestEntry) -> Partition:
        if entry.materialized_at is None:  # set by the database on every stored manifest row
            raise ValueError(f"manifest row of {entry.snapshot_date} has no materialized_at")
        return cls(entry.snapshot_date, entry.cutoff_at, entry.max_transaction_id, entry.transaction_count,
                   entry.max_balance_id, entry.pg_snapshot, entry.materialized_at)

    @property
    def identity(self) -> str:
        """What the partition's read saw: ``W:count:Wb``. Re-materializing changes it (or changes nothing)."""
        return f"{self.max_transaction_id}:{self.transaction_count}:{self.max_balance_id}"

    @property
    def key(self) -> str:
        return f"{self.date.isoformat()}@{self.identity}"


@dataclasses.dataclass
class Finding:
    """Why one partition is stale."""

    partition: Partition
    late_transactions: int = 0
    late_id_range: tuple[int, int] | None = None
    earliest_effective: dt.datetime | None = None
    late_balances: int = 0
    late_balance_id_range: tuple[int, int] | None = None
    prefix_changed: int = 0

    def counts(self) -> dict[str, int]:
        """The non-zero reasons, by name."""
        found = {"late_transactions": self.late_transactions, "late_balances": self.late_balances,
                 "prefix_changed": self.prefix_changed}
        return {name: count for name, count in found.items() if count}

    @property
    def date(self) -> dt.date:
        return self.partition.date

    @property
    def run_key(self) -> str:
        """Stable per (partition, stale identity): the same lateness never requests twice."""
        return f"late-repair:{self.partition.date.isoformat()}:{self.partition.identity}"

    def reason(self) -> str:
        p = self.partition
        cutoff = p.cutoff.isoformat() + "Z"
        parts = []
        if self.late_transactions and self.late_id_range and self.earliest_effective:
            low, high = self.late_id_range
            parts.append(
                f"{self.late_transactions} journal row(s) above its watermark {p.max_transaction_id} dated before"
                f" its cutoff {cutoff} (ids {low}..{high}, earliest effective"
                f" {self.earliest_effective.isoformat()}Z)"
            )
        if self.late_balances and self.late_balance_id_range:
            low, high = self.late_balance_id_range
            parts.append(
                f"{self.late_balances} balance(s) created before the cutoff but added after its read"
                f" (balances.id {low}..{high})"
            )
        if self.prefix_changed:
            parts.append(
                f"the journal rows at or below its watermark changed by {self.prefix_changed:+d} since its read"
                " (committed out of id order)"
            )
        return "; ".join(parts)

    def as_dict(self) -> dict:
        return {
            "partition": self.date.isoformat(),
            "identity": self.partition.identity,
            "late_transactions": self.late_transactions,
            "late_balances": self.late_balances,
            "prefix_changed": self.prefix_changed,
            "reason": self.reason(),
        }


def _hash(key: str) -> int:
    return struct.unpack(">Q", hashlib.blake2b(key.encode(), digest_size=8).digest())[0]


@dataclasses.dataclass
class ScanState:
    """The sensor cursor: how far the journal was examined and which partition identities were seen.

    A partition is *new* (to be examined from its own watermark) unless its identity was seen.
    Identities are remembered only for partitions published within ``RECENT`` of the newest
    ``materialized_at`` seen (64-bit hashes of ``date@identity``); older ones were seen by
    construction, so the cursor stays a few hundred bytes however long the history.
    ``unaudited`` and ``requested`` map dates to identities.
    """

    tx_examined: int = 0
    tx_final: int = 0
    balance_examined: int = 0
    balance_final: int = 0
    snapshot: str | None = None
    manifest_time: dt.datetime | None = None
    seen: set[int] = dataclasses.field(default_factory=set)
    unaudited: dict[str, str] = dataclasses.field(default_factory=dict)
    requested: dict[str, str] = dataclasses.field(default_factory=dict)

    def is_new(self, partition: Partition) -> bool:
        if self.manifest_time is not None and partition.materialized_at < self.manifest_time - RECENT:
            return False  # published long before a partition an earlier scan saw: seen by construction
        return _hash(partition.key) not in self.seen

    def remember(self, partitions: list[Partition]) -> None:
        if partitions:
            self.manifest_time = max(p.materialized_at for p in partitions)
        self.seen = {_hash(p.key) for p in partitions
                     if self.manifest_time is None or p.materialized_at >= self.manifest_time - RECENT}

    def to_json(self) -> str:
        packed = base64.b64encode(struct.pack(f">{len(self.seen)}Q", *sorted(self.seen))).decode()
        return json.dumps({
            "v": STATE_VERSION, "tx": self.tx_examined, "tx_final": self.tx_final, "bal": self.balance_examined,
            "bal_final": self.balance_final, "snapshot": self.snapshot,
            "manifest_time": self.manifest_time.isoformat() if self.manifest_time else None, "seen": packed,
            "unaudited": self.unaudited, "requested": self.requested,
        }, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> ScanState:
        if not text:
            return cls()
        data = json.loads(text)
        if data.get("v") != STATE_VERSION:
            return cls()
        raw = base64.b64decode(data["seen"])
        return cls(
            tx_examined=data["tx"], tx_final=data["tx_final"], balance_examined=data["bal"],
            balance_final=data["bal_final"], snapshot=data["snapshot"],
            manifest_time=dt.datetime.fromisoformat(data["manifest_time"]) if data["manifest_time"] else None,
            seen=set(struct.unpack(f">{len(raw) // 8}Q", raw)),
            unaudited=dict(data["unaudited"]), requested=dict(data["requested"]),
        )


@dataclasses.dataclass
class ScanResult:
    """Findings of one scan (every stale partition) and the ones newly due for a repair request."""

    findings: list[Finding]
    new_requests: list[Finding]
    state: ScanState
    examined: bool
    stats: dict
