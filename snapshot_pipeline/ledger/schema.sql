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
    version                 INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT unique_indicator_currency UNIQUE (indicator, currency)  -- Blnk's: one balance per indicator and currency
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
    meta_data           JSONB,
    chain_seq           BIGINT,
    chain_hash          TEXT,
    chain_prev_hash     TEXT
);

-- The hash chain's bookmark (Blnk's chainer gives committed rows a gap-free chain_seq in commit order).
CREATE TABLE IF NOT EXISTS blnk.chain_state (
    id        INTEGER PRIMARY KEY DEFAULT 1,
    last_seq  BIGINT NOT NULL DEFAULT 0
);

-- Exactly the secondary indexes a real Blnk install has (DESIGN §2), under Blnk's own names (the final
-- state of Blnk's migrations): none on effective_date, none on plain created_at. snapshot_pipeline reads
-- the journal by primary key; `ledger-indexes` offers more.
CREATE INDEX IF NOT EXISTS idx_transactions_source ON blnk.transactions (source);
CREATE INDEX IF NOT EXISTS idx_transactions_destination ON blnk.transactions (destination);
CREATE INDEX IF NOT EXISTS blnk_transactions_created_at_source_idx ON blnk.transactions (created_at, source);
CREATE INDEX IF NOT EXISTS blnk_transactions_created_at_destination_idx ON blnk.transactions (created_at, destination);
CREATE INDEX IF NOT EXISTS idx_transactions_status ON blnk.transactions (status);
CREATE INDEX IF NOT EXISTS idx_transactions_currency ON blnk.transactions (currency);
CREATE UNIQUE INDEX IF NOT EXISTS idx_transactions_reference_unique ON blnk.transactions (reference);
CREATE INDEX IF NOT EXISTS idx_transactions_parent_transaction ON blnk.transactions (parent_transaction);
CREATE INDEX IF NOT EXISTS idx_txn_parent_status ON blnk.transactions (parent_transaction, status);
CREATE INDEX IF NOT EXISTS idx_txn_parent_created ON blnk.transactions (parent_transaction, created_at DESC);
CREATE INDEX IF NOT EXISTS blnk_txn_created_at_not_queued_idx
    ON blnk.transactions (created_at DESC) WHERE status <> 'QUEUED';
CREATE INDEX IF NOT EXISTS blnk_txn_currency_created_at_desc_idx
    ON blnk.transactions (currency, created_at DESC) INCLUDE (precision);
CREATE INDEX IF NOT EXISTS idx_transactions_meta_data ON blnk.transactions USING GIN (meta_data);
CREATE INDEX IF NOT EXISTS idx_transactions_queued_recovery ON blnk.transactions (created_at) WHERE status = 'QUEUED';
CREATE INDEX IF NOT EXISTS idx_txn_queued_source
    ON blnk.transactions (source, currency, created_at) WHERE status = 'QUEUED';
CREATE INDEX IF NOT EXISTS idx_txn_queued_destination
    ON blnk.transactions (destination, currency, created_at) WHERE status = 'QUEUED';
CREATE INDEX IF NOT EXISTS idx_txn_meta_inflight
    ON blnk.transactions ((meta_data ->> 'inflight')) WHERE (meta_data ->> 'inflight') = 'true';
CREATE INDEX IF NOT EXISTS idx_txn_meta_queued_parent ON blnk.transactions ((meta_data ->> 'QUEUED_PARENT_TRANSACTION'))
    WHERE (meta_data ->> 'QUEUED_PARENT_TRANSACTION') IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_txn_meta_shadow_for ON blnk.transactions ((meta_data ->> '_shadow_for'), created_at)
    WHERE (meta_data ->> '_shadow_for') IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS idx_transactions_chain_seq
    ON blnk.transactions (chain_seq) WHERE chain_seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_transactions_unchained ON blnk.transactions (id) WHERE chain_seq IS NULL;

CREATE INDEX IF NOT EXISTS blnk_balances_created_at_idx ON blnk.balances (created_at DESC);
CREATE INDEX IF NOT EXISTS blnk_balances_identity_id_idx ON blnk.balances (identity_id);
CREATE INDEX IF NOT EXISTS blnk_balances_ledger_id_idx ON blnk.balances (ledger_id);
CREATE INDEX IF NOT EXISTS blnk_balances_currency_identity_id_idx ON blnk.balances (currency, identity_id);
CREATE INDEX IF NOT EXISTS idx_balances_indicator ON blnk.balances (indicator);

-- Like Blnk: a recorded transaction never changes, but for its meta_data and chain columns.
CREATE OR REPLACE FUNCTION blnk.forbid_transaction_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (to_jsonb(NEW) - 'meta_data' - 'chain_seq' - 'chain_hash' - 'chain_prev_hash')
       IS DISTINCT FROM (to_jsonb(OLD) - 'meta_data' - 'chain_seq' - 'chain_hash' - 'chain_prev_hash') THEN
        RAISE EXCEPTION 'blnk.transactions rows are immutable (only meta_data and chain_* may change)';
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS transactions_immutable ON blnk.transactions;
CREATE TRIGGER transactions_immutable BEFORE UPDATE ON blnk.transactions
    FOR EACH ROW EXECUTE FUNCTION blnk.forbid_transaction_update();
