"""The Dagster shell around the library, one package per feature (a façade: nothing is defined here).

``snapshots/`` (``balance_snapshots``, its checks, jobs, schedules and sensors), ``reports/`` (the report
assets and their automation sensor), ``maintenance/`` (the diff audit, retention, run-failure alerting),
and ``common/`` (partitions, resources, executors, pools, default statuses, Dagster internals).
``snapshot_pipeline/definitions.py`` assembles them into the code location.
"""
