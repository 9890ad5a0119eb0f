"""Run-failure alerting (``snapshot_run_failure_sensor``): a structured log line for every failed run of the code
location, POSTed to a webhook when configured."""

import datetime as dt
import json

import dagster as dg

from snapshot_pipeline import alerts, run_errors
from snapshot_pipeline.db import redact
from snapshot_pipeline.defs.common.default_status import sensor_status
from snapshot_pipeline.names import TRIGGER_TAG
from snapshot_pipeline.settings import Settings

FAILURE_SENSOR = "snapshot_run_failure_sensor"
ALERT_KIND = "snapshot_pipeline.run_failure"
_TAGS = ("dagster/partition", "dagster/schedule_name", "dagster/sensor_name", "dagster/backfill", TRIGGER_TAG,
         "snapshot_pipeline/month")


def build_alert(context: dg.RunFailureSensorContext) -> dict:
    """The alert payload: what failed, where, why (JSON-able)."""
    run = context.dagster_run
    steps = []
    for event in context.get_step_failure_events():
        error = run_errors.user_error(event.step_failure_data.error if event.step_failure_data else None)
        steps.append({"step": event.step_key, "error": error.message.strip() if error else event.message})
    return {
        "alert": ALERT_KIND,
        "severity": "error",
        "job": run.job_name,
        "run_id": run.run_id,
        "partition": run.tags.get("dagster/partition"),
        "tags": {k: run.tags[k] for k in _TAGS if k in run.tags},
        "message": context.failure_event.message,
        "failed_steps": steps,
        "alerted_at": dt.datetime.now(dt.UTC).isoformat(),
    }


def build_run_failure_sensor(settings: Settings, *, timeout: float = alerts.TIMEOUT_SECONDS,
                             attempts: int = alerts.ATTEMPTS) -> dg.SensorDefinition:
    webhook = settings.alert_webhook_url

    @dg.run_failure_sensor(
        name=FAILURE_SENSOR,
        default_status=sensor_status(settings.automation_running),
        minimum_interval_seconds=30,
        description="Alerts on every failed run of this code location: a structured log line and, when"
                    " SNAPSHOT_ALERT_WEBHOOK_URL is set, a JSON POST to it (3 attempts, 5 s timeout each).",
    )
    def snapshot_run_failure_sensor(context: dg.RunFailureSensorContext):
        """Alerts on every failed run of this code location (snapshot, repair, gap-fill, retention).

        Logs one structured line (`operation=run_failure_alert` + JSON) and, when
        SNAPSHOT_ALERT_WEBHOOK_URL is set, POSTs the same JSON to it: a 5-second timeout per
        attempt, 3 attempts with backoff. A dead or failing webhook is logged as a warning and
        never fails the sensor.
        """
        alert = build_alert(context)
        context.log.error("operation=run_failure_alert " + json.dumps(alert, default=str))
        if not webhook:
            return
        delivery = alerts.post_json(webhook, alert, timeout=timeout, attempts=attempts)
        if delivery.delivered:
            context.log.info(f"operation=run_failure_alert run_id={alert['run_id']} webhook={redact(webhook)}"
                             f" status={delivery.status} attempts={delivery.attempts}")
        else:
            context.log.warning(f"operation=run_failure_alert run_id={alert['run_id']} webhook_delivery=failed"
                                f" error={delivery.error}")

    return snapshot_run_failure_sensor
