"""The storage layer against a real S3-compatible server (moto, started by a fixture)."""

import datetime as dt

import pyarrow as pa
import pyarrow.fs as pafs

from snapshot_pipeline.store import parquet as store

DATE = dt.date(2026, 1, 5)
SCHEMA = pa.schema([pa.field("balance_id", pa.string(), nullable=False), pa.field("v", pa.int64())])


def _writer(uri):
    """A staged writer (what a shard of a sharded run uses): staged apart, moved in by the commit."""
    base = store.resolve(uri)[1]
    return store.PartitionWriter(uri, DATE, {"k": "v"}, schema=SCHEMA, final_path=f"{base}/t/part-00000.parquet",
                                 staging_dir=f"{base}/.staging/work")


def test_resolve_uses_the_aws_environment(s3_storage):
    fs, base = store.resolve(s3_storage)
    assert isinstance(fs, pafs.S3FileSystem)
    assert base == s3_storage.removeprefix("s3://")


def test_write_publish_read_round_trip(s3_storage):
    writer = _writer(s3_storage)
    writer.write_table(pa.table({"balance_id": ["a", "b"], "v": [1, 2]}, schema=SCHEMA))
    writer.finish({}).publish()
    fs, _ = store.resolve(s3_storage)
    import pyarrow.parquet as pq
    assert pq.read_table(writer.final_path, filesystem=fs).to_pydict() == {"balance_id": ["a", "b"], "v": [1, 2]}
    assert fs.get_file_info(writer.staging_path).type == pafs.FileType.NotFound


def test_aborted_write_leaves_no_object(s3_storage):
    writer = _writer(s3_storage)
    writer.write_table(pa.table({"balance_id": ["a"], "v": [1]}, schema=SCHEMA))
    writer.abort()
    fs, base = store.resolve(s3_storage)
    for path in (writer.staging_path, writer.final_path):
        assert fs.get_file_info(path).type == pafs.FileType.NotFound
