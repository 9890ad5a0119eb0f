"""Every bad input to the HTTP API gets a 400 (or the documented status) with one clear line (issue 13).

A real ``snapshot-pipeline serve`` (two worker processes, as in production) on a small real ledger
with one 10^70 leg; its database URLs carry a password. Each case asserts the status, the JSON error
body ``{"code", "message"}`` with a one-line message naming the parameter, no traceback and no
password in the body or the service's log, and that nothing was written: no snapshot index row, no
file under the service's home. The Dagster webserver is unreachable on purpose: a launch that got
past validation would answer 503 (a neighbour below shows it), so a 400 proves that no run was
launched. Neighbours (valid edge instants) must answer 200.

The service refusing to start on a bad setting (exit 2, one line, port never bound) is tested here too.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.bad_input import (
    HUGE,
    PASSWORD,
    RANGE,
    assert_one_clean_line,
    files_under,
    index_rows,
    run_cli,
    seed_small_ledger,
    with_password,
)
from tests.processes import Process, base_env, free_port, wait_until_up

AT = "/balances/{balance}/at"
CHANGE = "/balances/{balance}/change"


@pytest.fixture(scope="module")
def world(make_database, tmp_path_factory) -> dict:
    ledger, index = make_database(), make_database()
    balances = seed_small_ledger(ledger)
    home = tmp_path_factory.mktemp("api-bad-input")
    env = {
        "LEDGER_DATABASE_URL": with_password(ledger),
        "SNAPSHOT_DATABASE_URL": with_password(index),
        "SNAPSHOT_STORAGE_URI": str(home / "store"),
        "SNAPSHOT_START_DATE": "2026-10-01",
        "SNAPSHOT_HOME": str(home),
        "DAGSTER_WEBSERVER_URL": "http://127.0.0.1:1",
    }
    log = tmp_path_factory.mktemp("api-bad-input-logs") / "serve.log"
    port = free_port()
    process = Process([sys.executable, "-m", "snapshot_pipeline.cli", "serve", "--port", str(port),
                       "--workers", "2", "--log-level", "warning"], base_env(env), log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, "/health", process.proc, log, seconds=90)
        yield {"url": url, "log": log, "home": home, "index": index, "env": env, **balances}
    finally:
        process.stop()


# (id, method, path, query parameters, status, error code, words the message must contain)
BAD = [
    ("after-the-range", "GET", AT, {"timestamp": "9999-12-31T23:59:59-23:59"}, 400, "invalid_timestamp",
     ["timestamp", RANGE]),
    ("before-the-range", "GET", AT, {"timestamp": "0001-01-01T00:00:00+01:00"}, 400, "invalid_timestamp",
     ["timestamp", RANGE]),
    ("year-zero", "GET", AT, {"timestamp": "0000-06-01T00:00:00Z"}, 400, "invalid_timestamp", [RANGE]),
    ("offset-24h", "GET", AT, {"timestamp": "2026-01-01T00:00:00+24:00"}, 400, "invalid_timestamp",
     ["-23:59 to +23:59"]),
    ("no-offset", "GET", AT, {"timestamp": "2026-11-01T00:00:00"}, 400, "invalid_timestamp", ["RFC 3339"]),
    ("not-a-day", "GET", AT, {"timestamp": "2026-02-30T00:00:00Z"}, 400, "invalid_timestamp", ["not a valid date"]),
    ("too-long", "GET", AT, {"timestamp": "2026-11-01T00:00:00." + "9" * 5000 + "Z"}, 400, "invalid_timestamp",
     ["at most 64"]),
    ("newline-injection", "GET", AT, {"timestamp": "2026-11-01T00:00:00Z\nerror: injected"}, 400, "invalid_timestamp",
     ["RFC 3339"]),
    ("from-source-not-boolean", "GET", AT, {"from_source": "maybe"}, 400, "bad_request", ["from_source"]),
    ("balance-id-too-long", "GET", "/balances/" + "b" * 600 + "/at", {}, 400, "bad_request", ["at most 512"]),
    ("unknown-balance", "GET", "/balances/bln_nope/at", {}, 404, "balance_not_found", ["does not exist"]),
    ("amount-beyond-decimal128", "GET", "/balances/{huge}/at", {"timestamp": "2026-10-27T00:00:00Z"}, 422,
     "amount_not_representable", ["balance '{huge}'", f"credit_balance = {str(HUGE)[:40]}", "decimal128(38, 0)"]),
    ("change-start-before-the-range", "GET", CHANGE,
     {"start": "0001-01-01T00:00:00+01:00", "end": "2026-11-01T00:00:00Z"}, 400, "invalid_timestamp",
     ["start", RANGE]),
    ("change-end-after-the-range", "GET", CHANGE,
     {"start": "0001-01-01T00:00:00Z", "end": "9999-12-31T23:59:59-23:59"}, 400, "invalid_timestamp", ["end", RANGE]),
    ("change-end-before-start", "GET", CHANGE, {"start": "2026-11-02T00:00:00Z", "end": "2026-11-01T00:00:00Z"},
     400, "bad_request", ["before start"]),
    ("change-missing-end", "GET", CHANGE, {"start": "2026-11-02T00:00:00Z"}, 400, "bad_request", ["end"]),
    ("batch-size-zero", "POST", "/balances-snapshots", {"batch_size": "0"}, 400, "invalid_batch_size",
     ["from 1 to 1,000,000"]),
    # digits other than ASCII are refused, as Blnk's server parses numbers ("٥" is an Arabic-Indic 5)
    ("batch-size-arabic-indic-digit", "POST", "/balances-snapshots", {"batch_size": "\u0665\u0660\u0660"}, 400,
     "invalid_batch_size", ["ASCII digits"]),
    # an unencoded "+05:30" arrives as " 05:30": the answer says to send %2B
    ("timestamp-plus-as-space", "GET", AT, {"timestamp": "2026-11-01T12:00:00 05:30"}, 400, "invalid_timestamp",
     ["%2B"]),
    ("batch-size-text", "POST", "/balances-snapshots", {"batch_size": "1; DROP TABLE x"}, 400, "invalid_batch_size",
     ["batch_size"]),
    # the neighbour that gets past validation: Dagster is unreachable, so a launch would be this 503
    ("batch-size-valid-dagster-down", "POST", "/balances-snapshots", {"batch_size": "500"}, 503,
     "dagster_unavailable", ["127.0.0.1:1"]),
]

GOOD = [
    ("last-utc", AT, {"timestamp": "9999-12-31T23:59:59Z"}, {"timestamp": "9999-12-31T23:59:59Z"}),
    ("last-positive-offset", AT, {"timestamp": "9999-12-31T23:59:59+23:59"},
     {"timestamp": "9999-12-31T23:59:59+23:59"}),  # echoed as Blnk does: to the second, the caller's offset
    ("last-nanoseconds", AT, {"timestamp": "9999-12-31T23:59:59.999999999Z"},
     {"timestamp": "9999-12-31T23:59:59Z"}),
    ("first-utc", AT, {"timestamp": "0001-01-01T00:00:00Z"}, {"timestamp": "0001-01-01T00:00:00Z",
                                                              "existed": False}),
    ("first-negative-offset", AT, {"timestamp": "0001-01-01T00:00:00-23:59", "from_source": "TRUE"},
     {"timestamp": "0001-01-01T00:00:00-23:59", "from_source": True}),
    ("change-from-year-1-to-9999", CHANGE, {"start": "0001-01-01T00:00:00Z", "end": "9999-12-31T23:59:59Z"},
     {"start": "0001-01-01T00:00:00.000000Z", "opening_balance": 0}),
    ("change-empty-at-the-first-instant", CHANGE, {"start": "0001-01-01T00:00:00Z", "end": "0001-01-01T00:00:00Z"},
     {"opening_balance": 0, "closing_balance": 0, "credits": 0, "debits": 0}),
    ("change-from-year-1-with-offset", CHANGE, {"start": "0001-01-01T00:00:00-23:59", "end": "2026-11-01T00:00:00Z"},
     {"start": "0001-01-01T23:59:00.000000Z", "opening_balance": 0}),
]


def fill(text: str, world: dict) -> str:
    return text.replace("{balance}", world["plain"]).replace("{huge}", world["destination"])


def assert_nothing_written(world: dict) -> None:
    assert index_rows(world["index"]) == 0
    assert files_under(world["home"]) == []
    log = Path(world["log"]).read_text()
    assert "Traceback" not in log and PASSWORD not in log, log[-3000:]


@pytest.mark.parametrize("method, path, params, status, code, words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_is_answered_in_one_line_and_changes_nothing(world, method, path, params, status, code, words):
    response = httpx.request(method, world["url"] + fill(path, world), params=params, timeout=30)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "error", "error_detail"} and body["code"] == code, body
    assert body["error"] == body["message"] == body["error_detail"]["message"]  # Blnk's shape beside ours
    line = assert_one_clean_line(body["message"])
    assert "Traceback" not in response.text and PASSWORD not in response.text
    for word in words:
        assert fill(word, world) in line, line
    assert_nothing_written(world)


@pytest.mark.parametrize("path, params, expected", [c[1:] for c in GOOD], ids=[c[0] for c in GOOD])
def test_valid_edge_instants_answer(world, path, params, expected):
    response = httpx.get(world["url"] + fill(path, world), params=params, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    for key, value in expected.items():
        assert body[key] == value, (key, body)
    if "credits" in body:
        assert body["opening_balance"] + body["credits"] - body["debits"] == body["closing_balance"]
    assert_nothing_written(world)


def port_is_bound(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("variable, value, words", [
    ("LEDGER_DATABASE_URL", "not-a-url", ["LEDGER_DATABASE_URL", "not a PostgreSQL URL"]),
    ("SNAPSHOT_DATABASE_URL", f"mysql://u:{PASSWORD}@h/x", ["SNAPSHOT_DATABASE_URL", "not a PostgreSQL URL"]),
    ("SNAPSHOT_STORAGE_URI", "ftp://files.example.com/x", ["SNAPSHOT_STORAGE_URI", "unsupported scheme"]),
    ("DAGSTER_WEBSERVER_URL", "127.0.0.1:3000", ["DAGSTER_WEBSERVER_URL", "http://"]),
])
def test_serve_refuses_a_bad_setting_before_binding(world, variable, value, words):
    port = free_port()
    proc = run_cli("serve", "--port", str(port), env={**world["env"], variable: value})
    assert proc.returncode == 2 and proc.stdout == ""
    line = assert_one_clean_line(proc.stderr)
    for word in words:
        assert word in line, line
    assert not port_is_bound(port)
    assert_nothing_written(world)


def test_balance_ids_with_url_syntax_are_not_a_500(world):
    for balance_id in ("..", "a?b", "%00", "bln'; DROP TABLE blnk.balances; --"):
        response = httpx.get(f"{world['url']}/balances/{quote(balance_id, safe='')}/at", timeout=30)
        assert response.status_code in (400, 404), (balance_id, response.text)
        assert_one_clean_line(response.json()["message"])
    assert_nothing_written(world)

