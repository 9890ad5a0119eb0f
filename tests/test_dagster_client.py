"""The client of the Dagster webserver, against a port nobody listens on."""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import threading

import pytest

from snapshot_pipeline.dagster_client import UNAVAILABLE_HINT, DagsterClient, DagsterUnavailable
from tests.processes import free_port


def test_an_unreachable_webserver_is_one_error_and_one_log_line_that_say_what_to_do(caplog):
    client = DagsterClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    with caplog.at_level(logging.WARNING, logger="snapshot_pipeline.dagster_client"), \
            pytest.raises(DagsterUnavailable, match="is unreachable"):
        client.pipeline_run_facts()
    lines = [r.getMessage() for r in caplog.records if r.name == "snapshot_pipeline.dagster_client"]
    assert len(lines) == 1 and UNAVAILABLE_HINT in lines[0] and "\n" not in lines[0], lines


class _RunFactsAnswer(http.server.BaseHTTPRequestHandler):
    """A webserver that answers the run-facts query as Dagster's GraphQL does (2 failed runs, no repairs)."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"data": {"failed": {"__typename": "Runs", "count": 2},
                                    "repairs": {"__typename": "Runs", "count": 0, "results": []}}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _ServerError(http.server.BaseHTTPRequestHandler):
    """A webserver that answers every query with HTTP 500."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _answering(port: int, handler: type[http.server.BaseHTTPRequestHandler] = _RunFactsAnswer):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_webserver_that_stays_down_is_warned_about_once_until_it_answers_again(caplog):
    """A scraped /metrics asks every 15 s: one warning per outage, not one per scrape."""
    port = free_port()
    client = DagsterClient(f"http://127.0.0.1:{port}", timeout=2)

    def warnings_and_infos(calls):
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="snapshot_pipeline.dagster_client"):
            results = []
            for _ in range(calls):
                try:
                    results.append(client.pipeline_run_facts())
                except DagsterUnavailable:
                    results.append(None)
        records = [r for r in caplog.records if r.name == "snapshot_pipeline.dagster_client"]
        return results, [r.getMessage() for r in records if r.levelno >= logging.INFO]

    results, lines = warnings_and_infos(3)
    assert results == [None, None, None]
    assert len(lines) == 1 and UNAVAILABLE_HINT in lines[0], lines
    with _answering(port):
        results, lines = warnings_and_infos(2)
    assert results == [{"failed_runs": 2, "repair_runs": 0, "late_transactions": 0}] * 2
    assert lines == [f"Dagster webserver http://127.0.0.1:{port} answers again"]
    results, lines = warnings_and_infos(2)  # down again: a new outage, warned about once
    assert results == [None, None] and len(lines) == 1 and UNAVAILABLE_HINT in lines[0], lines


def test_errors_a_running_webserver_answers_with_are_each_a_warning_and_end_an_outage(caplog):
    """An HTTP 500 is an answer: each one is warned about, it ends the outage before it, and the outage after
    it is warned about again."""
    port = free_port()
    client = DagsterClient(f"http://127.0.0.1:{port}", timeout=2)
    caplog.set_level(logging.DEBUG, logger="snapshot_pipeline.dagster_client")
    with pytest.raises(DagsterUnavailable, match="is unreachable"):
        client.pipeline_run_facts()
    with _answering(port, _ServerError):
        for _ in range(2):
            with pytest.raises(DagsterUnavailable, match="answered HTTP 500"):
                client.pipeline_run_facts()
    with pytest.raises(DagsterUnavailable, match="is unreachable"):
        client.pipeline_run_facts()
    records = [r for r in caplog.records if r.name == "snapshot_pipeline.dagster_client" and r.levelno >= logging.INFO]
    said = [("unreachable" if UNAVAILABLE_HINT in r.getMessage() else "again" if "answers again" in r.getMessage()
             else "500" if "500" in r.getMessage() else r.getMessage(), r.levelname) for r in records]
    assert said == [("unreachable", "WARNING"), ("again", "INFO"), ("500", "WARNING"), ("500", "WARNING"),
                    ("unreachable", "WARNING")], said
