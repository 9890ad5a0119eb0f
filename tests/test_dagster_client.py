"""The client of the Dagster webserver, against a port nobody listens on."""

from __future__ import annotations

import logging

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
