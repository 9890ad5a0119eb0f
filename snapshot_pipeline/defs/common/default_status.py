"""Whether a schedule or sensor starts RUNNING or STOPPED when the code location first loads.

``SNAPSHOT_AUTOMATION_DEFAULT_STATUS`` (default RUNNING: a snapshot store must run itself) for every
automation, ``SNAPSHOT_RETENTION_DEFAULT_STATUS`` (default STOPPED: deleting history is opt-in) for the
retention schedule; either can be switched in the UI at any time.
"""

from __future__ import annotations

import dagster as dg


def schedule_status(running: bool) -> dg.DefaultScheduleStatus:
    return dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED


def sensor_status(running: bool) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED
