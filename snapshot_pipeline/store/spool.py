"""Changed balances spooled to a CSV file, for one COPY into the index at commit time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv

from snapshot_pipeline.store.parquet import AMOUNT_COLUMNS


class IndexSpool:
    """Rows of ``snapshot_index.balance_snapshots`` for one partition, written as CSV while streaming."""

    def __init__(self, directory: Path, date: dt.date):
        self.date = date
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"index-{date.isoformat()}.csv"
        self._writer: pcsv.CSVWriter | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        columns = {
            "balance_id": table["balance_id"],
            "snapshot_date": pa.repeat(pa.scalar(self.date, pa.date32()), table.num_rows),
            **{name: table[name] for name in AMOUNT_COLUMNS},
            "currency": table["currency"],
        }
        out = pa.table(columns)
        if self._writer is None:
            self._writer = pcsv.CSVWriter(str(self.path), out.schema)
        self._writer.write_table(out)
        self.rows += out.num_rows

    def close(self) -> Path | None:
        """Finish the file; None when nothing was spooled."""
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        return self.path

    def reset(self) -> None:
        """Forget everything spooled so far."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.path.unlink(missing_ok=True)
        self.rows = 0
