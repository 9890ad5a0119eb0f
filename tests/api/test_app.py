"""The HTTP service, run for real: uvicorn on loopback ports, a real Dagster webserver, a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import io
import json
import random
import re
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import httpx
import psycopg
import pyarrow as pa
import pytest

from snapshot_pipeline import calendar, snapshot
from snapshot_pipeline.api import metrics as metrics_module
from tests.conftest import make_settings
from tests.oracle import AMOUNTS, existing_balances, expected_snapshot, snapshot_values
from tests.processes import ROOT, Process, base_env, free_port, wait_until_up

KEY = "s3cret-key-for-tests"
INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")  # the service's one shape
US = dt.timedelta(microseconds=1)
DATES = [dt.date(2026, 10, 28), dt.date(2026, 11, 1)]
DAGSTER_YAML = """telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
"""


@pytest.fixture(scope="module")
def service_env(adversarial_url, make_database, tmp_path_factory):
    home = tmp_path_factory.mktemp("api")
    index_url = make_database()
    settings = make_settings(adversarial_url, home / "store", "UTC", index_url=index_url)
    for day in DATES:
        snapshot.take_snapshot(settings, day, 500)
    dagster_home = home / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)
    return {
        "LEDGER_DATABASE_URL": adversarial_url,
        "SNAPSHOT_DATABASE_URL": index_url,
        "SNAPSHOT_STORAGE_URI": str(home / "store"),
        "SNAPSHOT_TIMEZONE": "UTC",
        "SNAPSHOT_START_DATE": "2026-10-01",
        "SNAPSHOT_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
    }


@pytest.fixture(scope="module")
def dagster_webserver(service_env, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "webserver.log"
    command = [str(Path(sys.executable).with_name("dagster-webserver")), "-h", "127.0.0.1", "-p", str(port),
               "-w", str(ROOT / "workspace.yaml")]
    process = Process(command, base_env(service_env), log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, "/server_info", process.proc, log)
        yield url
    finally:
        process.stop()


def start_service(env: dict, log: Path) -> tuple[Process, str]:
    port = free_port()
    process = Process([sys.executable, "-m", "snapshot_pipeline.cli", "serve", "--port", str(port),
                       "--log-level", "warning"], base_env(env), log)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, "/openapi.json", process.proc, log, seconds=60)
    return process, url


@pytest.fixture(scope="module")
def services(service_env, dagster_webserver, tmp_path_factory):
    """Three real services: auth off, auth on, and one whose database and Dagster are unreachable."""
    logs = tmp_path_factory.mktemp("service-logs")
    env = {**service_env, "DAGSTER_WEBSERVER_URL": dagster_webserver}
    started = []
    try:
        started.append(start_service(env, logs / "open.log"))
        started.append(start_service({**env, "SNAPSHOT_API_KEY": KEY}, logs / "auth.log"))
        down = {**env, "LEDGER_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none",
                "SNAPSHOT_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none",
                "DAGSTER_WEBSERVER_URL": "http://127.0.0.1:1"}
        started.append(start_service(down, logs / "down.log"))
        yield {"open": started[0][1], "auth": started[1][1], "down": started[2][1]}
    finally:
        for process, _ in started:
            process.stop()


def hot_and_sample(url: str, n: int, seed: int) -> list[str]:
    with psycopg.connect(url) as conn:
        ids = [r[0] for r in conn.execute("SELECT balance_id FROM blnk.balances ORDER BY balance_id")]
        hot = conn.execute(
            "SELECT b FROM (SELECT source AS b FROM blnk.transactions UNION ALL SELECT destination"
            " FROM blnk.transactions) legs GROUP BY b ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
    return [hot, *random.Random(seed).sample(ids, n)]


def check_body(body: dict, balance_id: str, expected: dict, existing: set[str]) -> None:
    want = expected.get(balance_id, dict.fromkeys(AMOUNTS, 0))
    assert set(body) == {"balance", "timestamp", "from_source", "inflight", "existed", "anchor",
                         "replayed_transactions"}
    assert set(body["balance"]) == {"balance", "debit_balance", "credit_balance", "currency", "balance_id"}
    assert body["balance"]["balance_id"] == balance_id
    for key in ("balance", "credit_balance", "debit_balance"):
        assert body["balance"][key] == want[key] and type(body["balance"][key]) is int
    for key in ("inflight_balance", "inflight_credit_balance", "inflight_debit_balance"):
        assert body["inflight"][key] == want[key]
    assert body["existed"] == (balance_id in existing)


def test_balance_at_matches_the_journal_with_any_offset(services, adversarial_url):
    base = services["open"]
    balances = hot_and_sample(adversarial_url, 6, 7)
    instants = [  # (text, UTC instant)
        ("2026-10-29T00:00:00Z", dt.datetime(2026, 10, 29)),  # exactly a cutoff
        ("2026-10-29T05:29:59.999+05:30", dt.datetime(2026, 10, 28, 23, 59, 59, 999000)),
        ("2026-11-02T08:15:30.125-04:00", dt.datetime(2026, 11, 2, 12, 15, 30, 125000)),
        ("2026-10-10T00:00:00Z", dt.datetime(2026, 10, 10)),  # before the journal and the balances
        ("2030-01-01T00:00:00+14:00", dt.datetime(2029, 12, 31, 10)),  # in the future
    ]
    with httpx.Client(base_url=base, timeout=30) as client:
        for text, at in instants:
            expected = expected_snapshot(adversarial_url, at + US)
            existing = existing_balances(adversarial_url, at)
            for balance_id in balances:
                for from_source in ("false", "true"):
                    response = client.get(f"/balances/{balance_id}/at",
                                          params={"timestamp": text, "from_source": from_source})
                    assert response.status_code == 200, response.text
                    body = response.json()
                    check_body(body, balance_id, expected, existing)
                    # echoed as Blnk does: RFC 3339 to the second, in the offset it was sent with
                    assert body["timestamp"] == re.sub(r"\.\d+", "", text)
                    assert body["from_source"] is (from_source == "true")
        hot = balances[0]
        body = client.get(f"/balances/{hot}/at", params={"timestamp": "2026-11-02T12:00:00Z"}).json()
        assert body["anchor"]["snapshot_date"] == "2026-11-01" and body["replayed_transactions"] > 0
        assert body["balance"]["credit_balance"] > 2**63  # exact beyond 64-bit integers, as JSON numbers
        assert str(body["balance"]["credit_balance"]) in client.get(
            f"/balances/{hot}/at", params={"timestamp": "2026-11-02T12:00:00Z"}).text


def test_missing_timestamp_means_now(services, adversarial_url):
    hot = hot_and_sample(adversarial_url, 0, 1)[0]
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    body = httpx.get(f"{services['open']}/balances/{hot}/at", timeout=30).json()
    after = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    stamp = dt.datetime.fromisoformat(body["timestamp"].removesuffix("Z"))
    assert before.replace(microsecond=0) <= stamp <= after  # echoed to the second, as Blnk does
    check_body(body, hot, expected_snapshot(adversarial_url, stamp + US), existing_balances(adversarial_url, stamp))


@pytest.mark.parametrize("balance_id", ["bln_missing", "x' OR '1'='1", "'; DROP TABLE blnk.transactions; --",
                                        "\"quoted\"", "bln_%_", "ünï©ødé", "a b"])
def test_unknown_and_malicious_balance_ids_are_404(services, adversarial_url, balance_id):
    response = httpx.get(f"{services['open']}/balances/{quote(balance_id, safe='')}/at",
                         params={"timestamp": "2026-11-01T00:00:00Z"}, timeout=30)
    assert response.status_code == 404, response.text
    message = f"balance {balance_id!r} does not exist"
    assert response.json() == {"code": "balance_not_found", "message": message, "error": message,
                               "error_detail": {"code": "BAL_NOT_FOUND", "message": message}}
    with psycopg.connect(adversarial_url) as conn:
        assert conn.execute("SELECT count(*) FROM blnk.transactions").fetchone()[0] > 30_000


def test_bad_input_is_400_with_a_code(services, adversarial_url):
    hot = hot_and_sample(adversarial_url, 0, 1)[0]
    with httpx.Client(base_url=services["open"], timeout=30) as client:
        for params, code in [({"timestamp": "2026-11-01T00:00:00"}, "invalid_timestamp"),  # no offset
                             ({"timestamp": "yesterday"}, "invalid_timestamp"),
                             ({"timestamp": "2026-02-30T00:00:00Z"}, "invalid_timestamp"),
                             ({"from_source": "maybe"}, "bad_request")]:
            response = client.get(f"/balances/{hot}/at", params=params)
            assert response.status_code == 400 and response.json()["code"] == code, response.text
            assert response.json()["message"]
        response = client.get(f"/balances/{hot}/change", params={"start": "2026-11-02T00:00:00Z",
                                                                 "end": "2026-11-01T00:00:00Z"})
        assert response.status_code == 400 and "before start" in response.json()["message"]
        for value in ("0", "-5", "abc", "1.5", "1000001", ""):
            response = client.post("/balances-snapshots", params={"batch_size": value})
            assert response.status_code == 400, (value, response.text)
            assert response.json()["code"] == "invalid_batch_size"
        response = client.get("/no/such/route")
        assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_balance_change_endpoint(services, adversarial_url):
    hot = hot_and_sample(adversarial_url, 0, 1)[0]
    start, end = dt.datetime(2026, 10, 30, 6), dt.datetime(2026, 11, 2)
    opening = expected_snapshot(adversarial_url, start)[hot]
    closing = expected_snapshot(adversarial_url, end)[hot]
    body = httpx.get(f"{services['open']}/balances/{hot}/change",
                     params={"start": "2026-10-30T11:30:00+05:30", "end": "2026-11-01T20:00:00-04:00"},
                     timeout=30).json()
    assert body["opening_balance"] == opening["balance"] and body["closing_balance"] == closing["balance"]
    assert body["credits"] == closing["credit_balance"] - opening["credit_balance"]
    assert body["debits"] == closing["debit_balance"] - opening["debit_balance"]


def test_authorization(services, adversarial_url):
    hot = hot_and_sample(adversarial_url, 0, 1)[0]
    path = f"/balances/{hot}/at"
    with httpx.Client(base_url=services["auth"], timeout=30) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"},
                        {"Authorization": KEY}, {"Authorization": f"Bearer {KEY}x"}, {"X-Blnk-Key": "wrong"},
                        {"X-Blnk-Key": f"{KEY}x"}, {"X-Blnk-Key": ""},
                        {"X-Blnk-Key": KEY, "Authorization": "Bearer wrong"},  # a wrong one beside a right one
                        {"X-Blnk-Key": "wrong", "Authorization": f"Bearer {KEY}"}):
            response = client.get(path, headers=headers)
            assert response.status_code == 401, headers
            body = response.json()
            assert body["code"] == ("missing_api_key" if not headers else "unauthorized"), headers
            assert body["error_detail"]["code"] == ("AUTH_MISSING_API_KEY" if not headers else "AUTH_INVALID_API_KEY")
            assert response.headers["www-authenticate"] == "Bearer"
        # Blnk's own header, as a Blnk client sends it
        assert client.get(path, headers={"X-Blnk-Key": KEY}).status_code == 200
        assert client.get(path, headers={"X-Blnk-Key": KEY, "Authorization": f"Bearer {KEY}"}).status_code == 200
        assert client.post("/balances-snapshots").status_code == 401
        assert client.get(f"/balances-snapshots/{uuid.uuid4()}").status_code == 401
        assert client.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert client.get(path, headers={"Authorization": f"bearer {KEY}"}).status_code == 200
        assert client.get("/health").status_code == 200
        assert client.get("/docs").status_code == 200
    assert httpx.get(services["open"] + path, timeout=30).status_code == 200  # auth off: no header needed


def test_unreachable_database_and_dagster_are_503(services):
    with httpx.Client(base_url=services["down"], timeout=60) as client:
        response = client.get("/balances/bln_x/at", params={"timestamp": "2026-11-01T00:00:00Z"})
        assert response.status_code == 503 and response.json()["code"] == "database_unavailable"
        assert "***" not in response.json()["message"] and "127.0.0.1:1" in response.json()["message"]
        assert client.get("/health").status_code == 503
        response = client.post("/balances-snapshots", params={"batch_size": "100"})
        assert response.status_code == 503 and response.json()["code"] == "dagster_unavailable"
        # what to do, and no library's exception text (it is in the service's log)
        message = response.json()["message"]
        assert "http://127.0.0.1:1" in message and "snapshot-pipeline ui" in message
        assert "DAGSTER_WEBSERVER_URL" in message
        for library_text in ("ConnectionError", "HTTPConnectionPool", "Errno", "urllib3", "requests"):
            assert library_text not in message, message
        response = client.get(f"/balances-snapshots/{uuid.uuid4()}")
        assert response.status_code == 503 and response.json()["code"] == "dagster_unavailable"
        database = client.get("/balances/bln_x/at", params={"timestamp": "2026-11-01T00:00:00Z"}).json()["message"]
        assert "Connection refused" not in database and "GET /health" in database, database


def test_snapshot_trigger_launches_a_dagster_run_and_reports_it(services, service_env, adversarial_url,
                                                                dagster_webserver):
    with httpx.Client(base_url=services["open"], timeout=60) as client:
        response = client.post("/balances-snapshots", params={"batch_size": "250"})
        # what Blnk answers, so a Blnk client checking for 200 and its message keeps working
        assert response.status_code == 200, response.text
        body = response.json()
        # a second trigger while the day's run is queued or running answers that run: no second run
        again = client.post("/balances-snapshots", params={"batch_size": "250"})
        assert again.status_code == 200 and again.json()["run_id"] == body["run_id"], again.text
        assert again.json()["existing"] is True and body["existing"] is False
        day = calendar.last_closed_day("UTC")
        assert body["message"] == "Snapshotting in progress. should be completed shortly"
        assert body["partition"] == day.isoformat() and body["batch_size"] == 250
        assert body["status_url"] == f"{services['open']}/balances-snapshots/{body['run_id']}"  # absolute
        assert body["run_url"] == f"{dagster_webserver}/runs/{body['run_id']}"
        assert httpx.get(body["run_url"], timeout=30).status_code == 200  # the UI serves the run's page
        run_id = body["run_id"]
        deadline = time.monotonic() + 300
        while True:
            status = client.get(body["status_url"])
            assert status.status_code == 200, status.text
            run = status.json()
            if run["done"] or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert run["status"] == "SUCCESS", run
        assert run["run_id"] == run_id and run["partition"] == day.isoformat()
        assert run["job_name"] == "balance_snapshots_job"
        expected_rows = len(expected_snapshot(adversarial_url, calendar.cutoff(day, "UTC")))
        assert run["metrics"]["dagster/row_count"] == expected_rows
        assert run["metrics"]["batch_size"] == 250 and run["metrics"]["duration_ms"] >= 0
        assert run["metrics"]["checks"] and all(v == "passed" for v in run["metrics"]["checks"].values()), run
        assert run["metrics"]["currency_totals"] and run["metrics"]["run_id"] == run_id
        for instant in (run["start_time"], run["end_time"], run["metrics"]["cutoff"]):
            assert INSTANT.fullmatch(instant), instant
        assert run["error"] is None  # done: its metrics, and its last progress report at 100%
        assert (run["progress"]["rows"], run["progress"]["total"], run["progress"]["percent"]) == (
            expected_rows, expected_rows, 100.0)
        assert run["metrics"]["watermark"]["max_transaction_id"] > 0
        for unknown in (str(uuid.uuid4()), "not-a-run-id", "x'; DROP TABLE runs; --"):
            response = client.get(f"/balances-snapshots/{quote(unknown, safe='')}")
            assert response.status_code == 404 and response.json()["code"] == "run_not_found", response.text
    with dg.DagsterInstance.from_config(service_env["DAGSTER_HOME"]) as instance:
        assert len(instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": day.isoformat(),
                                                                "launched_by": "http"}))) == 1
        record = instance.get_run_record_by_id(run_id)
        assert record.dagster_run.tags["dagster/partition"] == day.isoformat()
        assert record.dagster_run.tags["launched_by"] == "http"
    with psycopg.connect(service_env["SNAPSHOT_DATABASE_URL"]) as conn:
        assert conn.execute("SELECT row_count, dagster_run_id FROM snapshot_index.partitions WHERE snapshot_date = %s",
                            (day,)).fetchone() == (expected_rows, run_id)


def test_status_reports_progress_while_the_run_is_running(services):
    """A run of many small pages: while it runs, the status endpoint shows rows so far and the rate."""
    with httpx.Client(base_url=services["open"], timeout=60) as client:
        body = client.post("/balances-snapshots", params={"batch_size": "1"}).json()
        seen = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            run = client.get(body["status_url"]).json()
            if run["done"]:
                break
            if run["progress"] is not None:
                seen.append(run["progress"])
            time.sleep(0.2)
        assert seen, run
        assert all(p["rows"] > 0 and p["snapshots_per_second"] >= 0 for p in seen)
        assert [p["rows"] for p in seen] == sorted(p["rows"] for p in seen)  # it only grows
        assert all(p["total"] and 0 <= p["percent"] <= 100 for p in seen)  # out of the partition's row count
        assert run["status"] in ("SUCCESS", "FAILURE")
        if run["status"] == "FAILURE":  # a failed run says why
            assert run["error"] and run["progress"] is None
        else:  # a finished run's last report: every row of the partition, 100%
            final = run["progress"]
            assert final["rows"] == final["total"] == run["metrics"]["dagster/row_count"] and final["percent"] == 100.0


def test_fifty_concurrent_clients_without_a_failure(services, adversarial_url):
    balances = hot_and_sample(adversarial_url, 40, 3)
    at = dt.datetime(2026, 11, 1, 15, 30)
    expected = expected_snapshot(adversarial_url, at + US)
    existing = existing_balances(adversarial_url, at)
    headers = {"Authorization": f"Bearer {KEY}"}

    def client_session(worker: int) -> list[str]:
        problems = []
        with httpx.Client(base_url=services["auth"], timeout=60, headers=headers) as client:
            for i in range(8):
                balance_id = balances[(worker * 8 + i) % len(balances)]
                response = client.get(f"/balances/{balance_id}/at", params={"timestamp": "2026-11-01T15:30:00Z",
                                                                            "from_source": str(i % 2 == 0)})
                if response.status_code != 200:
                    problems.append(f"{response.status_code}: {response.text[:200]}")
                    continue
                try:
                    check_body(response.json(), balance_id, expected, existing)
                except AssertionError as exc:
                    problems.append(f"wrong answer for {balance_id}: {exc}")
        return problems

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(client_session, range(50)))
    failures = [p for r in results for p in r]
    assert failures == [] and len(results) == 50


def test_openapi_documents_every_endpoint(services):
    spec = httpx.get(services["open"] + "/openapi.json", timeout=30).json()
    assert {"/balances/{balance_id}/at", "/balances/{balance_id}/change", "/balances-snapshots",
            "/balances-snapshots/{run_id}", "/health"} <= set(spec["paths"])
    at = spec["paths"]["/balances/{balance_id}/at"]["get"]
    assert {"200", "400", "401", "404", "503"} <= set(at["responses"])
    assert "swagger" in httpx.get(services["open"] + "/docs", timeout=30).text.lower()
    assert json.dumps(spec)


# ------------------------------------------------------------------------------------------ issue 21 faces

def scrape(url: str, headers: dict | None = None) -> dict[str, list]:
    """``/metrics`` parsed by prometheus_client's own parser: family name -> samples."""
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(url + "/metrics", headers=headers or {}, timeout=30)
    assert response.status_code == 200, response.text
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def gauge(families: dict, name: str) -> float:
    samples = families[name]
    assert len(samples) == 1, samples
    return samples[0].value


def test_http_status_equals_the_cli_json_and_metrics_move(services, service_env, tmp_path):
    """One run made by the CLI, read back over HTTP: the status body's metrics are the CLI's JSON, field for
    field; /metrics (parsed by prometheus_client) moves its pipeline gauges with the run."""
    before = scrape(services["open"])
    published = gauge(before, "snapshot_pipeline_published_partitions")
    assert published >= len(DATES)
    day = dt.date(2026, 11, 3)
    cli = subprocess.run([sys.executable, "-m", "snapshot_pipeline.cli", "snapshot", "--date", day.isoformat(),
                          "--batch-size", "700"], env=base_env(service_env), cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-3000:]
    printed = json.loads(cli.stdout)
    status = httpx.get(f"{services['open']}/balances-snapshots/{printed['run_id']}", timeout=60)
    assert status.status_code == 200, status.text
    run = status.json()
    assert run["status"] == "SUCCESS" and run["partition"] == day.isoformat()
    assert run["metrics"] == printed  # same fields, same values, same types
    assert type(run["metrics"]["batch_size"]) is int and run["metrics"]["batch_size"] == 700
    assert isinstance(run["metrics"]["currency_totals"], list) and run["metrics"]["checks"]
    time.sleep(metrics_module.CACHE_SECONDS + 0.5)
    after = scrape(services["open"])
    assert gauge(after, "snapshot_pipeline_published_partitions") == published + 1
    assert gauge(after, "snapshot_pipeline_latest_partition_timestamp_seconds") >= dt.datetime(
        2026, 11, 4, tzinfo=dt.UTC).timestamp()
    assert gauge(after, "snapshot_pipeline_last_run_rows") == printed["dagster/row_count"]
    # the index records the publish's own timing, a little under the asset's
    assert 0 < gauge(after, "snapshot_pipeline_last_run_duration_seconds") <= printed["duration_ms"] / 1000
    assert gauge(after, "snapshot_pipeline_failed_runs") >= 0
    up = {s.labels["source"]: s.value for s in after["snapshot_pipeline_source_up"]}
    assert up == {"index": 1.0, "dagster": 1.0}
    requests = [s for s in after["snapshot_api_requests"] if s.name == "snapshot_api_requests_total"]
    routes = {s.labels["route"] for s in requests}
    assert "/balances-snapshots/{run_id}" in routes and "/balances/{balance_id}/at" in routes  # templates, not ids
    assert not any(printed["run_id"] in route for route in routes)
    assert any(s.name == "snapshot_api_request_duration_seconds_bucket" for s in
               after["snapshot_api_request_duration_seconds"])


def test_metrics_token_protects_metrics(service_env, dagster_webserver, tmp_path):
    env = {**service_env, "DAGSTER_WEBSERVER_URL": dagster_webserver, "SNAPSHOT_METRICS_TOKEN": "metrics-token",
           "SNAPSHOT_API_KEY": KEY}
    process, url = start_service(env, tmp_path / "metrics.log")
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {KEY}"},
                        {"X-Blnk-Key": "metrics-token"}):
            response = httpx.get(url + "/metrics", headers=headers, timeout=30)
            assert response.status_code == 401, headers
            assert response.json()["error_detail"]["code"] == "AUTH_INVALID_BEARER_TOKEN"
        families = scrape(url, {"Authorization": "Bearer metrics-token"})
        assert "snapshot_pipeline_published_partitions" in families
    finally:
        process.stop()


def test_blnk_shapes(services, adversarial_url):
    """Blnk's server, as its balance and snapshot handlers answer (described, not copied):

    * ``GET /balances/{id}/at?timestamp=<RFC 3339>&from_source=true|1`` -> 200 ``{"balance": {balance,
      debit_balance, credit_balance, currency, balance_id}, "timestamp": <the instant in RFC 3339 with the
      caller's offset, to the second>, "from_source": <bool>}``;
    * an error -> ``{"error": <message>, "error_detail": {"code": <domain-prefixed code>, "message": ...}}``
      with BAL_NOT_FOUND (404) for an unknown balance and BAL_INVALID_TIMESTAMP (400) for a bad instant;
    * ``POST /balances-snapshots`` -> 200 ``{"message": "Snapshotting in progress. should be completed shortly"}``.
    We add fields, never remove or retype Blnk's.
    """
    hot = hot_and_sample(adversarial_url, 0, 5)[0]
    with httpx.Client(base_url=services["open"], timeout=30) as client:
        for flag, expected in (("true", True), ("1", True), ("false", False), ("0", False)):
            body = client.get(f"/balances/{hot}/at", params={"timestamp": "2026-11-01T15:00:00.250+05:30",
                                                              "from_source": flag}).json()
            assert body["from_source"] is expected
            assert body["timestamp"] == "2026-11-01T15:00:00+05:30"
            assert {"balance", "debit_balance", "credit_balance", "currency", "balance_id"} <= set(body["balance"])
            assert all(type(body["balance"][k]) is int for k in ("balance", "debit_balance", "credit_balance"))
        assert client.get(f"/balances/{hot}/at", params={"timestamp": "2026-11-01T15:00:00Z"}).json()[
            "timestamp"] == "2026-11-01T15:00:00Z"
        missing = client.get("/balances/bln_does_not_exist/at", params={"timestamp": "2026-11-01T00:00:00Z"})
        assert missing.status_code == 404
        assert missing.json()["error_detail"]["code"] == "BAL_NOT_FOUND" and missing.json()["error"]
        bad = client.get(f"/balances/{hot}/at", params={"timestamp": "yesterday"})
        assert bad.status_code == 400 and bad.json()["error_detail"]["code"] == "BAL_INVALID_TIMESTAMP"
        assert isinstance(bad.json()["error"], str) and bad.json()["code"] == "invalid_timestamp"


def test_balances_at_and_history_equal_the_oracle(services, adversarial_url):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    at_text, at = "2026-11-01T15:30:00Z", dt.datetime(2026, 11, 1, 15, 30)
    expected = expected_snapshot(adversarial_url, at + US)
    with httpx.Client(base_url=services["open"], timeout=120) as client:
        ndjson = client.get("/balances-at", params={"timestamp": at_text})
        assert ndjson.status_code == 200 and ndjson.headers["content-type"].startswith("application/x-ndjson")
        assert ndjson.headers["x-snapshot-anchor-date"] == "2026-10-28"  # the latest cutoff <= at
        rows = [json.loads(line) for line in ndjson.text.splitlines()]
        assert {r["balance_id"]: {k: r[k] for k in AMOUNTS} for r in rows} == expected
        csv = client.get("/balances-at", params={"timestamp": at_text}, headers={"Accept": "text/csv"})
        assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
        table = pacsv.read_csv(io.BytesIO(csv.content), convert_options=pacsv.ConvertOptions(
            column_types={k: pa.decimal128(38, 0) for k in AMOUNTS}))
        assert snapshot_values(table) == expected
        parquet = client.get("/balances-at", params={"timestamp": at_text, "format": "parquet"})
        assert parquet.status_code == 200
        assert snapshot_values(pq.read_table(io.BytesIO(parquet.content))) == expected
        assert client.get("/balances-at", headers={"Accept": "image/png"}).status_code == 406

        hot = hot_and_sample(adversarial_url, 0, 5)[0]
        history = client.get(f"/balances/{hot}/history", params={"from": "2026-10-27", "to": "2026-11-02"})
        assert history.status_code == 200, history.text
        days = history.json()["days"]
        assert [d["date"] for d in days] == [f"2026-10-{n}" for n in range(27, 32)] + ["2026-11-01", "2026-11-02"]
        for day in days:
            cutoff = calendar.cutoff(dt.date.fromisoformat(day["date"]), "UTC")
            want = expected_snapshot(adversarial_url, cutoff).get(hot, dict.fromkeys(AMOUNTS, 0))
            assert {k: day[k] for k in AMOUNTS} == want, day
        anchored = {d["date"]: d["snapshot_date"] for d in days}
        assert anchored["2026-10-29"] == "2026-10-28" and anchored["2026-11-02"] == "2026-11-01"
        bad = client.get(f"/balances/{hot}/history", params={"from": "2026-11-02", "to": "2026-10-01"})
        assert bad.status_code == 400 and "before" in bad.json()["message"]
        arabic_year = "\u0662\u0660\u0662\u0666"
        bad = client.get(f"/balances/{hot}/history", params={"from": f"{arabic_year}-10-01", "to": "2026-10-02"})
        assert bad.status_code == 400 and bad.json()["code"] == "invalid_date"
