"""The report assets in Dagster (a façade: the definitions live in the modules below).

``assets`` (``balance_movements``, ``ledger_currency_totals``, ``month_end_balances``,
``reconciliation_report`` and their automation conditions), ``sensors`` (``reports_automation_sensor``).
"""

from snapshot_pipeline.defs.reports.assets import build_report_assets
from snapshot_pipeline.defs.reports.sensors import build_reports_sensor

__all__ = ["build_report_assets", "build_reports_sensor"]
