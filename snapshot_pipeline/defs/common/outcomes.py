"""A quality outcome (:class:`snapshot_pipeline.quality.Outcome`) as Dagster shows it: check metadata and a log line.

Shared by the in-run checks of ``balance_snapshots`` (``defs/snapshots/checks.py``) and the diff audit
(``defs/maintenance/assets.py``). Only measures are numeric metadata (they plot).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import dagster as dg

from snapshot_pipeline import quality


def double_entry_table(rows: list[dict]) -> dg.MetadataValue:
    """Per-currency figures of the double-entry check as a UI table (exact decimal strings)."""
    names = ("balance", "credit", "debit", "imbalance")
    schema = dg.TableSchema(columns=[
        dg.TableColumn("currency", "string"), dg.TableColumn("balances", "int"),
        *[dg.TableColumn(n, "string", description=f"Σ {n}, minor units" if n != "imbalance"
                         else "Σ credit − Σ debit, minor units") for n in names],
    ])
    records = [dg.TableRecord({"currency": r["currency"], "balances": int(r["balances"]),
                               **{n: str(r[n]) for n in names}}) for r in rows]
    return dg.MetadataValue.table(records=records, schema=schema)


def outcome_metadata(outcome: quality.Outcome) -> dict[str, Any]:
    """Measures as numeric metadata (plotted); everything else as text, bool, JSON or a table."""
    metadata: dict[str, Any] = {k: v for k, v in outcome.metrics.items() if v is not None}
    for key, value in outcome.details.items():
        if value is None:
            continue
        if key == "per_currency":
            metadata[key] = double_entry_table(value)
        elif isinstance(value, bool):
            metadata[key] = dg.MetadataValue.bool(value)
        elif isinstance(value, (list, dict)):
            metadata[key] = dg.MetadataValue.json(value)
        else:
            metadata[key] = dg.MetadataValue.text(str(value))
    return metadata


def outcome_logger(context) -> Callable[[str, dt.date, quality.Outcome], None]:
    """The log line of one check on one partition: info when it passed, warning when it failed."""
    def log(name: str, date: dt.date, outcome: quality.Outcome) -> None:
        emit = context.log.info if outcome.passed else context.log.warning
        emit(f"operation=asset_check check={name} partition={date} passed={outcome.passed} {outcome.description}")
    return log
