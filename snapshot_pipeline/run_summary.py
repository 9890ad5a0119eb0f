"""One snapshot run's metrics as the faces print them: the CLI's JSON and the HTTP status body share this.

The materialization's metadata arrives in two ways (Dagster's in-process result for the CLI, the
webserver's GraphQL for the HTTP service); both are turned into plain values first, then
:func:`run_metrics` gives them one shape: integers as integers (``batch_size``,
``watermark_transaction_id``), ``currency_totals`` as a list of records, every instant as RFC 3339 in UTC
with ``Z`` and microseconds (:func:`snapshot_pipeline.query.instants.iso_utc`), and ``checks`` as
``{name: "passed" | "failed (ERROR|WARN)"}``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

from snapshot_pipeline.query.instants import iso_utc

INTEGER_FIELDS = ("batch_size", "watermark_transaction_id")  # recorded as text metadata (not plotted by the UI)
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})?$", re.ASCII)


def instant_text(value: str) -> str:
    """An ISO 8601 instant (with an offset, or naive UTC as the ledger stores them) in the one shape."""
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T", 1))
    return iso_utc(parsed) or value


def _normalize(value: Any) -> Any:
    if isinstance(value, str) and _INSTANT.match(value):
        return instant_text(value)
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    return value


def check_outcome(passed: bool, severity: str) -> str:
    return "passed" if passed else f"failed ({severity})"


def run_metrics(snapshot_date: str, run_id: str, metadata: Mapping[str, Any],
                checks: Iterable[tuple[str, bool, str]]) -> dict:
    """The run's metrics: ``metadata`` (plain values; ``currency_totals`` a list of records) and its
    asset checks as ``(name, passed, severity)``."""
    out: dict[str, Any] = {"snapshot_date": snapshot_date, "run_id": run_id}
    for key, value in metadata.items():
        if key in INTEGER_FIELDS and value is not None:
            out[key] = int(value)
        else:
            out[key] = _normalize(value)
    out["currency_totals"] = list(out.get("currency_totals") or [])
    out["checks"] = {name: check_outcome(passed, severity) for name, passed, severity in checks}
    return out
