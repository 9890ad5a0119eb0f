-- Statements over one partition's index rows filter on snapshot_date alone: the commit's DELETE before it
-- writes a day's rows, the manifest check's count, the live-drift check's and the audit's reads of a day's
-- rows. The primary key (balance_id, snapshot_date) leads with balance_id, for balance_at, so each of them
-- walked the whole month's key index. Measured at 1M balances with two days in the month: the DELETE of a
-- day with no rows 101 ms -> 0.1 ms, a day's count 244 ms -> 41 ms; by the month's end the walk is 15x
-- longer. All rows of a day share one key, so the index stays small (deduplicated: 8 MB for 1.25M rows).
-- Built once, by the first writer after an upgrade, under a SHARE lock that holds other index commits back
-- while it builds (about a second per 10M index rows); PostgreSQL builds a partitioned table's index only so.
CREATE INDEX IF NOT EXISTS balance_snapshots_snapshot_date_idx ON snapshot_index.balance_snapshots (snapshot_date);
