"""Downstream reports computed from the snapshot Parquet dataset (and the journal), without Dagster.

Each report streams the snapshot files with pyarrow (no Python object per
balance) and writes one Hive partition under ``<SNAPSHOT_STORAGE_URI>/reports/<report>/``
atomically, with the same writer as the snapshots (:mod:`snapshot_pipeline.store.parquet`):

* :mod:`.movements` - ``balance_movements``: per balance, opening/closing balance, credits, debits, legs;
* :mod:`.totals` - ``ledger_currency_totals``: per ledger and currency, count and sums;
* :mod:`.month_end` - ``month_end_balances``: every balance at a month's last cutoff (Parquet and CSV);
* :mod:`.reconciliation` - ``reconciliation_report``: live balances that drift from snapshot + later legs.
"""
