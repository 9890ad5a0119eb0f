"""The quality checks on local disk and on S3 (moto on loopback): the manifest check catches an overwritten file.

Issue 9 item 1: every reader works with ``SNAPSHOT_STORAGE_URI=s3://bucket/prefix`` (the ``backend`` /
``settings`` fixtures of tests/conftest.py run each test on both).
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq

from snapshot_pipeline import quality, snapshot
from snapshot_pipeline.store import catalog, parquet
from snapshot_pipeline.store.location import Store

DAYS = [dt.date(2026, 10, 30), dt.date(2026, 10, 31), dt.date(2026, 11, 1)]


def _overwrite_with_different_content(settings, path: str) -> None:
    """Rewrite one published object in place (same name, same row count, one amount changed), via pyarrow's fs."""
    fs = Store.at(settings.storage_uri).fs
    table = parquet.read_files(fs, [path])
    column = table.schema.get_field_index("credit_balance")
    values = table.column(column).to_pylist()
    values[0] += 1
    tampered = table.set_column(column, table.schema.field(column), pa.array(values, parquet.AMOUNT))
    with fs.open_output_stream(path) as sink:
        pq.write_table(tampered, sink)


def test_quality_checks_pass_then_the_manifest_check_catches_an_overwritten_file(settings):
    """Every check the Dagster checks and the audit call passes on a genesis and a sharded roll-forward
    partition on both backends; after one shard object is overwritten the manifest checks FAIL."""
    snapshot.take_snapshot(settings, DAYS[0], 300)
    snapshot.take_snapshot(settings, DAYS[1], 300, shards=2)
    for date in DAYS[:2]:
        outcomes = quality.integrity(settings, date)
        assert set(outcomes) == {"row_count", "balance_identity", "double_entry"}
        outcomes["manifest"] = quality.parquet_matches_manifest(settings, date)
        outcomes["index"] = quality.parquet_matches_index(settings, date)
        outcomes["sample"] = quality.sampled_recomputation(settings, date, sample_size=200, seed=9)
        outcomes["drift"] = quality.live_drift(settings, date)
        failed = {name: o.description for name, o in outcomes.items() if not o.passed}
        assert failed == {}, (date, failed)
        assert outcomes["sample"].metrics["sampled"] == 200 and outcomes["sample"].metrics["mismatches"] == 0
    assert quality.live_drift(settings, DAYS[1]).details["evaluated"] is True  # the latest: really compared

    paths = catalog.paths(settings, DAYS[1])
    assert len(paths) == 2
    _overwrite_with_different_content(settings, paths[1])
    assert catalog.paths(settings, DAYS[1]) == paths  # still "present": only the content changed
    manifest = quality.parquet_matches_manifest(settings, DAYS[1])
    assert not manifest.passed and manifest.details["checksum_matches"] is False
    assert "sha256" in manifest.description
    audit = quality.parquet_matches_index(settings, DAYS[1])
    assert not audit.passed and audit.details["checksum_matches"] is False
    assert quality.parquet_matches_manifest(settings, DAYS[0]).passed  # the other partition is untouched
