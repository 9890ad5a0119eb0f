"""What every feature of the code location shares (a façade: no definitions of its own).

``partitions`` (daily and monthly, in the business time zone), ``resources`` (the snapshot store, the
sharded job's IO manager), ``executors`` (``SNAPSHOT_EXECUTOR``), ``pools`` (``ledger_db``),
``default_status`` (RUNNING or STOPPED), ``outcomes`` (quality outcomes as check metadata) and
``dagster_internals`` (the only importer of ``dagster._core``).
"""
