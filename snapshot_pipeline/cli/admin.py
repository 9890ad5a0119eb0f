"""Commands that look after the databases and the store: ``doctor``, ``migrate``, ``retention``, ``embedded-db``."""

from __future__ import annotations

import argparse
import sys

from snapshot_pipeline import db, embedded
from snapshot_pipeline.cli.common import CliError, date_arg, int_in, print_json
from snapshot_pipeline.cli.instance import preflight, prepare_dagster_home
from snapshot_pipeline.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``doctor``, ``migrate``, ``retention`` and ``embedded-db`` to the CLI's subcommands."""
    p = sub.add_parser("doctor", help="clean up after dead runs: resolve interrupted publishes, mark them failed")
    p.set_defaults(handler=cmd_doctor)

    p = sub.add_parser("migrate", help="apply the snapshot index migrations; convert a pre-Delta store in place")
    p.set_defaults(handler=cmd_migrate)

    p = sub.add_parser("retention", help="apply the tiered retention policy (or --dry-run to see the plan)")
    p.add_argument("--dry-run", action="store_true", help="report what would be removed, change nothing")
    p.add_argument("--days", type=int_in(1, 100_000, "--days"), help="daily tier (default SNAPSHOT_RETENTION_DAYS)")
    p.add_argument("--months", type=int_in(0, 12_000, "--months"),
                   help="month-end tier (default SNAPSHOT_RETENTION_MONTHS)")
    p.add_argument("--reference-date", type=date_arg, help="day the policy counts back from (default: last closed day)")
    p.set_defaults(handler=cmd_retention)

    p = sub.add_parser("embedded-db", help="start, stop or locate the embedded PostgreSQL")
    p.add_argument("action", choices=["start", "stop", "url"])
    p.set_defaults(handler=cmd_embedded_db)


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    """Resolve interrupted publishes, mark dead runs failed, remove their leftovers; print what was done."""
    import dagster as dg  # noqa: PLC0415 - keep `--help` fast

    from snapshot_pipeline.defs.snapshots.recovery import recover_store  # noqa: PLC0415

    preflight(settings)
    prepare_dagster_home(settings)
    with dg.DagsterInstance.get() as instance:
        found = recover_store(settings, instance, log=lambda line: print(line, file=sys.stderr))
    print_json({"recovered": found})
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Apply the snapshot index's migrations and create the Delta table (converting a store published before
    Delta in place: no data rewritten); print what was done."""
    from snapshot_pipeline.store import delta, index, publication  # noqa: PLC0415
    from snapshot_pipeline.store.location import Store  # noqa: PLC0415

    store = Store.at(settings.storage_uri)
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        applied = index.migrate(conn)
        existed = delta.exists(store, delta.SNAPSHOTS)
        publication.ensure_table(store, conn, settings.history_days)
    print_json({"applied": applied, "delta_table": store.table_uri(delta.SNAPSHOTS.name),
                "delta_table_created": not existed})
    return 0


def cmd_retention(args: argparse.Namespace, settings: Settings) -> int:
    """Apply (or, with ``--dry-run``, plan) the tiered retention policy; print the report."""
    from snapshot_pipeline.store import retention  # noqa: PLC0415

    try:
        policy = retention.Policy(
            args.days if args.days is not None else settings.retention_days,
            args.months if args.months is not None else settings.retention_months,
        )
        report = retention.apply_retention(settings, reference=args.reference_date, dry_run=args.dry_run,
                                           policy=policy, log=lambda m: print(m, file=sys.stderr))
    except retention.RetentionError as exc:
        raise CliError(str(exc)) from None
    print_json(report)
    return 0


def cmd_embedded_db(args: argparse.Namespace, settings: Settings) -> int:
    """Start, locate or stop the embedded PostgreSQL of ``.data/``."""
    if args.action == "start":
        print_json({"url": db.embedded_url(settings.data_dir), "data_dir": str(settings.data_dir / "pg")})
    elif args.action == "url":
        print_json({"url": embedded.url(settings.data_dir, embedded.EMBEDDED_DATABASE)})
    else:
        print_json({"stopped": embedded.stop(settings.data_dir)})
    return 0
