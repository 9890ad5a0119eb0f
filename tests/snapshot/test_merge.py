"""One aligned chunk rolled forward (``merge.roll_chunk``), in Arrow alone: the ledger's current attributes
replace the base's for the balances the ledger holds, and only there; amounts are added; balances enter."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from snapshot_pipeline import amounts
from snapshot_pipeline.snapshot import merge
from snapshot_pipeline.store import parquet

CUTOFF = dt.datetime(2026, 11, 3)
CREATED = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)


def _base(rows: list[tuple]) -> pa.Table:
    """Base rows: (id, ledger, identity, indicator, currency, credit, debit)."""
    columns = {name: [] for name in merge.BASE_COLUMNS}
    for balance_id, ledger, identity, indicator, currency, credit, debit in rows:
        for name, value in (("balance_id", balance_id), ("ledger_id", ledger), ("identity_id", identity),
                            ("indicator", indicator), ("currency", currency), ("credit_balance", credit),
                            ("debit_balance", debit), ("balance", credit - debit), ("inflight_credit_balance", 0),
                            ("inflight_debit_balance", 0), ("inflight_balance", 0),
                            ("balance_created_at", CREATED)):
            columns[name].append(value)
    return pa.table(columns, schema=merge.BASE_SCHEMA)


def _delta(rows: list[tuple]) -> pa.Table:
    """Prepared delta rows: (id, ledger, identity, indicator, currency, credit, debit, known)."""
    names = ["balance_id", *merge.ATTRIBUTES[:4], "credit", "debit", "inflight_credit", "inflight_debit",
             "balance_created_at", "known"]
    values = [[r[0] for r in rows], *[[r[i] for r in rows] for i in range(1, 5)],
              [r[5] for r in rows], [r[6] for r in rows], [0] * len(rows), [0] * len(rows),
              [CREATED] * len(rows), [r[7] for r in rows]]
    types = [pa.string()] * 5 + [amounts.WIDE] * 4 + [parquet.UTC_TS, pa.bool_()]
    return pa.table([pa.array(v, t) for v, t in zip(values, types, strict=True)], names=names)


def test_attributes_change_where_the_ledger_holds_the_balance_and_nowhere_else():
    base = _base([
        ("b1", "L1", None, "old", "USD", 10, 0),     # its identity and indicator change in the ledger
        ("b2", "L1", "i2", "keep", "USD", 5, 1),     # a leg, same attributes
        ("b3", "L2", "i3", "gone", "EUR", 7, 0),     # a leg, the ledger no longer has its row: attributes kept
        ("b5", "L2", "i5", "still", "EUR", 3, 0),    # no leg
    ])
    delta = _delta([
        ("b1", "L1", "i1", "new", "USD", 1, 0, True),
        ("b2", "L1", "i2", "keep", "USD", 0, 2, True),
        ("b3", None, None, None, None, 4, 0, False),
        ("b4", "L3", "i4", "entering", "GBP", 0, 0, True),  # enters at zero: changed all the same
    ])
    rows, changed = merge.roll_chunk(base, delta, CUTOFF)
    assert rows.schema == parquet.SNAPSHOT_SCHEMA
    got = {r["balance_id"]: r for r in rows.to_pylist()}
    assert list(got) == ["b1", "b2", "b3", "b4", "b5"]
    assert (got["b1"]["identity_id"], got["b1"]["indicator"], got["b1"]["credit_balance"]) == ("i1", "new", 11)
    assert (got["b2"]["indicator"], got["b2"]["debit_balance"], got["b2"]["balance"]) == ("keep", 3, 2)
    assert (got["b3"]["ledger_id"], got["b3"]["identity_id"], got["b3"]["indicator"], got["b3"]["currency"],
            got["b3"]["credit_balance"]) == ("L2", "i3", "gone", "EUR", 11)
    assert (got["b4"]["indicator"], got["b4"]["currency"], got["b4"]["balance"]) == ("entering", "GBP", 0)
    assert got["b5"] == {**base.slice(3).to_pylist()[0], "cutoff_at": CUTOFF.replace(tzinfo=dt.UTC)}
    assert sorted(changed["balance_id"].to_pylist()) == ["b1", "b2", "b3", "b4"]


def _data_address(column) -> int:
    return column.chunk(0).buffers()[-1].address  # a string column's character data


def test_a_chunk_whose_attributes_are_unchanged_keeps_the_base_columns_without_a_copy():
    """The ids never change and most chunks' attributes neither: those columns are the base's own buffers
    (rebuilding a string column costs ~40 ms a million rows); a changed attribute's column is rebuilt."""
    base = _base([("a", "L", None, "x", "USD", 1, 0), ("b", "L", "i", "y", "USD", 2, 0)])
    delta = _delta([("b", "L", "i", "y", "USD", 5, 0, True)])
    rows, changed = merge.roll_chunk(base, delta, CUTOFF)
    for name in ("balance_id", *merge.ATTRIBUTES[:4]):
        assert rows[name].to_pylist() == base[name].to_pylist(), name
        assert _data_address(rows[name]) == _data_address(base[name]), name
    assert rows["credit_balance"].to_pylist() == [1, 7] and changed["balance_id"].to_pylist() == ["b"]
    renamed, _ = merge.roll_chunk(base, _delta([("b", "L", "i", "z", "USD", 5, 0, True)]), CUTOFF)
    assert renamed["indicator"].to_pylist() == ["x", "z"]
    assert _data_address(renamed["indicator"]) != _data_address(base["indicator"])
    assert _data_address(renamed["currency"]) == _data_address(base["currency"])
