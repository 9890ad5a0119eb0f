-- Blnk's ledger tables (the columns snapshot_pipeline reads), for the demo and the tests.
-- snapshot_pipeline never runs this against a user's ledger.
CREATE SCHEMA IF NOT EXISTS blnk;

CREATE TABLE IF NOT EXISTS blnk.ledgers (
    id          SERIAL PRIMARY KEY,
    ledger_id   TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    meta_data   JSONB
);

CREATE TABLE IF NOT EXISTS blnk.balances (
    id                      SERIAL PRIMARY KEY,
    balance_id              TEXT NOT NULL UNIQUE,
    balance                 NUMERIC NOT NULL DEFAULT 0,
    credit_balance          NUMERIC NOT NULL DEFAULT 0,
    debit_balance           NUMERIC NOT NULL DEFAULT 0,
    inflight_balance        NUMERIC NOT NULL DEFAULT 0,
    inflight_credit_balance NUMERIC NOT NULL DEFAULT 0,
    inflight_debit_balance  NUMERIC NOT NULL DEFAULT 0,
    currency                TEXT NOT NULL,
    ledger_id               TEXT NOT NULL REFERENCES blnk.ledgers (ledger_id),
    identity_id             TEXT,
    indicator               TEXT,
    created_at              TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    meta_data               JSONB,
    version                 INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS blnk.transactions (
    id                  SERIAL PRIMARY KEY,
    transaction_id      TEXT NOT NULL UNIQUE,
    parent_transaction  TEXT,
    source              TEXT NOT NULL,
    destination         TEXT NOT NULL,
    reference           TEXT,
    amount              NUMERIC,
    precise_amount      NUMERIC,
    precision           BIGINT,
    currency            TEXT NOT NULL,
    description         TEXT,
    status              TEXT NOT NULL,
    created_at          TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    effective_date      TIMESTAMP,
    scheduled_for       TIMESTAMP,
    meta_data           JSONB
);

-- Blnk's own indexes on the journal.
CREATE INDEX IF NOT EXISTS idx_transactions_source ON blnk.transactions (source);
CREATE INDEX IF NOT EXISTS idx_transactions_destination ON blnk.transactions (destination);
CREATE INDEX IF NOT EXISTS idx_transactions_status ON blnk.transactions (status);
CREATE INDEX IF NOT EXISTS idx_transactions_parent_transaction ON blnk.transactions (parent_transaction);
CREATE INDEX IF NOT EXISTS idx_transactions_created_at ON blnk.transactions (created_at);
CREATE INDEX IF NOT EXISTS idx_transactions_effective_date ON blnk.transactions (effective_date);
