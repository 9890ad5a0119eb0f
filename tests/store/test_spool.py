"""The index spool: changed rows encoded as binary COPY data load into the index exactly as they were."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pyarrow as pa

from snapshot_pipeline.store import index
from snapshot_pipeline.store.parquet import AMOUNT, AMOUNT_COLUMNS
from snapshot_pipeline.store.spool import IndexSpool

DAY = dt.date(2026, 11, 30)
# the extremes of decimal128(38, 0), both signs, and values across numeric's base-10000 digit boundaries
VALUES = [0, 1, -1, 9999, 10_000, -10_001, 10**38 - 1, -(10**38 - 1), 123456789012345678901234567890, -10**20]


def _changed_rows() -> pa.Table:
    n = len(VALUES)
    columns = {"balance_id": pa.array([f"bln_{i:03d}" for i in range(n)]),
               "currency": pa.array([None if i % 3 == 0 else "USD" for i in range(n)])}
    for shift, name in enumerate(AMOUNT_COLUMNS):  # each column its own rotation: a mixed-up column shows
        columns[name] = pa.array([Decimal(VALUES[(i + shift) % n]) for i in range(n)], AMOUNT)
    return pa.table(columns)


def test_spooled_rows_load_into_the_index_exactly(make_database, tmp_path):
    table = _changed_rows()
    spool = IndexSpool(tmp_path, DAY)
    spool.write(table.slice(0, 4))  # several writes, one file
    spool.write(table.slice(4, 0))
    spool.write(table.slice(4))
    path = spool.close()
    assert path is not None and spool.rows == table.num_rows
    with psycopg.connect(make_database(), autocommit=True) as conn:
        index.migrate(conn)
        assert index.replace_rows(conn, DAY, path) == table.num_rows
        rows = conn.execute(
            "SELECT balance_id, snapshot_date, balance::text, credit_balance::text, debit_balance::text,"
            " inflight_balance::text, inflight_credit_balance::text, inflight_debit_balance::text, currency"
            " FROM snapshot_index.balance_snapshots ORDER BY balance_id").fetchall()
    expected = [(row["balance_id"], DAY, *[str(row[name]) for name in AMOUNT_COLUMNS], row["currency"])
                for row in table.to_pylist()]
    assert rows == expected


def test_an_empty_or_reset_spool_loads_nothing(make_database, tmp_path):
    spool = IndexSpool(tmp_path, DAY)
    assert spool.close() is None
    spool.write(_changed_rows())
    spool.reset()
    assert not spool.path.exists() and spool.rows == 0 and spool.close() is None
    with psycopg.connect(make_database(), autocommit=True) as conn:
        index.migrate(conn)
        assert index.replace_rows(conn, DAY, None) == 0
        assert conn.execute("SELECT count(*) FROM snapshot_index.balance_snapshots").fetchone()[0] == 0
