"""``history``: the versions of a snapshot partition, and reading an earlier one (time travel, for audit)."""

from __future__ import annotations

import argparse
import json
import sys

from snapshot_pipeline.cli.common import BadInput, date_arg, int_in, print_json
from snapshot_pipeline.settings import Settings

FORMATS = ("ndjson", "csv", "parquet")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``history`` to the CLI's subcommands."""
    p = sub.add_parser(
        "history", help="list the versions of a snapshot partition, or read one (--version / --as-of)",
        description="Without --version/--as-of: every version of the partition inside the history window"
                    " (SNAPSHOT_HISTORY_DAYS): when, Dagster run, watermark, rows changed, why, Delta version."
                    " With one: the partition's rows as that version of the Delta table names them.")
    p.add_argument("--date", type=date_arg, required=True, help="the partition (YYYY-MM-DD)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version", type=int_in(0, 2**62, "--version"),
                       help="a version of the Delta table balance_snapshots (as `history` lists them)")
    which.add_argument("--as-of", help="an RFC 3339 instant: the partition as readers saw it then")
    p.add_argument("--format", choices=FORMATS, default="ndjson",
                   help="rows as NDJSON (amounts as exact strings), CSV or Parquet (default ndjson)")
    p.add_argument("--output", help="write the rows to this file instead of stdout (required for parquet)")
    p.set_defaults(handler=cmd_history)


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    """List a partition's versions (JSON), or write one version's rows."""
    from snapshot_pipeline.query import QueryError, parse_timestamp  # noqa: PLC0415 - keep `--help` fast
    from snapshot_pipeline.store import history  # noqa: PLC0415

    if args.version is None and args.as_of is None:
        listed = history.versions(settings, args.date)
        print_json(listed)
        if not listed["versions"]:
            print(f"no version of {args.date}: never published, or published before the history window"
                  f" (SNAPSHOT_HISTORY_DAYS={settings.history_days}); partitions run from {settings.start_date}",
                  file=sys.stderr)
        return 0
    if args.format == "parquet" and not args.output:
        raise BadInput("--format parquet needs --output FILE")
    try:
        as_of = parse_timestamp(args.as_of) if args.as_of else None
    except QueryError as exc:
        raise BadInput(f"--as-of: {exc}") from None
    try:
        version, table = history.read_version(settings, args.date, version=args.version, as_of=as_of)
    except history.HistoryError as exc:
        raise BadInput(str(exc)) from None
    _write(table, args.format, args.output)
    print(json.dumps({"snapshot_date": args.date.isoformat(), "delta_version": version, "rows": table.num_rows}),
          file=sys.stderr)
    return 0


def _write(table, fmt: str, output: str | None) -> None:
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415
    import pyarrow.csv as pcsv  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    from snapshot_pipeline.store.parquet import READ_BATCH_ROWS  # noqa: PLC0415

    if fmt == "parquet":
        pq.write_table(table, output, compression="zstd")
        return
    if fmt == "csv":
        pcsv.write_csv(table, output or sys.stdout.buffer)
        return
    # NDJSON: exact amounts as strings, instants in RFC 3339
    text = pa.table({name: (pc.cast(column, pa.string()) if not pa.types.is_string(column.type) else column)
                     for name, column in zip(table.column_names, table.columns, strict=True)})
    with (open(output, "w") if output else sys.stdout) as out:
        for batch in text.to_batches(READ_BATCH_ROWS):
            for row in batch.to_pylist():
                out.write(json.dumps(row) + "\n")
