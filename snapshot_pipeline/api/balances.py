"""``/balances/{balance_id}/at``, ``/change`` and ``/history``: exact balances of one balance."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from snapshot_pipeline import query
from snapshot_pipeline.api.deps import authorize, engine_of, settings_of
from snapshot_pipeline.api.errors import not_found, run_query
from snapshot_pipeline.api.models import BalanceAtBody, BalanceChangeBody, HistoryBody
from snapshot_pipeline.api.params import End, FromDay, FromSource, Start, Timestamp, ToDay

router = APIRouter(prefix="/balances", tags=["balances"], dependencies=[Depends(authorize)],
                   responses=not_found("balance"))


@router.get("/{balance_id}/at", response_model=BalanceAtBody)
async def balance_at(balance_id: str, request: Request, timestamp: Timestamp = None,
                     from_source: FromSource = False) -> dict:
    """The balance as of ``timestamp``: every APPLIED leg and open hold with effective time <= timestamp.

    Exact whatever the repair state of the snapshots: starts from the latest snapshot at or before
    the instant and replays the legs it did not include (later, late and backdated ones). The
    ``timestamp`` is echoed as Blnk does: to the second, in the offset it was sent with.

    The hot path (docs/http-api.md, "Serving"): ``async``, so the API key and the parameters are checked on the
    event loop, and the sync query runs in the thread pool (one hop): a slow query (a busy balance)
    never stalls the worker's other requests.
    """
    at = timestamp or query.utc_now()
    engine = engine_of(request)
    answer = await run_in_threadpool(run_query, lambda: engine.balance_at(balance_id, at, from_source=from_source))
    body = answer.as_blnk()
    body["timestamp"] = query.blnk_timestamp(answer.at, request.query_params.get("timestamp"))
    return body


@router.get("/{balance_id}/change", response_model=BalanceChangeBody)
def balance_change(balance_id: str, request: Request, start: Start, end: End) -> dict:
    """Opening (effective < start) and closing (effective < end) balances, credits and debits in [start, end)."""
    change = run_query(lambda: engine_of(request).balance_change(balance_id, start, end))
    return change.as_dict()  # the response model keeps its fields (not the nested opening/closing answers)


@router.get("/{balance_id}/history", response_model=HistoryBody)
def balance_history(balance_id: str, request: Request, from_day: FromDay, to_day: ToDay) -> dict:
    """End-of-day balances from ``from`` to ``to`` (inclusive), one row per day, oldest first.

    Day D's row is the balance over effective time < the end of D in ``SNAPSHOT_TIMEZONE``: what snapshot D
    holds for it, computed from the snapshots (one index seek a day) plus the legs they did not include.
    """
    settings, engine = settings_of(request), engine_of(request)
    days = run_query(lambda: [day.as_dict() for day in query.end_of_day_history(
        engine, balance_id, from_day, to_day, settings.timezone)])
    return {"balance_id": balance_id, "from": from_day.isoformat(), "to": to_day.isoformat(),
            "timezone": settings.timezone, "days": days}
