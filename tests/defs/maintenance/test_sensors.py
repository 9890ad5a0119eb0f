"""The run-failure sensor on a real failed run, against a real loopback HTTP webhook and a dead one."""

from __future__ import annotations

import http.server
import json
import socket
import threading

import dagster as dg
import pytest

from snapshot_pipeline import alerts
from snapshot_pipeline.definitions import build_definitions
from snapshot_pipeline.defs.common.resources import SnapshotStoreResource
from snapshot_pipeline.defs.maintenance.sensors import ALERT_KIND, FAILURE_SENSOR
from snapshot_pipeline.defs.snapshots.jobs import SNAPSHOT_JOB
from tests.conftest import make_settings


class Webhook:
    """A tiny HTTP server on a loopback port that records POSTed JSON and answers ``status``."""

    def __init__(self, status: int = 200):
        self.received: list[dict] = []
        self.status = status
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                outer.received.append(json.loads(self.rfile.read(length)))
                self.send_response(outer.status)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def dead_url() -> str:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/alerts"


def failing_defs(adversarial_url, tmp_path, webhook: str | None) -> dg.Definitions:
    settings = make_settings(adversarial_url, tmp_path / "store").with_overrides(alert_webhook_url=webhook)
    broken = SnapshotStoreResource(ledger_database_url="postgresql://postgres@127.0.0.1:1/none",
                                   storage_uri=settings.storage_uri)
    return build_definitions(settings, broken)


def tick(defs, instance, cursor):
    sensor = defs.resolve_sensor_def(FAILURE_SENSOR)
    return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs))


def fail_a_run(defs, instance):
    result = defs.resolve_job_def(SNAPSHOT_JOB).execute_in_process(partition_key="2026-10-30", instance=instance,
                                                                   raise_on_error=False)
    assert not result.success
    return result.run_id


def test_failure_sensor_fires_on_a_failed_run_and_posts_the_alert(adversarial_url, tmp_path, capfd):
    with Webhook() as hook, dg.instance_for_test() as instance:
        defs = failing_defs(adversarial_url, tmp_path, hook.url)
        first = tick(defs, instance, None)  # a run-status sensor starts from "now"
        assert not first.dagster_run_reactions and hook.received == []
        run_id = fail_a_run(defs, instance)
        data = tick(defs, instance, first.cursor)
        assert [r.dagster_run.run_id for r in data.dagster_run_reactions] == [run_id]
        assert data.dagster_run_reactions[0].error is None
        assert len(hook.received) == 1
        alert = hook.received[0]
        assert alert["alert"] == ALERT_KIND and alert["severity"] == "error"
        assert alert["job"] == SNAPSHOT_JOB and alert["run_id"] == run_id and alert["partition"] == "2026-10-30"
        assert alert["failed_steps"][0]["step"] == "balance_snapshots"
        assert "cannot connect to the" in alert["failed_steps"][0]["error"]
        # the same JSON is logged as one structured line of the sensor's log
        logged = [line.split("operation=run_failure_alert ", 1)[1] for line in capfd.readouterr().err.splitlines()
                  if "operation=run_failure_alert {" in line]
        assert len(logged) == 1 and json.loads(logged[0]) == alert
        # the same failure is not alerted twice
        again = tick(defs, instance, data.cursor)
        assert not again.dagster_run_reactions and len(hook.received) == 1


@pytest.mark.parametrize("kind", ["dead port", "HTTP 500"])
def test_a_dead_or_failing_webhook_never_breaks_the_sensor(adversarial_url, tmp_path, kind):
    with Webhook(status=500) as failing, dg.instance_for_test() as instance:
        url = dead_url() if kind == "dead port" else failing.url
        defs = failing_defs(adversarial_url, tmp_path, url)
        cursor = tick(defs, instance, None).cursor
        run_id = fail_a_run(defs, instance)
        data = tick(defs, instance, cursor)
        assert [r.dagster_run.run_id for r in data.dagster_run_reactions] == [run_id]
        assert data.dagster_run_reactions[0].error is None  # the sensor itself succeeded
        if kind == "HTTP 500":
            assert len(failing.received) == alerts.ATTEMPTS  # bounded retries
        # and it keeps working: the next failure is processed too
        second = fail_a_run(defs, instance)
        data = tick(defs, instance, data.cursor)
        assert [r.dagster_run.run_id for r in data.dagster_run_reactions] == [second]


def test_post_json_is_bounded(tmp_path):
    with Webhook(status=400) as bad_request:
        delivery = alerts.post_json(bad_request.url, {"x": 1}, attempts=3, backoff=0)
        assert not delivery.delivered and delivery.attempts == 1 and delivery.status == 400  # no retry on 4xx
    delivery = alerts.post_json(dead_url(), {"x": 1}, attempts=2, backoff=0, timeout=1)
    assert not delivery.delivered and delivery.attempts == 2 and "2 attempts" in delivery.error
    # a webhook that accepts the connection but never answers: the timeout ends each attempt
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/alerts"
        delivery = alerts.post_json(url, {"x": 1}, attempts=2, backoff=0, timeout=0.3)
    assert not delivery.delivered and delivery.attempts == 2 and "timed out" in delivery.error.lower()
