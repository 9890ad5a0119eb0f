-- Roll-forward state of each partition (DESIGN §3): what the next partition reads by key instead of
-- scanning the journal. kind: T pending transaction (id, effective time at), O orphan child (a commit
-- or void whose INFLIGHT parent did not count yet),
-- G / H an id of blnk.transactions / blnk.balances the partition's view could not see (xmax: the
-- snapshot xmax (seen_xmax) of the view that first missed it; retired once every older transaction has ended).
CREATE TABLE snapshot_index.roll_state (
    snapshot_date  DATE NOT NULL REFERENCES snapshot_index.partitions (snapshot_date) ON DELETE CASCADE,
    kind           CHAR(1) NOT NULL,
    id             BIGINT NOT NULL,
    at             TIMESTAMP,
    seen_xmax      BIGINT,
    PRIMARY KEY (snapshot_date, kind, id)
);

-- Which roll-forward format a partition was computed with (NULL: before roll-forward; never a base),
-- and where the next partition re-reads blnk.transactions and blnk.balances from (by primary key).
ALTER TABLE snapshot_index.partitions ADD COLUMN roll_version INTEGER;
ALTER TABLE snapshot_index.partitions ADD COLUMN reread_transaction_id BIGINT;
ALTER TABLE snapshot_index.partitions ADD COLUMN reread_balance_id BIGINT;
