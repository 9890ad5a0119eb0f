"""Errors of the HTTP API: every failure is JSON with one line a user can act on and a documented status.

The body keeps our ``{"code", "message"}`` and adds Blnk's shape, so a Blnk client's error handling works
unchanged: ``{"code": "balance_not_found", "message": "...", "error": "...", "error_detail": {"code":
"BAL_NOT_FOUND", "message": "..."}}`` (:data:`BLNK_CODES`: Blnk's code where Blnk has one for the case,
else ours in capitals). 400 bad input, 401, 404 unknown balance, run or route, 406 a format we do not
serve, 422 an amount that cannot be represented, 503 a database or Dagster unreachable, 500 a bug. No
library's exception text reaches a body: it goes to the service's log.
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
from snapshot_pipeline.store import index

logger = logging.getLogger("snapshot_pipeline.api")
T = TypeVar("T")

# the error code of a query parameter whose own validator refused it (see api/params.py)
PARAMETER_CODES = {"timestamp": "invalid_timestamp", "start": "invalid_timestamp", "end": "invalid_timestamp",
                   "batch_size": "invalid_batch_size", "from": "invalid_date", "to": "invalid_date"}
# Blnk's error_detail.code for each of ours (Blnk's catalogue of domain-prefixed codes); a code Blnk has no
# equivalent for is sent as ours in capitals
BLNK_CODES = {
    "balance_not_found": "BAL_NOT_FOUND",
    "invalid_timestamp": "BAL_INVALID_TIMESTAMP",
    "invalid_date": "GEN_VALIDATION_ERROR",
    "invalid_batch_size": "GEN_VALIDATION_ERROR",
    "bad_request": "GEN_BAD_REQUEST",
    "no_partition": "GEN_BAD_REQUEST",
    "launch_rejected": "GEN_BAD_REQUEST",
    "not_acceptable": "GEN_BAD_REQUEST",
    "method_not_allowed": "GEN_BAD_REQUEST",
    "unauthorized": "AUTH_INVALID_API_KEY",
    "missing_api_key": "AUTH_MISSING_API_KEY",
    "metrics_unauthorized": "AUTH_INVALID_BEARER_TOKEN",
    "run_not_found": "GEN_NOT_FOUND",
    "not_found": "GEN_NOT_FOUND",
    "amount_not_representable": "BAL_VALIDATION_ERROR",
    "internal_error": "GEN_INTERNAL",
}
DATABASE_HINT = ("check that PostgreSQL is running and that LEDGER_DATABASE_URL / SNAPSHOT_DATABASE_URL name it;"
                 " GET /health answers 200 once it is back")

RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "bad input"},
    401: {"model": ErrorBody, "description": "missing or wrong API key"},
    422: {"model": ErrorBody, "description": "an amount that cannot be represented exactly (the balance is named)"},
    503: {"model": ErrorBody, "description": "database or Dagster unreachable"},
}


class ApiError(Exception):
    """An answer other than 200: ``status`` with :func:`error_body`."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_body(code: str, message: str) -> dict:
    """Our ``code``/``message`` plus Blnk's ``error``/``error_detail``."""
    blnk = BLNK_CODES.get(code, code.upper())
    return {"code": code, "message": message, "error": message, "error_detail": {"code": blnk, "message": message}}


def database_unavailable(exc: Exception) -> ApiError:
    """A 503 naming the database (its URL, password hidden) and what to do; the driver's text goes to the log."""
    logger.warning("database unavailable: %s", exc)
    what = str(exc).split(": ", 1)[0]  # "cannot connect to the ledger database at postgresql://...": ours
    return ApiError(503, "database_unavailable", f"{what}: {DATABASE_HINT}")


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
        raise database_unavailable(exc) from None
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
    return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    answers = [_validation_message(e) for e in exc.errors()]
    return JSONResponse(error_body(answers[0][0], "; ".join(m for _, m in answers)), status_code=400)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    message = "an internal error occurred; the service's log has the traceback"
    return JSONResponse(error_body("internal_error", message), status_code=500)


def install_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as :class:`ErrorBody`."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
