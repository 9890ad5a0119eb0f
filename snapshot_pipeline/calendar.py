"""Partition dates and their cutoffs in the business time zone (DESIGN §3).

Partition ``D`` covers the local day ``D`` in ``timezone``; its cutoff is the
start of ``D + 1`` there, as a naive UTC instant (the ledger stores naive UTC).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo


def cutoff(date: dt.date, timezone: str) -> dt.datetime:
    """The start of ``date + 1`` in ``timezone``, as naive UTC."""
    local = dt.datetime.combine(date + dt.timedelta(days=1), dt.time(0), tzinfo=ZoneInfo(timezone))
    return local.astimezone(dt.UTC).replace(tzinfo=None)


def last_closed_day(timezone: str, now: dt.datetime | None = None) -> dt.date:
    """The latest day whose cutoff has passed."""
    now = now or dt.datetime.now(dt.UTC)
    return now.astimezone(ZoneInfo(timezone)).date() - dt.timedelta(days=1)


def days(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every date from ``start`` to ``end`` inclusive."""
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


# ------------------------------------------------------------------------------------------------ months


def next_month(date: dt.date) -> dt.date:
    """The first day of the month after ``date``'s month."""
    return (date.replace(day=1) + dt.timedelta(days=32)).replace(day=1)


def last_day_of_month(date: dt.date) -> dt.date:
    """The last calendar day of ``date``'s month."""
    return next_month(date) - dt.timedelta(days=1)


def last_day_of_previous_month(date: dt.date) -> dt.date:
    """The last day of the month before ``date``'s month (the month a close on ``date`` closes)."""
    return date.replace(day=1) - dt.timedelta(days=1)


def is_month_end(date: dt.date) -> bool:
    return (date + dt.timedelta(days=1)).day == 1


def months_back(date: dt.date, reference: dt.date) -> int:
    """How many calendar months ``date``'s month lies before ``reference``'s month (0 = same month)."""
    return (reference.year - date.year) * 12 + reference.month - date.month
