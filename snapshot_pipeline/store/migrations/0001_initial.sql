-- Manifest: one row per published partition. Its row is the commit point of a partition.
CREATE TABLE snapshot_index.partitions (
    snapshot_date       DATE PRIMARY KEY,
    cutoff_at           TIMESTAMP NOT NULL,
    timezone            TEXT NOT NULL,
    max_transaction_id  BIGINT NOT NULL,
    transaction_count   BIGINT NOT NULL,
    max_balance_id      BIGINT NOT NULL,
    pg_snapshot         TEXT NOT NULL,
    read_at             TIMESTAMP NOT NULL,
    row_count           BIGINT NOT NULL,
    changed_count       BIGINT NOT NULL,
    index_rows          BIGINT NOT NULL,
    files               JSONB NOT NULL,
    bytes               BIGINT NOT NULL,
    checksum            TEXT NOT NULL,
    mode                TEXT NOT NULL,
    base_date           DATE,
    batch_size          INTEGER NOT NULL,
    duration_ms         BIGINT NOT NULL,
    dagster_run_id      TEXT,
    materialized_at     TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);

-- Per-balance values, written only where a balance changed since the previous partition.
-- Partitioned by month so old months drop whole; the primary key answers
-- "latest snapshot of X at or before D" with one backward index seek per month.
CREATE TABLE snapshot_index.balance_snapshots (
    balance_id               TEXT NOT NULL,
    snapshot_date            DATE NOT NULL,
    balance                  NUMERIC NOT NULL,
    credit_balance           NUMERIC NOT NULL,
    debit_balance            NUMERIC NOT NULL,
    inflight_balance         NUMERIC NOT NULL,
    inflight_credit_balance  NUMERIC NOT NULL,
    inflight_debit_balance   NUMERIC NOT NULL,
    currency                 TEXT,
    PRIMARY KEY (balance_id, snapshot_date)
) PARTITION BY RANGE (snapshot_date);
