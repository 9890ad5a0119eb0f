"""``/balances/{balance_id}/at`` and ``/balances/{balance_id}/change``: exact balances at any instant."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from snapshot_pipeline import query
from snapshot_pipeline.api.deps import authorize, engine_of
from snapshot_pipeline.api.errors import not_found, run_query
from snapshot_pipeline.api.models import BalanceAtBody, BalanceChangeBody
from snapshot_pipeline.api.params import End, FromSource, Start, Timestamp

router = APIRouter(prefix="/balances", tags=["balances"], dependencies=[Depends(authorize)],
                   responses=not_found("balance"))


@router.get("/{balance_id}/at", response_model=BalanceAtBody)
async def balance_at(balance_id: str, request: Request, timestamp: Timestamp = None,
                     from_source: FromSource = False) -> dict:
    """The balance as of ``timestamp``: every APPLIED leg and open hold with effective time <= timestamp.

    Exact whatever the repair state of the snapshots: starts from the latest snapshot at or before
    the instant and replays the legs it did not include (later, late and backdated ones).

    The hot path (README, "Serving"): ``async``, so the API key and the parameters are checked on the
    event loop, and the sync query runs in the thread pool (one hop): a slow query (a busy balance)
    never stalls the worker's other requests.
    """
    at = timestamp or query.utc_now()
    engine = engine_of(request)
    answer = await run_in_threadpool(run_query, lambda: engine.balance_at(balance_id, at, from_source=from_source))
    return answer.as_blnk()


@router.get("/{balance_id}/change", response_model=BalanceChangeBody)
def balance_change(balance_id: str, request: Request, start: Start, end: End) -> dict:
    """Opening (effective < start) and closing (effective < end) balances, credits and debits in [start, end)."""
    change = run_query(lambda: engine_of(request).balance_change(balance_id, start, end))
    return change.as_dict()  # the response model keeps its fields (not the nested opening/closing answers)
