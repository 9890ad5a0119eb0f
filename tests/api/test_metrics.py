"""The pipeline's gauges of ``/metrics`` read from the snapshot index in its three states: never created,
migrated, and older than the code (a deploy before ``snapshot-pipeline migrate``)."""

from __future__ import annotations

import logging

import psycopg

from snapshot_pipeline.api.metrics import PipelineCollector
from snapshot_pipeline.dagster_client import DagsterClient
from snapshot_pipeline.store import index
from tests.conftest import make_settings
from tests.processes import free_port


def _gauges(collector: PipelineCollector) -> dict[str, float]:
    samples = {}
    for family in collector.collect():
        for sample in family.samples:
            key = sample.name + "".join(f"{{{k}={v}}}" for k, v in sorted(sample.labels.items()))
            samples[key] = sample.value
    return samples


def test_the_index_source_is_up_when_never_created_or_migrated_and_down_when_outdated(make_database, tmp_path,
                                                                                        monkeypatch, caplog):
    url = make_database()
    settings = make_settings(url, tmp_path / "snapshots")
    dagster = DagsterClient(f"http://127.0.0.1:{free_port()}", timeout=1)
    monkeypatch.setattr("snapshot_pipeline.api.metrics.CACHE_SECONDS", 0.0)  # every collect reads its sources
    collector = PipelineCollector(settings, dagster)

    never_created = _gauges(collector)
    assert never_created["snapshot_pipeline_source_up{source=index}"] == 1.0
    assert never_created["snapshot_pipeline_published_partitions"] == 0.0
    assert never_created["snapshot_pipeline_source_up{source=dagster}"] == 0.0  # nobody listens there

    with psycopg.connect(url, autocommit=True) as conn:
        index.migrate(conn)
    migrated = _gauges(collector)
    assert migrated["snapshot_pipeline_source_up{source=index}"] == 1.0
    assert migrated["snapshot_pipeline_published_partitions"] == 0.0

    with psycopg.connect(url, autocommit=True) as conn:  # as if this code were deployed before its migration
        conn.execute("DELETE FROM snapshot_index.schema_migrations WHERE version ="
                     " (SELECT max(version) FROM snapshot_index.schema_migrations)")
    caplog.set_level(logging.DEBUG, logger="snapshot_pipeline.api.metrics")
    outdated = _gauges(collector)
    assert outdated["snapshot_pipeline_source_up{source=index}"] == 0.0
    assert "snapshot_pipeline_published_partitions" not in outdated
    assert _gauges(collector)["snapshot_pipeline_source_up{source=index}"] == 0.0  # the next scrape
    warned = [r.getMessage() for r in caplog.records if r.name.endswith("api.metrics") and r.levelno >= logging.INFO]
    assert len(warned) == 1 and "snapshot-pipeline migrate" in warned[0], warned  # why, once

    with psycopg.connect(url, autocommit=True) as conn:
        index.migrate(conn)
    caplog.clear()
    assert _gauges(collector)["snapshot_pipeline_source_up{source=index}"] == 1.0
    assert [r.getMessage() for r in caplog.records if r.name.endswith("api.metrics")] == [
        "/metrics: the snapshot index answers again"]
