-- The roll-forward state is written by COPY in the commit transaction, thousands of rows a day; a foreign key
-- checks each row against snapshot_index.partitions (one trigger call per row: 0.4 s for 16k rows measured,
-- more than the rest of the index commit). Its rows are written and deleted only with their partition's
-- manifest row, in the same transaction (store.roll_state.replace, store.index.delete_manifests), so the key is
-- kept by the code that writes them.
ALTER TABLE snapshot_index.roll_state DROP CONSTRAINT IF EXISTS roll_state_snapshot_date_fkey;

-- A pending row (kind T) carries its leg, so the next partition does not read it from blnk.transactions
-- again (Blnk's journal rows never change). Rows written before this migration list ids only (NULL here):
-- the next step reads those by primary key and stores them with their legs.
ALTER TABLE snapshot_index.roll_state
    ADD COLUMN transaction_id     TEXT,
    ADD COLUMN source             TEXT,
    ADD COLUMN destination        TEXT,
    ADD COLUMN status             TEXT,
    ADD COLUMN parent_transaction TEXT,
    ADD COLUMN amount             NUMERIC,
    ADD COLUMN currency           TEXT;
