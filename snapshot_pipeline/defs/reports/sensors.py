"""The automation sensor of the report assets: it evaluates their automation conditions (``after_snapshots``)."""

import dagster as dg

from snapshot_pipeline.defs.common.default_status import sensor_status
from snapshot_pipeline.settings import Settings

SENSOR_NAME = "reports_automation_sensor"


def build_reports_sensor(report_assets: list[dg.AssetsDefinition], settings: Settings
                         ) -> dg.AutomationConditionSensorDefinition:
    """Evaluates the reports' automation conditions every 30 seconds (RUNNING unless
    SNAPSHOT_AUTOMATION_DEFAULT_STATUS=STOPPED, like the other automations)."""
    return dg.AutomationConditionSensorDefinition(
        SENSOR_NAME,
        target=dg.AssetSelection.assets(*report_assets),
        default_status=sensor_status(settings.automation_running),
        minimum_interval_seconds=30,
        description="Requests report partitions once the balance_snapshots partitions they read exist.",
    )
