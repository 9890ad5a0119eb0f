"""The storage layer against a real S3-compatible server (moto, started by a fixture)."""

import datetime as dt

import pyarrow as pa
import pyarrow.fs as pafs

from snapshot_pipeline.store import parquet
from snapshot_pipeline.store.location import Store

DATE = dt.date(2026, 1, 5)
SCHEMA = pa.schema([pa.field("balance_id", pa.string(), nullable=False), pa.field("v", pa.int64())])


def _writer(uri):
    """A staged writer (what a shard of a sharded run uses): staged apart, moved in by the commit."""
    store = Store.at(uri)
    return parquet.PartitionWriter(store, DATE, {"k": "v"}, schema=SCHEMA,
                                   final_path=store.path("t", "part-00000.parquet"),
                                   staging_dir=store.path(".staging", "work"))


def test_a_store_at_an_s3_uri_uses_the_aws_environment(s3_storage):
    store = Store.at(s3_storage)
    fs, base = store.fs, store.root
    assert isinstance(fs, pafs.S3FileSystem)
    assert base == s3_storage.removeprefix("s3://")


def test_write_publish_read_round_trip(s3_storage):
    writer = _writer(s3_storage)
    writer.write_table(pa.table({"balance_id": ["a", "b"], "v": [1, 2]}, schema=SCHEMA))
    writer.finish({}).move_in()
    fs = Store.at(s3_storage).fs
    import pyarrow.parquet as pq
    assert pq.read_table(writer.final_path, filesystem=fs).to_pydict() == {"balance_id": ["a", "b"], "v": [1, 2]}
    assert fs.get_file_info(writer.staging_path).type == pafs.FileType.NotFound


def test_aborted_write_leaves_no_object(s3_storage):
    writer = _writer(s3_storage)
    writer.write_table(pa.table({"balance_id": ["a"], "v": [1]}, schema=SCHEMA))
    writer.abort()
    fs = Store.at(s3_storage).fs
    for path in (writer.staging_path, writer.final_path):
        assert fs.get_file_info(path).type == pafs.FileType.NotFound
