"""Index migrations are versioned and idempotent; month partitions are created on demand."""

from __future__ import annotations

import datetime as dt

import psycopg

from snapshot_pipeline.store import index


def test_migrations_are_idempotent_and_recorded(make_database):
    url = make_database()
    with psycopg.connect(url, autocommit=True) as conn:
        applied = index.migrate(conn)
        assert applied == [name for _, name, _ in index.migrations()]
        assert index.migrate(conn) == []
        versions = [r[0] for r in conn.execute("SELECT version FROM snapshot_index.schema_migrations ORDER BY 1")]
        assert versions == [v for v, _, _ in index.migrations()]


def test_month_partitions_hold_their_month(make_database):
    url = make_database()
    with psycopg.connect(url, autocommit=True) as conn:
        index.migrate(conn)
        assert index.ensure_month_partition(conn, dt.date(2026, 2, 28)) == "balance_snapshots_2026_02"
        index.ensure_month_partition(conn, dt.date(2026, 2, 1))  # same month: no error, no new table
        bound = conn.execute(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c"
            " WHERE c.relname = 'balance_snapshots_2026_02'"
        ).fetchone()[0]
        assert "'2026-02-01'" in bound and "'2026-03-01'" in bound
        parts = conn.execute("SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent"
                             " WHERE p.relname = 'balance_snapshots'").fetchone()[0]
        assert parts == 1


def test_a_days_index_rows_are_found_by_date_not_by_walking_the_month(make_database):
    """Per-partition statements (the commit's DELETE, the count, the checks' reads) filter on snapshot_date
    alone; the primary key leads with balance_id, so they go through the date index, in every month."""
    url = make_database()
    with psycopg.connect(url, autocommit=True) as conn:
        index.migrate(conn)
        index.ensure_month_partition(conn, dt.date(2026, 3, 5))
        conn.execute("SET enable_seqscan = off")
        for statement in ("DELETE FROM snapshot_index.balance_snapshots WHERE snapshot_date = %s",
                          "SELECT count(*) FROM snapshot_index.balance_snapshots WHERE snapshot_date = %s"):
            plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + statement, (dt.date(2026, 3, 5),)))
            assert "balance_snapshots_2026_03_snapshot_date_idx" in plan, plan
