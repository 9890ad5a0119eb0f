"""What a balance query can refuse: bad input, an unknown balance, an amount that cannot be represented."""

from __future__ import annotations

from snapshot_pipeline import amounts


class QueryError(ValueError):
    """Bad input to a query (an unparseable or ambiguous timestamp, an empty interval...)."""


AmountOverflow = amounts.AmountOverflow


class BalanceNotFound(LookupError):
    """No balance with this ``balance_id`` exists in the ledger."""

    def __init__(self, balance_id: str):
        super().__init__(f"balance {balance_id!r} does not exist")
        self.balance_id = balance_id
