"""Answers: one balance at one instant, a balance's movement over an interval, and Blnk's JSON shapes."""

from __future__ import annotations

import dataclasses
import datetime as dt

from snapshot_pipeline import amounts
from snapshot_pipeline.query.errors import AmountOverflow
from snapshot_pipeline.query.instants import iso_utc


@dataclasses.dataclass(frozen=True)
class Anchor:
    """The snapshot partition an answer started from."""

    snapshot_date: dt.date
    cutoff_at: dt.datetime
    max_transaction_id: int

    def as_dict(self) -> dict:
        return {
            "snapshot_date": self.snapshot_date.isoformat(),
            "cutoff": iso_utc(self.cutoff_at),
            "watermark_transaction_id": self.max_transaction_id,
        }


@dataclasses.dataclass(frozen=True)
class BalanceAt:
    """The value of one balance at one instant, and what it was built from."""

    balance_id: str
    at: dt.datetime
    existed: bool
    currency: str
    ledger_id: str | None
    created_at: dt.datetime
    credit_balance: int
    debit_balance: int
    inflight_credit_balance: int
    inflight_debit_balance: int
    anchor: Anchor | None
    replayed_transactions: int
    from_source: bool

    @property
    def balance(self) -> int:
        return self.credit_balance - self.debit_balance

    @property
    def inflight_balance(self) -> int:
        return self.inflight_credit_balance - self.inflight_debit_balance

    def amounts(self) -> dict[str, int]:
        return {
            "balance": self.balance,
            "credit_balance": self.credit_balance,
            "debit_balance": self.debit_balance,
            "inflight_balance": self.inflight_balance,
            "inflight_credit_balance": self.inflight_credit_balance,
            "inflight_debit_balance": self.inflight_debit_balance,
        }

    def as_blnk(self) -> dict:
        """Blnk's ``GET /balances/{id}/at`` response shape, plus our additions (exact integers)."""
        return {
            "balance": {
                "balance": self.balance,
                "debit_balance": self.debit_balance,
                "credit_balance": self.credit_balance,
                "currency": self.currency,
                "balance_id": self.balance_id,
            },
            "timestamp": iso_utc(self.at),
            "from_source": self.from_source,
            "inflight": {
                "inflight_balance": self.inflight_balance,
                "inflight_credit_balance": self.inflight_credit_balance,
                "inflight_debit_balance": self.inflight_debit_balance,
            },
            "existed": self.existed,
            "anchor": self.anchor.as_dict() if self.anchor else None,
            "replayed_transactions": self.replayed_transactions,
        }

    def as_dict(self) -> dict:
        return {
            "balance_id": self.balance_id,
            "timestamp": iso_utc(self.at),
            "currency": self.currency,
            "ledger_id": self.ledger_id,
            **self.amounts(),
            "existed": self.existed,
            "balance_created_at": iso_utc(self.created_at),
            "from_source": self.from_source,
            "anchor": self.anchor.as_dict() if self.anchor else None,
            "replayed_transactions": self.replayed_transactions,
        }


@dataclasses.dataclass(frozen=True)
class BalanceChange:
    """Movement of one balance over ``[start, end)``: opening = effective < start, closing = effective < end."""

    balance_id: str
    start: dt.datetime
    end: dt.datetime
    opening: BalanceAt
    closing: BalanceAt

    @property
    def credits(self) -> int:
        """Σ APPLIED credits with effective time in ``[start, end)``."""
        return self.closing.credit_balance - self.opening.credit_balance

    @property
    def debits(self) -> int:
        """Σ APPLIED debits with effective time in ``[start, end)``."""
        return self.closing.debit_balance - self.opening.debit_balance

    def as_dict(self) -> dict:
        return {
            "balance_id": self.balance_id,
            "start": iso_utc(self.start),
            "end": iso_utc(self.end),
            "currency": self.closing.currency,
            "opening_balance": self.opening.balance,
            "closing_balance": self.closing.balance,
            "credits": self.credits,
            "debits": self.debits,
            "net_change": self.closing.balance - self.opening.balance,
            "opening": self.opening.as_dict(),
            "closing": self.closing.as_dict(),
        }


def check_representable(answer: BalanceAt) -> BalanceAt:
    """``answer``, or :class:`AmountOverflow` naming the balance, the amount and its value when one of
    its six amounts does not fit the project's exact amount type, ``decimal128(38, 0)`` (DESIGN §3)."""
    values = answer.amounts()
    for name in ("credit_balance", "debit_balance", "inflight_credit_balance", "inflight_debit_balance", "balance",
                 "inflight_balance"):
        value = values[name]
        if abs(value) > amounts.MAX_STORED:
            raise AmountOverflow(f"balance {answer.balance_id!r}: {name} = {value} at {iso_utc(answer.at)}"
                                 " does not fit decimal128(38, 0)")
    return answer
