"""Exact amounts in Arrow: one place for widening, adding room and narrowing back (DESIGN §3).

On disk every amount is ``decimal128(38, 0)`` (integer minor units). While adding, values
are ``decimal256(60, 0)`` so that no sum of two stored amounts can overflow. A value that
does not fit, at either step, fails with the row (balance) and the value named.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

# The six amounts of a balance, as blnk.balances names them and the snapshot stores them.
AMOUNT_COLUMNS = (
    "balance",
    "credit_balance",
    "debit_balance",
    "inflight_balance",
    "inflight_credit_balance",
    "inflight_debit_balance",
)
STORED = pa.decimal128(38, 0)
WIDE = pa.decimal256(60, 0)
MAX_STORED = 10**38 - 1
WIDE_DIGITS = 60


class AmountOverflow(ValueError):
    """An amount does not fit the exact decimal type it must be stored or added in."""


def _array(column) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):  # one chunk is that chunk: combine_chunks would copy it
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def _label(labels, position: int) -> str:
    if labels is None:
        return f"row {position}"
    return f"balance {labels[position].as_py()!r}"


def widen(column, labels=None, name: str = "amount") -> pa.Array:
    """Text or decimal amounts -> ``decimal256(60, 0)``, failing with the row named if one has more digits.

    One checked cast: Arrow refuses a value that does not fit, and only then is the row looked for."""
    column = _array(column)
    try:
        return pc.cast(column, WIDE)
    except pa.ArrowInvalid:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            digits = pc.utf8_length(pc.utf8_ltrim(column, characters="-+"))
            too_long = pc.fill_null(pc.greater(digits, WIDE_DIGITS), False)
            if pc.any(too_long).as_py():
                position = pc.index(too_long, True).as_py()
                raise AmountOverflow(
                    f"{_label(labels, position)}: {name} = {column[position].as_py()} has more than"
                    f" {WIDE_DIGITS} digits and cannot be added exactly"
                ) from None
        raise


def zeros(n: int) -> pa.Array:
    """``n`` wide zeros."""
    return pa.repeat(pa.scalar(0, WIDE), n)


def narrow(values, labels=None, name: str = "amount") -> pa.Array:
    """``decimal256`` -> ``decimal128(38, 0)``, failing with the first row whose value does not fit.

    One checked cast: Arrow refuses a value that does not fit, and only then is the row looked for."""
    values = _array(values)
    try:
        return pc.cast(values, STORED)
    except pa.ArrowInvalid:
        too_big = pc.greater(pc.abs(values), pa.scalar(MAX_STORED, WIDE))
        if pc.any(too_big).as_py():
            position = pc.index(too_big, True).as_py()
            raise AmountOverflow(
                f"{_label(labels, position)}: {name} = {values[position].as_py()} does not fit decimal128(38, 0)"
            ) from None
        raise
