"""Errors of the HTTP API: every failure is JSON ``{"code", "message"}`` with one line and a documented status.

400 bad input, 401, 404 unknown balance, run or route, 422 an amount that cannot be represented, 503 a
database or Dagster unreachable, 500 a bug (its message, passwords hidden; the traceback in the log).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from snapshot_pipeline import db, query
from snapshot_pipeline.api.models import ErrorBody
from snapshot_pipeline.settings import redact
from snapshot_pipeline.store import index

logger = logging.getLogger("snapshot_pipeline.api")
T = TypeVar("T")

# the error code of a query parameter whose own validator refused it (see api/params.py)
PARAMETER_CODES = {"timestamp": "invalid_timestamp", "start": "invalid_timestamp", "end": "invalid_timestamp",
                   "batch_size": "invalid_batch_size"}

RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "bad input"},
    401: {"model": ErrorBody, "description": "missing or wrong API key"},
    422: {"model": ErrorBody, "description": "an amount that cannot be represented exactly (the balance is named)"},
    503: {"model": ErrorBody, "description": "database or Dagster unreachable"},
}


class ApiError(Exception):
    """An answer other than 200: ``status`` with ``{"code", "message"}``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def not_found(what: str) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` entries of a route that answers 404 for an unknown ``what``."""
    return {**RESPONSES, 404: {"model": ErrorBody, "description": f"unknown {what}"}}


def run_query(fn: Callable[[], T]) -> T:
    """``fn()`` with the query layer's errors as :class:`ApiError` (400, 404, 422, 503)."""
    try:
        return fn()
    except query.QueryError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    except query.BalanceNotFound as exc:
        raise ApiError(404, "balance_not_found", f"balance {exc.balance_id!r} does not exist") from None
    except query.AmountOverflow as exc:
        raise ApiError(422, "amount_not_representable", str(exc)) from None
    except db.DatabaseUnavailable as exc:
        raise ApiError(503, "database_unavailable", str(exc)) from None
    except index.IndexOutdated as exc:  # until a snapshot run or `snapshot-pipeline migrate` upgrades it
        raise ApiError(503, "index_outdated", str(exc)) from None


def _validation_message(error: dict) -> tuple[str, str]:
    """``(code, message)`` of one FastAPI validation error: our validators' own words, else Pydantic's."""
    name = ".".join(str(p) for p in error["loc"][1:]) or str(error["loc"][0])
    if error.get("type") == "value_error" and name in PARAMETER_CODES:
        cause = (error.get("ctx") or {}).get("error")
        return PARAMETER_CODES[name], str(cause) if cause else error["msg"].removeprefix("Value error, ")
    return "bad_request", f"{name}: {error['msg']}"


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    answers = [_validation_message(e) for e in exc.errors()]
    return JSONResponse({"code": answers[0][0], "message": "; ".join(m for _, m in answers)}, status_code=400)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse({"code": code, "message": str(exc.detail)}, status_code=exc.status_code)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    message = " ".join(f"{type(exc).__name__}: {exc}".split())
    return JSONResponse({"code": "internal_error", "message": redact(message)}, status_code=500)


def install_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as :class:`ErrorBody`."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
