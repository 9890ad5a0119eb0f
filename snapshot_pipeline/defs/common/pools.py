"""Dagster pools: how many steps may work against one database at once, across every run of the instance.

``ledger_db`` is carried by the steps that query the ledger's PostgreSQL database:

* ``balance_snapshots`` (the consistent read of the ledger and the journal delta) and its in-run checks
  (``snapshot_file_checks`` counts the ledger's balances, ``sampled_recomputation_matches`` recomputes
  from the journal, ``live_balances_match`` reads the live rows);
* ``plan_shards``, the one ledger read of the sharded job (``merge_shard`` reads only the store's files,
  and ``commit_shards`` writes the index: neither carries the pool, so shards still merge in parallel);
* ``balance_snapshots_audit`` (two full file reads compared with the snapshot index in SQL: the index
  lives in the ledger's database unless ``SNAPSHOT_DATABASE_URL`` names another);
* the reports that read the ledger: ``balance_movements`` (the day's journal legs) and
  ``reconciliation_report`` (the live balances and the journal since the snapshot).
  ``ledger_currency_totals`` and ``month_end_balances`` read only snapshot files.

A pool is unlimited until the instance gives it a limit (docs/dagster.md, "Pools"): either
``dagster instance concurrency set ledger_db 2`` or, in ``dagster.yaml``, ``concurrency: pools:
default_limit: 2`` (every pool without a limit of its own). A step then waits for a free slot before it
starts; the runs it belongs to still count against ``max_concurrent_runs``.
"""

LEDGER_DB_POOL = "ledger_db"
