"""Commands about balance queries: ``balance-at`` and ``ledger-indexes`` (the read indexes that make them cheap)."""

from __future__ import annotations

import argparse
import sys

from snapshot_pipeline import db
from snapshot_pipeline.cli.common import BadInput, CliError, print_json
from snapshot_pipeline.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``balance-at`` and ``ledger-indexes`` to the CLI's subcommands."""
    p = sub.add_parser("balance-at", help="a balance as of an instant, exact (JSON in Blnk's response shape)")
    p.add_argument("balance_id")
    p.add_argument("--timestamp", help="RFC 3339 instant with a UTC offset (default: now)")
    p.add_argument("--from-source", action="store_true", help="replay the journal from genesis")
    p.set_defaults(handler=cmd_balance_at)

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
    print_json(answer.as_blnk())
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
