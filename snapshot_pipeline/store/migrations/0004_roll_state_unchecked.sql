-- The roll-forward state is written by COPY in the commit transaction, thousands of rows a day; a foreign key
-- checks each row against snapshot_index.partitions (one trigger call per row: 0.4 s for 16k rows measured,
-- more than the rest of the index commit). Its rows are written and deleted only with their partition's
-- manifest row, in the same transaction (index.replace_roll_state, index.delete_manifests), so the key is
-- kept by the code that writes them.
ALTER TABLE snapshot_index.roll_state DROP CONSTRAINT IF EXISTS roll_state_snapshot_date_fkey;
