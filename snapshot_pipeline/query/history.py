"""End-of-day balances of one balance over a range of days: the "statement" question finance asks most.

Day ``D``'s value is the balance over effective time ``< cutoff(D)`` (the start of ``D+1`` in the business
time zone), exactly what snapshot ``D`` holds for the balance: each day is one :meth:`QueryEngine.balance_at`
at ``cutoff(D) - 1µs``, which starts from the latest published snapshot at or before that instant (one
index seek) and replays only the legs the snapshot did not include. So a day whose snapshot is published
and current costs one seek and no replay, and a day not (yet) published, or repaired since, is still exact.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING

from snapshot_pipeline import calendar
from snapshot_pipeline.query.answers import BalanceAt
from snapshot_pipeline.query.errors import QueryError
from snapshot_pipeline.query.instants import MICROSECOND, iso_utc

if TYPE_CHECKING:
    from snapshot_pipeline.query.engine import QueryEngine

MAX_HISTORY_DAYS = 3_660  # ten years of days in one request


@dataclasses.dataclass(frozen=True)
class EndOfDay:
    """One balance at the end of one business day."""

    date: dt.date
    answer: BalanceAt

    def as_dict(self) -> dict:
        a = self.answer
        return {
            "date": self.date.isoformat(),
            "cutoff": iso_utc(a.at + MICROSECOND),
            "balance_id": a.balance_id,
            "currency": a.currency,
            **a.amounts(),
            "existed": a.existed,
            "snapshot_date": a.anchor.snapshot_date.isoformat() if a.anchor else None,
            "replayed_transactions": a.replayed_transactions,
        }


def end_of_day_history(engine: QueryEngine, balance_id: str, first: dt.date, last: dt.date,
                       timezone: str) -> Iterator[EndOfDay]:
    """``balance_id`` at the end of every day from ``first`` to ``last`` (inclusive), oldest first.

    Raises :class:`QueryError` for an empty or too long range (checked before any query) and
    ``BalanceNotFound`` (on the first day) for an unknown balance.
    """
    if last < first:
        raise QueryError(f"to {last} is before from {first}")
    if (last - first).days + 1 > MAX_HISTORY_DAYS:
        raise QueryError(f"from {first} to {last} is more than {MAX_HISTORY_DAYS} days: ask for a shorter range")
    for day in calendar.days(first, last):
        yield EndOfDay(day, engine.balance_at(balance_id, calendar.cutoff(day, timezone) - MICROSECOND))
