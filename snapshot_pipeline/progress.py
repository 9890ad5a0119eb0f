"""The progress line of a snapshot run: written in one place (:class:`Reporter`), read in one place
(:func:`parse_line`: the CLI's progress bar and the HTTP run status both call it).

The line, in the run's log (the Dagster UI shows it)::

    operation=balance_snapshot snapshot_date=2026-11-02 status=progress rows=120000 total=300000 percent=40.0
    snapshots_per_second=85000

``rows`` are rows of the partition merged and written so far; ``total`` is the partition's row count:
while merging, the estimate the run knows after its ledger read (the base partition's rows plus the
balances entering the ledger; ``unknown`` when it has none, e.g. a shard step), and on the **final**
line, which every run logs when its merge ends, the exact count, equal to ``rows``: every path (the
CLI's bar, the HTTP status, the UI's log) reaches 100%.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable

PREFIX = "operation=balance_snapshot"
_LINE = re.compile(r"operation=balance_snapshot snapshot_date=(\S+) status=progress\b")
_FIELD = re.compile(r"(\w+)=(\S+)")


@dataclasses.dataclass(frozen=True)
class Report:
    """One progress report of a partition's materialization."""

    snapshot_date: str
    rows: int
    total: int | None
    snapshots_per_second: float | None = None

    @property
    def percent(self) -> float | None:
        """Rows out of the total, capped at 100 (an estimate can be passed before the final line)."""
        if not self.total:
            return 100.0 if self.total == 0 else None
        return round(min(100.0, 100.0 * self.rows / self.total), 1)

    def as_dict(self) -> dict:
        return {"rows": self.rows, "total": self.total, "percent": self.percent,
                "snapshots_per_second": self.snapshots_per_second}


def format_line(report: Report) -> str:
    """The progress line (see the module docstring)."""
    percent = report.percent
    rate = report.snapshots_per_second
    return (f"{PREFIX} snapshot_date={report.snapshot_date} status=progress rows={report.rows}"
            f" total={report.total if report.total is not None else 'unknown'}"
            f" percent={'unknown' if percent is None else f'{percent:.1f}'}"
            f" snapshots_per_second={'unknown' if rate is None else f'{rate:.0f}'}")


def parse_line(message: str) -> Report | None:
    """The report a progress line carries; None for any other message (or a malformed line)."""
    match = _LINE.search(message)
    if match is None:
        return None
    fields = dict(_FIELD.findall(message[match.start():]))
    try:
        rows = int(fields["rows"])
        total = int(fields["total"]) if fields.get("total", "unknown") != "unknown" else None
        rate = float(fields["snapshots_per_second"]) if fields.get("snapshots_per_second", "unknown") != "unknown" \
            else None
    except (KeyError, ValueError):
        return None
    return Report(match.group(1), rows, total, rate)


class Reporter:
    """Logs progress lines through ``emit``: the first report, then at most one every ``every_seconds``,
    and always the final one. ``offset`` rows were done before (a sharded run's earlier shards)."""

    def __init__(self, emit: Callable[[str], None], snapshot_date: str, every_seconds: float = 1.0):
        self.emit, self.snapshot_date, self.every_seconds = emit, snapshot_date, every_seconds
        self.started = time.monotonic()
        self.last: float | None = None
        self.offset = 0

    def __call__(self, rows: int, total: int | None, final: bool = False) -> None:
        now = time.monotonic()
        if not final and self.last is not None and now - self.last < self.every_seconds:
            return
        self.last = now
        done = self.offset + rows
        rate = done / max(now - self.started, 1e-3)
        self.emit(format_line(Report(self.snapshot_date, done, total, rate)))
