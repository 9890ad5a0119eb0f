"""Commands that make snapshots: ``demo``, ``seed-ledger`` and ``snapshot``."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from snapshot_pipeline import calendar, db, names
from snapshot_pipeline.cli.common import CliError, date_arg, int_in, print_json
from snapshot_pipeline.cli.materialize import materialize_partition, summary_line
from snapshot_pipeline.settings import Settings, record_ledger_start

HINT_TIME = dt.time(12, 0)  # the demo hints' instant on their day, UTC

VERBOSE_HELP = "also print Dagster's log lines (they are in the run's log)"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``demo``, ``seed-ledger`` and ``snapshot`` to the CLI's subcommands."""
    batch = int_in(names.BATCH_SIZE_MIN, names.BATCH_SIZE_MAX, "--batch-size")

    p = sub.add_parser("demo", help="seed a demo ledger if empty and snapshot the last closed days")
    p.add_argument("--days", type=int_in(1, 366, "--days"), default=7, help="closed days to snapshot (default 7)")
    p.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    p.add_argument("--balances", type=int_in(9, 100_000_000, "--balances"), default=20_000)
    p.add_argument("--transactions", type=int_in(0, 1_000_000_000, "--transactions"), default=200_000)
    p.add_argument("--seed-days", type=int_in(1, 3650, "--seed-days"), default=30, help="days of history to seed")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--batch-size", type=batch, default=names.BATCH_SIZE_DEFAULT)
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser("seed-ledger", help="load a deterministic, realistic Blnk ledger (COPY, progress bar)")
    p.add_argument("--balances", type=int_in(9, 100_000_000, "--balances"), required=True)
    p.add_argument("--transactions", type=int_in(0, 1_000_000_000, "--transactions"), required=True)
    p.add_argument("--days", type=int_in(1, 3650, "--days"), required=True, help="days the journal spans")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--start-date", type=date_arg, help="first day (default: DAYS days before today)")
    p.add_argument("--replace", action="store_true", help="wipe an existing ledger first")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=cmd_seed_ledger)

    p = sub.add_parser("snapshot", help="materialize one partition through Dagster and print its metrics")
    p.add_argument("--date", type=date_arg, required=True, help="partition date YYYY-MM-DD (business time zone)")
    p.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    p.add_argument("--full-refresh", action="store_true",
                   help="compute the partition from genesis (a full read of the ledger) instead of rolling forward")
    p.add_argument("--batch-size", type=batch, default=names.BATCH_SIZE_DEFAULT,
                   help=f"balances per page, {names.BATCH_SIZE_RULE} (default {names.BATCH_SIZE_DEFAULT})")
    p.add_argument("--shards", type=int_in(1, names.SHARDS_MAX, "--shards"), default=1,
                   help="merge the partition as this many balance_id ranges, one after the other, each its own"
                        " part file (default 1; the balance_snapshots_sharded job runs them in parallel)")
    p.set_defaults(handler=cmd_snapshot)


def cmd_seed_ledger(args: argparse.Namespace, settings: Settings) -> int:
    """Load a generated ledger (refused on a non-empty one unless ``--replace``); print its summary."""
    from snapshot_pipeline.ledger import generator  # noqa: PLC0415

    start = args.start_date or (calendar.last_closed_day("UTC") - dt.timedelta(days=args.days - 1))
    spec = generator.LedgerSpec(args.balances, args.transactions, args.days, args.seed, start)
    url = db.ledger_url(settings)
    with db.connect(url, autocommit=True, what="ledger database") as conn:
        try:
            summary = generator.generate(conn, spec, replace=args.replace, progress=not args.no_progress)
        except generator.LedgerNotEmpty as exc:
            raise CliError(str(exc)) from None
    record_ledger_start(settings, spec.start_date)  # partitions start here unless SNAPSHOT_START_DATE says otherwise
    print_json({"ledger": db.redact(url), **summary})
    return 0


def cmd_snapshot(args: argparse.Namespace, settings: Settings) -> int:
    """Materialize one partition; its summary line on stderr, its metrics (JSON) on stdout."""
    out = materialize_partition(settings, args.date, args.batch_size, args.full_refresh, verbose=args.verbose,
                                shards=args.shards)
    print(summary_line(out), file=sys.stderr)
    print_json(out)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Seed a demo ledger when it is empty, then materialize the last ``--days`` closed days (one line each)."""
    from snapshot_pipeline.quality import lateness  # noqa: PLC0415

    seeded = _seed_demo_ledger(args, settings)
    if seeded and settings.start_date_source != "SNAPSHOT_START_DATE":
        settings = settings.with_overrides(start_date=seeded)  # the record just written: partitions start there
    last = calendar.last_closed_day(settings.timezone)
    days = [d for d in calendar.days(last - dt.timedelta(days=args.days - 1), last) if d >= settings.start_date]
    header = f"{'date':<12}{'status':<14}{'rows':>10}{'changed':>10}{'ms':>8}{'rows/s':>10}{'checks':>9}  path"
    print(header)
    print("-" * len(header), flush=True)
    for day in days:  # one line per day, printed as soon as the day is done
        if lateness.staleness(settings, day) == {}:
            print(f"{day.isoformat():<12}{'up to date':<14}", flush=True)
            continue
        out = materialize_partition(settings, day, args.batch_size, verbose=args.verbose)
        checks = out["checks"]
        passed = f"{sum(1 for v in checks.values() if v == 'passed')}/{len(checks)}"
        print(f"{day.isoformat():<12}{'materialized':<14}{out['dagster/row_count']:>10,}{out['balances_changed']:>10,}"
              f"{out['duration_ms']:>8,}{out['snapshots_per_second']:>10,.0f}{passed:>9}  {out['path']}", flush=True)
    _print_hints(settings, last)
    return 0


def _seed_demo_ledger(args: argparse.Namespace, settings: Settings) -> dt.date | None:
    """Generate the demo ledger unless the ledger already has transactions; the first day it generated."""
    from snapshot_pipeline.ledger import generator  # noqa: PLC0415

    url = db.ledger_url(settings)
    print(f"ledger: {db.redact(url)}", file=sys.stderr)
    with db.connect(url, autocommit=True, what="ledger database") as conn:
        counts = generator.ledger_counts(conn)
        if counts and counts[1]:
            print(f"ledger already has {counts[0]:,} balances and {counts[1]:,} transaction rows", file=sys.stderr)
            return None
        start = calendar.last_closed_day("UTC") - dt.timedelta(days=args.seed_days - 1)
        spec = generator.LedgerSpec(args.balances, args.transactions, args.seed_days, args.seed, start)
        print(f"seeding a demo ledger: {spec.balances:,} balances, {spec.transactions:,} transactions (plus the"
              f" commits and voids of the inflight ones, each a row of its own) from {start} ...", file=sys.stderr)
        generator.generate(conn, spec, progress=True)
    record_ledger_start(settings, start)
    return start


def _command_path(name: str) -> str:
    """How to call a console script of this environment as printed (the venv's bin, relative when shorter)."""
    path = Path(sys.executable).with_name(name)
    try:
        relative = path.relative_to(Path.cwd())
        return f"./{relative}" if len(str(relative)) < len(str(path)) else str(path)
    except ValueError:
        return str(path)


def _example_balance(settings: Settings, day: dt.date) -> str | None:
    """A balance with legs to show in the hints: the source of the latest transaction whose balance existed at
    the end of the history's first day and at the hints' instant (so that each hint shows it existing; the
    journal walked back by primary key, one balance probe per row), else the latest transaction's source."""
    # naive UTC, as Blnk's created_at; a history row shows a balance created before its day's cutoff
    bounds = {"cutoff": calendar.cutoff(_history_start(settings, day), settings.timezone),
              "instant": dt.datetime.combine(day, HINT_TIME)}
    with db.connect(db.ledger_url(settings), autocommit=True, what="ledger database") as conn:
        row = conn.execute("SELECT t.source FROM blnk.transactions t JOIN blnk.balances b ON b.balance_id = t.source"
                           " WHERE b.created_at < %(cutoff)s AND b.created_at <= %(instant)s"
                           " ORDER BY t.id DESC LIMIT 1", bounds).fetchone()
        if row is None:
            row = conn.execute("SELECT source FROM blnk.transactions ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            row = conn.execute("SELECT balance_id FROM blnk.balances ORDER BY balance_id LIMIT 1").fetchone()
    return row[0] if row else None


def _history_start(settings: Settings, day: dt.date) -> dt.date:
    """The first day of the hints' balance history: a week back from ``day``, not before the partitions start."""
    return max(day - dt.timedelta(days=6), settings.start_date)


def hint_lines(settings: Settings, day: dt.date, balance_id: str | None) -> list[tuple[str, str]]:
    """What to try after the demo: ``(command, comment)`` pairs, each runnable exactly as printed (a test
    runs them), with the demo's last day and one of its balances."""
    cli = _command_path("snapshot-pipeline")
    instant = f"{day.isoformat()}T{HINT_TIME.isoformat()}Z"
    first = _history_start(settings, day)
    lines = [(f"{cli} snapshot --date {day.isoformat()}", "one partition again through Dagster, JSON metrics")]
    if balance_id:
        lines += [
            (f"{cli} balance-at {balance_id} --timestamp {instant}", "one balance at any instant, exact"),
            (f"{cli} balance-history {balance_id} --from {first.isoformat()} --to {day.isoformat()}",
             "its end-of-day balances, one row a day"),
        ]
    lines += [
        (f"{cli} balances-at --timestamp {instant} --format csv --output balances.csv", "every balance at an instant"),
        (f"{cli} history --date {day.isoformat()}", "the partition's versions (Delta time travel, for audit)"),
        ("make ui PORT=3000", "Dagster UI on http://127.0.0.1:3000 (runs, checks, partitions); Ctrl-C stops it"),
        ("make serve PORT=8000", "HTTP API on http://127.0.0.1:8000 (docs at /docs, Blnk's endpoints)"),
    ]
    return lines


def _print_hints(settings: Settings, day: dt.date) -> None:
    """What to try after the demo, runnable as printed."""
    lines = hint_lines(settings, day, _example_balance(settings, day))
    width = max(len(command) for command, _ in lines)
    print()
    print("Try next (each line runs as printed; docs/ has the rest, docs/reading.md how to read the snapshots):")
    for command, comment in lines:
        print(f"  {command:<{width}}  # {comment}")
