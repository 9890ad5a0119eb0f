"""Other engines reading the Delta tables the way a data team would: DuckDB ``delta_scan``, polars, deltalake.

DuckDB's delta and httpfs extensions come from PyPI (``duckdb-extension-delta``, ``duckdb-extension-httpfs``),
so no test downloads anything. S3 settings come from the standard AWS environment the ``s3_storage``
fixture sets.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc


def _extension(package: str, name: str) -> str:
    module = __import__(package)
    return str(next(Path(module.__file__).parent.rglob(f"{name}.duckdb_extension")))


def duckdb_connection(s3: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the delta extension (and httpfs plus an S3 secret for the loopback server)."""
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{_extension('duckdb_extension_delta', 'delta')}'")
    if s3:
        con.execute(f"LOAD '{_extension('duckdb_extension_httpfs', 'httpfs')}'")
        host = os.environ["AWS_ENDPOINT_URL"].removeprefix("http://")
        con.execute(f"CREATE OR REPLACE SECRET moto (TYPE s3, KEY_ID '{os.environ['AWS_ACCESS_KEY_ID']}',"
                    f" SECRET '{os.environ['AWS_SECRET_ACCESS_KEY']}', REGION 'us-east-1', ENDPOINT '{host}',"
                    " URL_STYLE 'path', USE_SSL false)")
    return con


def table_uri(storage_uri: str, name: str = "balance_snapshots") -> str:
    return f"{storage_uri.rstrip('/')}/{name}"


def storage_options(storage_uri: str) -> dict[str, str] | None:
    if not storage_uri.startswith("s3://"):
        return None
    return {"AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"], "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"], "AWS_REGION": "us-east-1"}


def via_duckdb(con: duckdb.DuckDBPyConnection, storage_uri: str, date: dt.date, name: str = "balance_snapshots",
               column: str = "snapshot_date") -> pa.Table:
    """One partition through ``delta_scan``, in balance_id order."""
    return con.execute(f"SELECT * FROM delta_scan('{table_uri(storage_uri, name)}') WHERE {column} = ?"
                       " ORDER BY balance_id", [date]).arrow().read_all()


def via_polars(storage_uri: str, date: dt.date, version: int | None = None) -> pa.Table:
    import polars as pl

    frame = pl.read_delta(table_uri(storage_uri), version=version, storage_options=storage_options(storage_uri))
    return frame.filter(pl.col("snapshot_date") == date).sort("balance_id").to_arrow()


def via_deltalake(storage_uri: str, date: dt.date, version: int | None = None,
                  name: str = "balance_snapshots", column: str = "snapshot_date") -> pa.Table:
    from deltalake import DeltaTable

    table = DeltaTable(table_uri(storage_uri, name), version=version, storage_options=storage_options(storage_uri))
    read = table.to_pyarrow_dataset().to_table()
    read = read.filter(pc.equal(read[column], pa.scalar(date, read.schema.field(column).type)))
    return read.sort_by("balance_id") if "balance_id" in read.column_names else read
