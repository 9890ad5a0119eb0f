"""Query parameters of the HTTP API, validated by FastAPI with the library's own parsers.

An instant is parsed by :func:`snapshot_pipeline.query.parse_timestamp` and a batch size checked by
:func:`snapshot_pipeline.names.batch_size_problem`, so the rules (and their wording) are the ones the
CLI and Dagster use; a refusal is a 400 whose code :data:`snapshot_pipeline.api.errors.PARAMETER_CODES`
names.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Query
from pydantic import BeforeValidator

from snapshot_pipeline import names, query

INSTANT = ("RFC 3339 instant with a UTC offset (e.g. 2026-11-02T09:30:00Z, 2026-11-02T15:00:00.250+05:30),"
           " from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z once in UTC")


def _instant(what: str) -> Callable[[Any], dt.datetime]:
    """A validator: RFC 3339 text -> naive UTC (:func:`query.parse_timestamp`, naming ``what``)."""

    def parse(text: Any) -> dt.datetime:
        return query.parse_timestamp(text, what)  # a QueryError is a ValueError: Pydantic reports it

    return parse


_ASCII_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


def _batch_size(text: Any) -> int:
    """A validator: decimal text -> batch_size within :data:`names.BATCH_SIZE_MIN`..:data:`names.BATCH_SIZE_MAX`.

    ASCII digits only, as Blnk's server parses numbers (``int()`` alone would take "٥" for 5)."""
    if isinstance(text, str) and not _ASCII_INTEGER.fullmatch(text.strip()):
        raise ValueError(f"batch_size {text!r} is not a whole number in ASCII digits 0-9")
    try:
        size: object = int(text)
    except (TypeError, ValueError):
        size = text
    problem = names.batch_size_problem(size)
    if problem:
        raise ValueError(problem)
    return size  # type: ignore[return-value]


def _date(what: str) -> Callable[[Any], dt.date]:
    """A validator: ``YYYY-MM-DD`` (ASCII digits) -> a date, ``what`` named."""

    def parse(text: Any) -> dt.date:
        if isinstance(text, dt.date):
            return text
        if not isinstance(text, str) or not _DATE.fullmatch(text.strip()):
            raise ValueError(f"{what} {text!r} is not a date in YYYY-MM-DD form")
        try:
            return dt.date.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(f"{what} {text!r} is not a valid date") from None

    return parse


# Query(...) first, then the validator: FastAPI then documents the bounds (minimum/maximum) in OpenAPI
Timestamp = Annotated[dt.datetime | None, Query(description=INSTANT + "; default: now"),
                      BeforeValidator(_instant("timestamp"))]
Start = Annotated[dt.datetime, Query(description="RFC 3339 instant (inclusive)"), BeforeValidator(_instant("start"))]
End = Annotated[dt.datetime, Query(description="RFC 3339 instant (exclusive)"), BeforeValidator(_instant("end"))]
FromSource = Annotated[bool, Query(description="replay the journal from genesis instead of a snapshot"
                                               " (true|1, as Blnk; false|0)")]
FromDay = Annotated[dt.date, Query(alias="from", description="first day, YYYY-MM-DD (business time zone)"),
                    BeforeValidator(_date("from"))]
ToDay = Annotated[dt.date, Query(alias="to", description="last day, YYYY-MM-DD, inclusive"),
                  BeforeValidator(_date("to"))]
BatchSize = Annotated[int, Query(description=f"balances per batch, {names.BATCH_SIZE_RULE}"
                                             f" (default {names.BATCH_SIZE_DEFAULT})",
                                 ge=names.BATCH_SIZE_MIN, le=names.BATCH_SIZE_MAX),
                      BeforeValidator(_batch_size)]
