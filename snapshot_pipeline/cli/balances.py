"""Commands about balance queries: ``balance-at``, ``balances-at``, ``history`` and ``ledger-indexes`` (the read
indexes that make them cheap)."""

from __future__ import annotations

import argparse
import sys

from snapshot_pipeline import db
from snapshot_pipeline.cli.common import BadInput, CliError, date_arg, print_json
from snapshot_pipeline.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``balance-at`` and ``ledger-indexes`` to the CLI's subcommands."""
    p = sub.add_parser("balance-at", help="a balance as of an instant, exact (JSON in Blnk's response shape)")
    p.add_argument("balance_id")
    p.add_argument("--timestamp", help="RFC 3339 instant with a UTC offset (default: now)")
    p.add_argument("--from-source", action="store_true", help="replay the journal from genesis")
    p.set_defaults(handler=cmd_balance_at)

    p = sub.add_parser("balances-at", help="every balance at an instant, exact (Parquet, CSV or NDJSON)")
    p.add_argument("--timestamp", help="RFC 3339 instant with a UTC offset (default: now)")
    p.add_argument("--format", choices=["parquet", "csv", "ndjson"], default="ndjson")
    p.add_argument("--output", "-o", help="file to write (default: stdout; required for parquet)")
    p.add_argument("--ledger-id", help="only this ledger's balances")
    p.add_argument("--currency", help="only this currency's balances")
    p.set_defaults(handler=cmd_balances_at)

    p = sub.add_parser("balance-history", help="end-of-day balances of one balance over a range of days (JSON)")
    p.add_argument("balance_id")
    p.add_argument("--from", dest="first", type=date_arg, required=True, help="first day YYYY-MM-DD")
    p.add_argument("--to", dest="last", type=date_arg, required=True, help="last day YYYY-MM-DD (inclusive)")
    p.set_defaults(handler=cmd_history)

    p = sub.add_parser("ledger-indexes",
                       help="create the read indexes on blnk.transactions that make replay cheap (CONCURRENTLY)")
    p.add_argument("--dry-run", action="store_true", help="only print the indexes, their state and DDL")
    p.set_defaults(handler=cmd_ledger_indexes)


def cmd_balance_at(args: argparse.Namespace, settings: Settings) -> int:
    """Print one balance as of an instant (Blnk's response shape); bad input exits 2."""
    from snapshot_pipeline import query  # noqa: PLC0415

    try:
        at = query.parse_timestamp(args.timestamp) if args.timestamp else query.utc_now()
        with query.QueryEngine(settings, max_connections=1) as engine:
            answer = engine.balance_at(args.balance_id, at, from_source=args.from_source)
    except query.QueryError as exc:
        raise BadInput(str(exc)) from None
    except (query.BalanceNotFound, query.AmountOverflow) as exc:
        raise CliError(str(exc).strip("'\"")) from None
    body = answer.as_blnk()
    body["timestamp"] = query.blnk_timestamp(answer.at, args.timestamp)  # as the HTTP service (and Blnk) echo it
    print_json(body)
    return 0


def cmd_balances_at(args: argparse.Namespace, settings: Settings) -> int:
    """Write every balance at an instant (the HTTP service's ``GET /balances-at``) to stdout or ``--output``."""
    from snapshot_pipeline import query  # noqa: PLC0415
    from snapshot_pipeline.api.sets import _csv_rows, _json_rows, _parquet  # noqa: PLC0415 - one writer per format

    if args.format == "parquet" and not args.output:
        raise BadInput("--format parquet needs --output FILE (Parquet is binary)")
    try:
        at = query.parse_timestamp(args.timestamp) if args.timestamp else query.utc_now()
        with query.QueryEngine(settings, max_connections=1) as engine:
            table = engine.balances_at(at, args.ledger_id, args.currency)
    except query.QueryError as exc:
        raise BadInput(str(exc)) from None
    except query.AmountOverflow as exc:
        raise CliError(str(exc).strip("'\"")) from None
    chunks = [_parquet(table)] if args.format == "parquet" else (
        _csv_rows(table) if args.format == "csv" else _json_rows(table))
    out = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115 - stdout is not ours to close
    try:
        for chunk in chunks:
            out.write(chunk)
    finally:
        if args.output:
            out.close()
        else:
            out.flush()
    print(f"{table.num_rows:,} balances at {query.iso_utc(at)}", file=sys.stderr)
    return 0


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    """Print the end-of-day balances of one balance, one object per day (the HTTP ``/history`` body)."""
    from snapshot_pipeline import query  # noqa: PLC0415

    try:
        with query.QueryEngine(settings, max_connections=1) as engine:
            days = [d.as_dict() for d in query.end_of_day_history(engine, args.balance_id, args.first, args.last,
                                                                   settings.timezone)]
    except query.QueryError as exc:
        raise BadInput(str(exc)) from None
    except (query.BalanceNotFound, query.AmountOverflow) as exc:
        raise CliError(str(exc).strip("'\"")) from None
    print_json({"balance_id": args.balance_id, "from": args.first.isoformat(), "to": args.last.isoformat(),
                "timezone": settings.timezone, "days": days})
    return 0


def cmd_ledger_indexes(args: argparse.Namespace, settings: Settings) -> int:
    """Create the missing read indexes on the ledger (or, with ``--dry-run``, list them); print their state."""
    from snapshot_pipeline.ledger import indexes  # noqa: PLC0415

    with db.connect(db.ledger_url(settings), autocommit=True, what="ledger database") as conn:
        try:
            before = indexes.status(conn)
        except LookupError as exc:
            raise CliError(str(exc).strip("'\"")) from None
        created = [] if args.dry_run else indexes.create_missing(conn, log=lambda m: print(m, file=sys.stderr))
        after = before if args.dry_run else indexes.status(conn)
    print_json({"dry_run": args.dry_run, "created": created, "indexes": after})
    return 0
