"""The argument parser of ``snapshot-pipeline``: the top level here, each command group's arguments in its module."""

from __future__ import annotations

import argparse

from snapshot_pipeline.cli import admin, balances, history, serve, snapshots

EPILOG = ("Environment: LEDGER_DATABASE_URL, SNAPSHOT_DATABASE_URL, SNAPSHOT_STORAGE_URI, SNAPSHOT_TIMEZONE,"
          " SNAPSHOT_START_DATE, DAGSTER_HOME, DAGSTER_WEBSERVER_URL, SNAPSHOT_API_KEY. Unset database URLs mean"
          " the embedded PostgreSQL in .data/.")


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand, in the order ``--help`` lists them; each sets ``handler(args, settings) -> exit code``."""
    parser = argparse.ArgumentParser(
        prog="snapshot-pipeline",
        description="Exact daily balance snapshots of a Blnk ledger, orchestrated by Dagster.",
        epilog=EPILOG,
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (snapshots, history, admin, balances, serve):
        group.register(sub)
    return parser
