-- Delta Lake publication (DESIGN §8). Each publish of a partition is a *generation*: the manifest row
-- (partitions) names the current one, partition_versions keeps every generation inside the history
-- window: the files it published ([] = the partition was retired), the Delta table version that
-- carries it (NULL until the Delta commit is recorded: the recovery replays it), and why it was made.
ALTER TABLE snapshot_index.partitions ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE snapshot_index.partitions ADD COLUMN delta_version BIGINT;
ALTER TABLE snapshot_index.partitions ADD COLUMN reason TEXT;

CREATE TABLE snapshot_index.partition_versions (
    snapshot_date       DATE NOT NULL,
    generation          BIGINT NOT NULL,
    files               JSONB NOT NULL,
    delta_version       BIGINT,
    row_count           BIGINT NOT NULL,
    changed_count       BIGINT NOT NULL,
    max_transaction_id  BIGINT,
    read_at             TIMESTAMP,
    checksum            TEXT,
    dagster_run_id      TEXT,
    reason              TEXT NOT NULL,
    committed_at        TIMESTAMP NOT NULL DEFAULT (clock_timestamp() AT TIME ZONE 'UTC'),
    synced_at           TIMESTAMP,  -- when its Delta commit was recorded (the files it superseded left the log then)
    PRIMARY KEY (snapshot_date, generation)
);

-- The recovery's question "which generations are not in the Delta log yet?" without a scan.
CREATE INDEX partition_versions_unsynced ON snapshot_index.partition_versions (snapshot_date)
    WHERE delta_version IS NULL;
