"""``GET /balances-at``: every balance at one instant, streamed as Parquet, CSV or NDJSON.

The format comes from ``format=parquet|csv|ndjson`` or else the ``Accept`` header
(``application/vnd.apache.parquet``, ``text/csv``, ``application/x-ndjson``; default NDJSON). The rows are
the library's :meth:`snapshot_pipeline.query.QueryEngine.balances_at` (the anchor snapshot rolled forward
to the instant); amounts are exact integers in every format. Response headers say what the answer was
built from (``X-Snapshot-Anchor-Date``, ``X-Snapshot-Anchor-Cutoff``, ``X-Snapshot-At``, ``X-Snapshot-Rows``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Annotated, Literal

import pyarrow as pa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from snapshot_pipeline import query
from snapshot_pipeline.api.deps import authorize, engine_of
from snapshot_pipeline.api.errors import RESPONSES, ApiError, run_query
from snapshot_pipeline.api.params import Timestamp
from snapshot_pipeline.store.parquet import READ_BATCH_ROWS

router = APIRouter(tags=["balances"], dependencies=[Depends(authorize)])

MEDIA_TYPES = {"parquet": "application/vnd.apache.parquet", "csv": "text/csv; charset=utf-8",
               "ndjson": "application/x-ndjson"}
_ACCEPT = {"application/vnd.apache.parquet": "parquet", "application/parquet": "parquet",
           "application/x-parquet": "parquet", "text/csv": "csv", "application/x-ndjson": "ndjson",
           "application/ndjson": "ndjson", "application/jsonl": "ndjson", "application/json": "ndjson",
           "*/*": "ndjson", "text/*": "csv", "application/*": "ndjson"}
Format = Annotated[Literal["parquet", "csv", "ndjson"] | None,
                   Query(description="parquet, csv or ndjson (default: from the Accept header, else ndjson)")]
BATCH_ROWS = READ_BATCH_ROWS  # rows per streamed chunk of a set query's answer


def _format(requested: str | None, accept: str) -> str:
    if requested:
        return requested
    if not accept.strip():
        return "ndjson"
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in _ACCEPT:
            return _ACCEPT[media]
    raise ApiError(406, "not_acceptable", f"cannot answer Accept: {accept}; ask for one of"
                                          f" {', '.join(sorted(set(MEDIA_TYPES.values())))} or send format=")


def _json_rows(table: pa.Table) -> Iterator[bytes]:
    """One JSON object a line; decimals as exact integers, instants as RFC 3339 UTC."""
    for batch in table.to_batches(BATCH_ROWS):
        lines = []
        for row in batch.to_pylist():
            for key, value in row.items():
                if hasattr(value, "as_integer_ratio") and not isinstance(value, int | float):  # Decimal
                    row[key] = int(value)
                elif hasattr(value, "isoformat"):
                    row[key] = query.iso_utc(value)
            lines.append(json.dumps(row, separators=(",", ":")))
        yield ("\n".join(lines) + "\n").encode()


def _csv_rows(table: pa.Table) -> Iterator[bytes]:
    import pyarrow.csv as pacsv  # noqa: PLC0415

    sink = io.BytesIO()
    with pacsv.CSVWriter(sink, table.schema) as writer:
        for batch in table.to_batches(BATCH_ROWS):
            writer.write_batch(batch)
            yield sink.getvalue()
            sink.seek(0)
            sink.truncate()
    yield sink.getvalue()


def _parquet(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq  # noqa: PLC0415

    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


@router.get("/balances-at", responses={**RESPONSES, 406: RESPONSES[400]},
            response_class=StreamingResponse)
async def balances_at(request: Request, timestamp: Timestamp = None, format: Format = None,
                      ledger_id: str | None = None, currency: str | None = None) -> Response:
    """Every balance at ``timestamp`` (effective time <= timestamp; default now): one row per balance with its
    six exact amounts, as Parquet, CSV or NDJSON, optionally only one ledger's or currency's."""
    kind = _format(format, request.headers.get("accept", ""))
    at = timestamp or query.utc_now()
    engine = engine_of(request)
    table = await run_in_threadpool(run_query, lambda: engine.balances_at(at, ledger_id, currency))
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    headers = {"X-Snapshot-At": meta.get("snapshot_pipeline.at", ""),
               "X-Snapshot-Anchor-Date": meta.get("snapshot_pipeline.anchor_date", ""),
               "X-Snapshot-Anchor-Cutoff": meta.get("snapshot_pipeline.anchor_cutoff", ""),
               "X-Snapshot-Rows": str(table.num_rows)}
    if kind == "parquet":
        body = await run_in_threadpool(_parquet, table)
        return Response(body, media_type=MEDIA_TYPES["parquet"], headers=headers)
    rows = _csv_rows(table) if kind == "csv" else _json_rows(table)
    return StreamingResponse(rows, media_type=MEDIA_TYPES[kind], headers=headers)
