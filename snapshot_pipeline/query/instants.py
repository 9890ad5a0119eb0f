"""Instants: RFC 3339 text in, naive UTC out, over the whole range a user can write.

Instants are naive UTC (the ledger's convention) or timezone-aware (converted to UTC). Timestamps
have microsecond precision, so ``effective < start`` is ``effective <= start - 1µs``.
"""

from __future__ import annotations

import datetime as dt
import re

from snapshot_pipeline.query.errors import QueryError

MICROSECOND = dt.timedelta(microseconds=1)

_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$",
    re.ASCII,  # ASCII digits only, as Blnk's (Go) parser: "٢٠٢٦-..." is not an instant
)
# an offset whose "+" a query string turned into a space ("...T15:00:00 05:30")
_SPACE_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})? \d{2}:\d{2}$", re.ASCII)


FIRST_INSTANT = dt.datetime.min  # 0001-01-01T00:00:00Z: naive UTC, the range of Python datetimes
LAST_INSTANT = dt.datetime.max  # 9999-12-31T23:59:59.999999Z
INSTANT_RANGE = "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z"


def parse_timestamp(text: str, what: str = "timestamp") -> dt.datetime:
    """RFC 3339 text with a UTC offset (``Z``, ``+05:30``, ``-04:00``) -> naive UTC.

    Fractions finer than a microsecond are truncated, which is exact for ``effective <= T``
    because the ledger stores microseconds. Text without an offset is refused (ambiguous).
    Every instant whose UTC value lies in :data:`INSTANT_RANGE` is accepted, whatever its offset;
    one outside it (e.g. ``0001-01-01T00:00:00+01:00``, ``9999-12-31T23:59:59-23:59``) or with year
    0000 is refused with a :class:`QueryError` naming the range. ``what`` names the parameter.
    """
    if not isinstance(text, str) or len(text) > 64:
        raise QueryError(f"{what} must be an RFC 3339 instant of at most 64 characters")
    match = _RFC3339.match(text.strip())
    if not match and _SPACE_OFFSET.match(text):
        raise QueryError(
            f"{what} {text!r} has a space where its UTC offset's sign should be: in a URL a '+' means a space,"
            " so send the offset's '+' as %2B (e.g. 2026-11-02T15:00:00%2B05:30) or use Z"
        )
    if not match:
        raise QueryError(
            f"{what} {text!r} is not RFC 3339 with a UTC offset (e.g. 2026-11-02T09:30:00Z or"
            " 2026-11-02T15:00:00.250+05:30)"
        )
    day, clock, fraction, offset = match.groups()
    micro = (fraction or "").ljust(6, "0")[:6]
    offset = "+00:00" if offset in ("Z", "z") else offset
    if day.startswith("0000"):
        raise QueryError(f"{what} {text!r} is outside the supported range {INSTANT_RANGE}")
    if int(offset[1:3]) > 23 or int(offset[4:6]) > 59:
        raise QueryError(f"{what} {text!r} has the UTC offset {offset}: offsets run from -23:59 to +23:59")
    try:
        value = dt.datetime.fromisoformat(f"{day}T{clock}.{micro}{offset}")
    except ValueError as exc:
        raise QueryError(f"{what} {text!r} is not a valid date and time: {exc}") from None
    return to_utc(value, what)


def to_utc(value: dt.datetime, what: str = "timestamp") -> dt.datetime:
    """An aware datetime -> naive UTC; a naive one is taken as UTC already.

    An aware instant whose UTC value falls outside :data:`INSTANT_RANGE` is a :class:`QueryError`.
    """
    if not isinstance(value, dt.datetime):
        raise QueryError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is not None:
        try:
            return value.astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError:
            raise QueryError(f"{what} {value.isoformat()} is outside the supported range {INSTANT_RANGE}"
                             " once converted to UTC") from None
    return value


def just_before(value: dt.datetime) -> dt.datetime | None:
    """``value - 1µs`` (so ``effective < value`` is ``effective <= just_before(value)``); ``None`` at the
    first instant, before which nothing is dated (legs dated before year 1 are outside the range)."""
    return None if value <= FIRST_INSTANT else value - MICROSECOND


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def iso_utc(value: dt.datetime | None) -> str | None:
    """Naive (UTC) or aware -> RFC 3339 in UTC with ``Z`` and microseconds, always: the one shape of every
    instant the service and the CLI print (``2026-11-02T09:30:00.000000Z``); the ledger stores microseconds."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


def blnk_timestamp(at: dt.datetime, asked: str | None) -> str:
    """The ``timestamp`` Blnk's ``GET /balances/{id}/at`` echoes: RFC 3339 to the second in the caller's offset
    (``Z`` for a zero offset, as Go's ``time.RFC3339``); ``at`` is naive UTC, ``asked`` the caller's text or None."""
    offset = dt.timedelta(0)
    match = _RFC3339.match(asked.strip()) if asked else None
    if match and match.group(4) not in ("Z", "z"):
        sign = -1 if match.group(4)[0] == "-" else 1
        offset = sign * dt.timedelta(hours=int(match.group(4)[1:3]), minutes=int(match.group(4)[4:6]))
    try:
        local = at.replace(tzinfo=dt.UTC).astimezone(dt.timezone(offset))
    except OverflowError:  # an instant at the edge of the range shown in its offset: fall back to UTC
        local, offset = at.replace(tzinfo=dt.UTC), dt.timedelta(0)
    text = local.isoformat(timespec="seconds")[:19]
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds() // 60)
    return f"{text}{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
