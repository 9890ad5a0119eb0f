"""The ``snapshot-pipeline`` command line.

Machine-readable output (JSON) goes to stdout; progress and errors go to stderr;
any failure exits non-zero.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import warnings
from pathlib import Path

from snapshot_pipeline import calendar, db, embedded
from snapshot_pipeline.settings import (
    Settings,
    SettingsError,
    check_storage_writable,
    dagster_home,
    libpq_url,
    load_settings,
    parse_date,
    redact,
)

MANAGED_MARKER = "# Dagster instance settings for snapshot_pipeline"
# Used when SNAPSHOT_HOME has no dagster.yaml; the same instance as the project's dagster.yaml.
DEFAULT_DAGSTER_YAML = f"""{MANAGED_MARKER} (written into $DAGSTER_HOME by the CLI).
storage:
  postgres:
    postgres_url:
      env: DAGSTER_PG_URL
telemetry:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: 4
    tag_concurrency_limits:  # the runs of a gap-fill backfill go one at a time, oldest range first
      - key: snapshot_pipeline/trigger
        value: gap_fill
        limit: 1
run_queue:
  dequeue_interval_seconds: 1  # the daemon starts a queued run within ~1 s (default 5 s)
run_retries:
  enabled: false
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  max_runtime_seconds: 21600
  poll_interval_seconds: 60
"""
_OLD_DEFAULT_DAGSTER_YAML = "telemetry:\n  enabled: false\n"


class CliError(RuntimeError):
    """A user-facing error: printed to stderr, exit code 1."""


class BadInput(CliError):
    """A bad argument or setting: printed to stderr as one line, exit code 2 (as argparse's usage errors)."""


EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
SERVE_WORKERS = 3  # measured on the 2-core machine: see README, "Serving"


# ----------------------------------------------------------------------------------------------- helpers


def _positive_int(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer from {low:,} to {high:,}, got {value:,}")
        return value

    return parse


def _date(text: str) -> dt.date:
    try:
        return parse_date(text, "date")
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _print_json(payload: object) -> None:
    print(json.dumps(payload, indent=2, default=str))


def prepare_dagster_home(settings: Settings) -> Path:
    """Point ``DAGSTER_HOME`` at a directory with a ``dagster.yaml`` and ``DAGSTER_PG_URL`` at its storage.

    The file is the project's ``dagster.yaml`` (or the built-in equivalent), copied
    when missing and refreshed when an earlier copy written by this CLI differs; a
    ``dagster.yaml`` you wrote yourself (without the marker line) is left alone.
    The instance's PostgreSQL is :func:`snapshot_pipeline.db.dagster_url`.
    """
    _check_dagster_database(settings)  # before any file is written
    home = dagster_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    project_yaml = settings.home / "dagster.yaml"
    if project_yaml.exists() and project_yaml.resolve() == target.resolve():
        wanted = None  # DAGSTER_HOME is the project directory itself
    else:
        wanted = project_yaml.read_text() if project_yaml.exists() else DEFAULT_DAGSTER_YAML
    if wanted is not None:
        current = target.read_text() if target.exists() else None
        managed = current is None or current.startswith(MANAGED_MARKER) or current == _OLD_DEFAULT_DAGSTER_YAML
        if managed and current != wanted:
            target.write_text(wanted)
    os.environ["DAGSTER_PG_URL"] = db.dagster_url(settings)
    os.environ["DAGSTER_HOME"] = str(home)
    return home




def _progress_logger_def(bar_factory):
    """A Dagster logger for CLI runs: turns the asset's ``status=progress`` lines into a progress bar and
    keeps every other record out of the terminal (they stay in the run's log in the Dagster instance)."""
    import logging  # noqa: PLC0415

    import dagster as dg  # noqa: PLC0415

    class ProgressHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = getattr(record, "dagster_meta", {}).get("orig_message") or record.getMessage()
            if message.startswith("operation=balance_snapshot snapshot_date=") and "status=progress" in message:
                fields = dict(part.split("=", 1) for part in message.split() if "=" in part)
                try:
                    bar_factory().update_to(int(fields["rows"]))
                except (KeyError, ValueError):
                    pass

    @dg.logger(description="progress bar of the snapshot CLI")
    def cli_progress(_init_context):
        log = logging.getLogger("snapshot_pipeline.cli.progress")
        log.propagate = False
        log.setLevel(logging.INFO)
        log.handlers = [ProgressHandler()]
        return log

    return cli_progress


class DayProgress:
    """A per-day progress bar (rows and rate; tqdm), drawn only when stderr is a terminal.

    Dagster captures a step's stdout/stderr (file descriptors 1 and 2) into the run's compute logs, so
    the bar writes to a duplicate of descriptor 2 taken before the run starts: still the terminal.
    """

    def __init__(self, label: str, total: int | None):
        from tqdm import tqdm  # noqa: PLC0415

        self._out = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
        self._bar = tqdm(total=total, desc=label, unit=" rows", leave=False, file=self._out,
                         disable=not self._out.isatty(), mininterval=0.2)

    def update_to(self, rows: int) -> None:
        if self._bar.total is not None:
            rows = min(rows, self._bar.total)  # the asset reports whole pages
        self._bar.update(rows - self._bar.n)

    def close(self) -> None:
        self._bar.close()
        self._out.close()


def _balances_at_cutoff(settings: Settings, snapshot_date: dt.date) -> int | None:
    """The expected row count (for the progress bar's total): one indexed count on ``blnk.balances``."""
    try:
        with db.connect(db.ledger_url(settings), autocommit=True, what="ledger database") as conn:
            return conn.execute("SELECT count(*) FROM blnk.balances WHERE created_at < %s",
                                (calendar.cutoff(snapshot_date, settings.timezone),)).fetchone()[0]
    except db.DatabaseUnavailable:
        return None


def materialize_partition(settings: Settings, snapshot_date: dt.date, batch_size: int,
                          full_refresh: bool = False, *, verbose: bool = False) -> dict:
    """Run ``balance_snapshots_job`` for one partition on the Dagster instance; return its metrics.

    Quiet by default: a progress bar on stderr (on a terminal); Dagster's own log lines go to the run's
    log in the instance (the UI's run page) and, with ``verbose``, to stderr as well.

    Every check (partition range, databases reachable, storage writable) comes before Dagster is
    imported or a file is written.
    """
    last = calendar.last_closed_day(settings.timezone)
    if snapshot_date < settings.start_date or snapshot_date > last:
        raise CliError(
            f"--date {snapshot_date} is not a partition: partitions run from {settings.start_date}"
            f" (SNAPSHOT_START_DATE) to {last}, the last closed day in {settings.timezone}"
        )
    _preflight(settings)

    import dagster as dg  # noqa: PLC0415 - keep `--help` fast

    from snapshot_pipeline.definitions import build_definitions  # noqa: PLC0415
    from snapshot_pipeline.defs.assets import ASSET_NAME  # noqa: PLC0415
    from snapshot_pipeline.defs.jobs import SNAPSHOT_JOB  # noqa: PLC0415

    prepare_dagster_home(settings)
    bar = [DayProgress(snapshot_date.isoformat(), _balances_at_cutoff(settings, snapshot_date))]

    def current_bar() -> DayProgress:
        return bar[0]

    job = build_definitions(settings).resolve_job_def(SNAPSHOT_JOB).with_logger_defs(
        {"console": dg.colored_console_logger, "cli_progress": _progress_logger_def(current_bar)})
    try:
        with dg.DagsterInstance.get() as instance:
            result = job.execute_in_process(
                partition_key=snapshot_date.isoformat(),
                instance=instance,
                run_config={
                    "ops": {ASSET_NAME: {"config": {"batch_size": batch_size, "full_refresh": full_refresh}}},
                    "loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "CRITICAL"}},
                                "cli_progress": {}},
                },
                raise_on_error=False,
            )
            if not result.success:
                raise CliError(f"snapshot of {snapshot_date} failed (Dagster run {result.run_id}): {_failure(result)}")
            events = result.asset_materializations_for_node(ASSET_NAME)
            metadata = {key: value.value for key, value in events[-1].metadata.items()}
            checks = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    finally:
        if bar:
            bar[0].close()
    totals = metadata.pop("currency_totals")
    out = {"snapshot_date": snapshot_date.isoformat(), "run_id": result.run_id, **metadata, "batch_size": batch_size}
    out["currency_totals"] = [dict(record.data) for record in totals.records]
    out["checks"] = {c.check_name: ("passed" if c.passed else f"failed ({c.severity.value})") for c in checks}
    return out


def summary_line(out: dict) -> str:
    """One line per materialized day (stderr for `snapshot`, the table row for `demo`)."""
    checks = out.get("checks", {})
    passed = sum(1 for v in checks.values() if v == "passed")
    return (f"{out['snapshot_date']}  {out['dagster/row_count']:,} rows  {out['balances_changed']:,} changed"
            f"  {out['duration_ms']:,} ms  {out['snapshots_per_second']:,.0f} rows/s"
            f"  checks {passed}/{len(checks)} passed  run {out['run_id']}")


def _preflight(settings: Settings) -> None:
    """Fail fast, before launching a run or writing a file: storage not writable, a database unreachable."""
    db.connect(db.ledger_url(settings), what="ledger database").close()
    db.connect(db.snapshot_url(settings), what="snapshot index database").close()
    _check_dagster_database(settings)
    check_storage_writable(settings.storage_uri)  # last: it creates the storage root


def _check_dagster_database(settings: Settings) -> None:
    """``DAGSTER_PG_URL``, when set, must answer now: else SQLAlchemy retries for ~16 s and ends in a traceback.

    (When unset, the instance's database is derived from the index's server, which is checked by
    :func:`snapshot_pipeline.db.dagster_url` itself.)
    """
    if settings.dagster_database_url:
        db.connect(libpq_url(settings.dagster_database_url),
                   what="Dagster instance database (DAGSTER_PG_URL)").close()


def _failure(result) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause is not None and "DagsterExecutionStepExecutionError" in error.cls_name:
                error = error.cause
            return error.message.strip()
    return "see the Dagster run logs"


# ---------------------------------------------------------------------------------------------- commands


def cmd_seed_ledger(args, settings: Settings) -> int:
    from snapshot_pipeline.ledger import generator  # noqa: PLC0415

    start = args.start_date or (calendar.last_closed_day("UTC") - dt.timedelta(days=args.days - 1))
    spec = generator.LedgerSpec(args.balances, args.transactions, args.days, args.seed, start)
    url = db.ledger_url(settings)
    with db.connect(url, autocommit=True, what="ledger database") as conn:
        try:
            summary = generator.generate(conn, spec, replace=args.replace, progress=not args.no_progress)
        except generator.LedgerNotEmpty as exc:
            raise CliError(str(exc)) from None
    _print_json({"ledger": db.redact(url), **summary})
    return 0


def cmd_snapshot(args, settings: Settings) -> int:
    out = materialize_partition(settings, args.date, args.batch_size, args.full_refresh, verbose=args.verbose)
    print(summary_line(out), file=sys.stderr)
    _print_json(out)
    return 0


def cmd_doctor(args, settings: Settings) -> int:
    """Resolve interrupted publishes, mark dead runs failed, remove their leftovers; print what was done."""
    import dagster as dg  # noqa: PLC0415 - keep `--help` fast

    from snapshot_pipeline.defs.recovery import recover_store  # noqa: PLC0415

    _preflight(settings)
    prepare_dagster_home(settings)
    with dg.DagsterInstance.get() as instance:
        found = recover_store(settings, instance, log=lambda line: print(line, file=sys.stderr))
    _print_json({"recovered": found})
    return 0


def cmd_demo(args, settings: Settings) -> int:
    from snapshot_pipeline import snapshot  # noqa: PLC0415
    from snapshot_pipeline.ledger import generator  # noqa: PLC0415

    url = db.ledger_url(settings)
    print(f"ledger: {db.redact(url)}", file=sys.stderr)
    last = calendar.last_closed_day(settings.timezone)
    with db.connect(url, autocommit=True, what="ledger database") as conn:
        counts = generator.ledger_counts(conn)
        if not counts or not counts[1]:
            start = calendar.last_closed_day("UTC") - dt.timedelta(days=args.seed_days - 1)
            spec = generator.LedgerSpec(args.balances, args.transactions, args.seed_days, args.seed, start)
            print(f"seeding a demo ledger: {spec.balances:,} balances, {spec.transactions:,} transactions"
                  f" from {start} ...", file=sys.stderr)
            generator.generate(conn, spec, progress=True)
        else:
            print(f"ledger already has {counts[0]:,} balances and {counts[1]:,} transactions", file=sys.stderr)
    days = [d for d in calendar.days(last - dt.timedelta(days=args.days - 1), last) if d >= settings.start_date]
    header = f"{'date':<12}{'status':<14}{'rows':>10}{'changed':>10}{'ms':>8}{'rows/s':>10}{'checks':>9}  path"
    print(header)
    print("-" * len(header), flush=True)
    for day in days:  # one line per day, printed as soon as the day is done
        stale = snapshot.staleness(settings, day)
        if stale == {}:
            print(f"{day.isoformat():<12}{'up to date':<14}", flush=True)
            continue
        out = materialize_partition(settings, day, args.batch_size, verbose=args.verbose)
        checks = out["checks"]
        passed = f"{sum(1 for v in checks.values() if v == 'passed')}/{len(checks)}"
        print(f"{day.isoformat():<12}{'materialized':<14}{out['dagster/row_count']:>10,}{out['balances_changed']:>10,}"
              f"{out['duration_ms']:>8,}{out['snapshots_per_second']:>10,.0f}{passed:>9}  {out['path']}", flush=True)
    _print_hints(settings)
    return 0


def _command_path(name: str) -> str:
    """How to call a console script of this environment as printed (the venv's bin, relative when shorter)."""
    path = Path(sys.executable).with_name(name)
    try:
        relative = path.relative_to(Path.cwd())
        return f"./{relative}" if len(str(relative)) < len(str(path)) else str(path)
    except ValueError:
        return str(path)


def _print_hints(settings: Settings) -> None:
    cli_path, python = _command_path("snapshot-pipeline"), _command_path(Path(sys.executable).name)
    print()
    print("Explore further:")
    print(f"  {cli_path} snapshot --date YYYY-MM-DD [--batch-size N]   # one partition, JSON metrics")
    print("  make ui        # Dagster UI on http://127.0.0.1:3000 (runs, checks, plots)")
    print(f"  {python} -c \"import pyarrow.dataset as ds; print(ds.dataset('{settings.storage_uri}/balance_snapshots',"
          " partitioning='hive').to_table().num_rows)\"")


def cmd_embedded_db(args, settings: Settings) -> int:
    if args.action == "start":
        _print_json({"url": embedded.ensure_running(settings.data_dir), "data_dir": str(settings.data_dir / "pg")})
    elif args.action == "url":
        _print_json({"url": embedded.url(settings.data_dir, embedded.EMBEDDED_DATABASE)})
    else:
        _print_json({"stopped": embedded.stop(settings.data_dir)})
    return 0


def cmd_migrate(args, settings: Settings) -> int:
    from snapshot_pipeline.store import index  # noqa: PLC0415

    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        _print_json({"applied": index.migrate(conn)})
    return 0


def cmd_retention(args, settings: Settings) -> int:
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
    _print_json(report)
    return 0


UI_GRACE_SECONDS = 6.0  # after SIGINT/SIGTERM: time for `dagster dev` to stop its processes, then SIGKILL


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``; empty elsewhere), children first."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            # the field after the parenthesised command (which may hold spaces) is the state, then the ppid
            ppid = int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        out += children
        todo += children
    return out


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def stop_process_tree(child: "subprocess.Popen", grace: float = UI_GRACE_SECONDS) -> None:
    """SIGTERM to ``child``, which shuts its own processes down; after ``grace`` seconds SIGKILL every
    process that was below it (recorded before it exited: orphans lose their ancestry)."""
    import subprocess  # noqa: PLC0415

    tree = _descendants(child.pid)
    _signal_all([child.pid], signal.SIGTERM)
    try:
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    tree += _descendants(child.pid) if child.poll() is None else []
    _signal_all([child.pid, *tree], signal.SIGKILL)
    child.wait()


def cmd_ui(args, settings: Settings) -> int:
    """Run `dagster dev` (webserver, daemon, code server) until it exits or we get SIGINT/SIGTERM.

    `dagster dev` runs in its own session, so a terminal's Ctrl-C reaches only this process, which then
    stops the whole tree within :data:`UI_GRACE_SECONDS` (+ a SIGKILL of whatever is left).
    """
    import subprocess  # noqa: PLC0415

    if settings.uses_embedded:
        embedded.ensure_running(settings.data_dir)
    home = prepare_dagster_home(settings)
    workspace = settings.home / "workspace.yaml"
    command = [sys.executable, "-m", "dagster", "dev", "-h", args.host, "-p", str(args.port)]
    command += ["-w", str(workspace)] if workspace.exists() else ["-m", "snapshot_pipeline.definitions"]
    print(f"Dagster UI: http://{args.host}:{args.port}  (DAGSTER_HOME={home},"
          f" DAGSTER_PG_URL={db.redact(os.environ['DAGSTER_PG_URL'])}; Ctrl-C stops it)", file=sys.stderr, flush=True)
    child = subprocess.Popen(command, start_new_session=True)
    stopping: list[int] = []

    def on_signal(signum, _frame) -> None:
        stopping.append(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    except KeyboardInterrupt:
        for sig in previous:  # a second Ctrl-C must not interrupt the shutdown
            signal.signal(sig, signal.SIG_IGN)
        print("stopping the Dagster UI ...", file=sys.stderr, flush=True)
        stop_process_tree(child)
        return 128 + stopping[0] if stopping else 130
    finally:
        for sig, handler in previous.items():
            if signal.getsignal(sig) is not signal.SIG_IGN:
                signal.signal(sig, handler)
    return code


def cmd_balance_at(args, settings: Settings) -> int:
    from snapshot_pipeline import query  # noqa: PLC0415

    try:
        at = query.parse_timestamp(args.timestamp) if args.timestamp else query.utc_now()
        with query.QueryEngine(settings, max_connections=1) as engine:
            answer = engine.balance_at(args.balance_id, at, from_source=args.from_source)
    except query.QueryError as exc:
        raise BadInput(str(exc)) from None
    except (query.BalanceNotFound, query.AmountOverflow) as exc:
        raise CliError(str(exc).strip("'\"")) from None
    _print_json(answer.as_blnk())
    return 0


def cmd_ledger_indexes(args, settings: Settings) -> int:
    from snapshot_pipeline.ledger import indexes  # noqa: PLC0415

    with db.connect(db.ledger_url(settings), autocommit=True, what="ledger database") as conn:
        try:
            before = indexes.status(conn)
        except LookupError as exc:
            raise CliError(str(exc).strip("'\"")) from None
        created = [] if args.dry_run else indexes.create_missing(conn, log=lambda m: print(m, file=sys.stderr))
        after = before if args.dry_run else indexes.status(conn)
    _print_json({"dry_run": args.dry_run, "created": created, "indexes": after})
    return 0


def cmd_serve(args, settings: Settings) -> int:
    """Run the HTTP API with uvicorn: ``--workers`` processes, each with its own query pool (README, "Serving").

    Settings were validated by :func:`main` before this runs, so a bad one exits 2 before binding.
    With one worker the app is built here; with several, each worker process builds it from the
    (same) environment through the :func:`snapshot_pipeline.api.create_app` factory.
    """
    import uvicorn  # noqa: PLC0415

    from snapshot_pipeline.api import create_app  # noqa: PLC0415

    print(f"serving on http://{args.host}:{args.port} (OpenAPI docs at /docs) with {args.workers} worker(s); auth "
          f"{'on' if settings.api_key else 'off'}; Dagster webserver {settings.dagster_webserver_url}",
          file=sys.stderr)
    options = {"host": args.host, "port": args.port, "log_level": args.log_level, "access_log": args.access_log}
    if args.workers == 1:
        uvicorn.run(create_app(settings), **options)
    else:
        uvicorn.run("snapshot_pipeline.api:create_app", factory=True, workers=args.workers, **options)
    return 0


# ------------------------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    from snapshot_pipeline import names  # noqa: PLC0415

    batch = _positive_int(names.BATCH_SIZE_MIN, names.BATCH_SIZE_MAX)
    parser = argparse.ArgumentParser(
        prog="snapshot-pipeline",
        description="Exact daily balance snapshots of a Blnk ledger, orchestrated by Dagster.",
        epilog="Environment: LEDGER_DATABASE_URL, SNAPSHOT_DATABASE_URL, SNAPSHOT_STORAGE_URI, SNAPSHOT_TIMEZONE,"
        " SNAPSHOT_START_DATE, DAGSTER_HOME, DAGSTER_WEBSERVER_URL, SNAPSHOT_API_KEY. Unset database URLs mean the embedded PostgreSQL in .data/.",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="seed a demo ledger if empty and snapshot the last closed days")
    p.add_argument("--days", type=_positive_int(1, 366), default=7, help="closed days to snapshot (default 7)")
    p.add_argument("--verbose", action="store_true", help="also print Dagster's log lines (they are in the run's log)")
    p.add_argument("--balances", type=_positive_int(9, 100_000_000), default=20_000)
    p.add_argument("--transactions", type=_positive_int(0, 1_000_000_000), default=200_000)
    p.add_argument("--seed-days", type=_positive_int(1, 3650), default=30, help="days of history to seed")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--batch-size", type=batch, default=names.BATCH_SIZE_DEFAULT)
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser("seed-ledger", help="load a deterministic, realistic Blnk ledger (COPY, progress bar)")
    p.add_argument("--balances", type=_positive_int(9, 100_000_000), required=True)
    p.add_argument("--transactions", type=_positive_int(0, 1_000_000_000), required=True)
    p.add_argument("--days", type=_positive_int(1, 3650), required=True, help="days the journal spans")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--start-date", type=_date, help="first day (default: DAYS days before today)")
    p.add_argument("--replace", action="store_true", help="wipe an existing ledger first")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=cmd_seed_ledger)

    p = sub.add_parser("snapshot", help="materialize one partition through Dagster and print its metrics")
    p.add_argument("--date", type=_date, required=True, help="partition date YYYY-MM-DD (business time zone)")
    p.add_argument("--verbose", action="store_true", help="also print Dagster's log lines (they are in the run's log)")
    p.add_argument("--full-refresh", action="store_true",
                   help="compute the partition from genesis (a full read of the ledger) instead of rolling forward")
    p.add_argument("--batch-size", type=batch, default=names.BATCH_SIZE_DEFAULT,
                   help=f"balances per page, {names.BATCH_SIZE_RULE} (default {names.BATCH_SIZE_DEFAULT})")
    p.set_defaults(handler=cmd_snapshot)

    p = sub.add_parser("doctor", help="clean up after dead runs: resolve interrupted publishes, mark them failed")
    p.set_defaults(handler=cmd_doctor)

    p = sub.add_parser("migrate", help="apply the snapshot index migrations")
    p.set_defaults(handler=cmd_migrate)

    p = sub.add_parser("retention", help="apply the tiered retention policy (or --dry-run to see the plan)")
    p.add_argument("--dry-run", action="store_true", help="report what would be removed, change nothing")
    p.add_argument("--days", type=_positive_int(1, 100_000), help="daily tier (default SNAPSHOT_RETENTION_DAYS)")
    p.add_argument("--months", type=_positive_int(0, 12_000),
                   help="month-end tier (default SNAPSHOT_RETENTION_MONTHS)")
    p.add_argument("--reference-date", type=_date, help="day the policy counts back from (default: last closed day)")
    p.set_defaults(handler=cmd_retention)

    p = sub.add_parser("embedded-db", help="start, stop or locate the embedded PostgreSQL")
    p.add_argument("action", choices=["start", "stop", "url"])
    p.set_defaults(handler=cmd_embedded_db)

    p = sub.add_parser("balance-at", help="a balance as of an instant, exact (JSON in Blnk's response shape)")
    p.add_argument("balance_id")
    p.add_argument("--timestamp", help="RFC 3339 instant with a UTC offset (default: now)")
    p.add_argument("--from-source", action="store_true", help="replay the journal from genesis")
    p.set_defaults(handler=cmd_balance_at)

    p = sub.add_parser("ledger-indexes",
                       help="create the read indexes on blnk.transactions that make replay cheap (CONCURRENTLY)")
    p.add_argument("--dry-run", action="store_true", help="only print the indexes, their state and DDL")
    p.set_defaults(handler=cmd_ledger_indexes)

    p = sub.add_parser("serve", help="the HTTP API (Blnk-compatible balance queries and snapshot trigger)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_positive_int(1, 65535), default=8000)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--workers", type=_positive_int(1, 64), default=SERVE_WORKERS,
                   help=f"server processes (default {SERVE_WORKERS}, sized by benchmarks/bench_query.py)")
    p.add_argument("--access-log", action="store_true", help="log every request (off: it costs throughput)")
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("ui", help="start the Dagster UI (dagster dev) on the project's workspace")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(handler=cmd_ui)
    return parser


def _one_line(exc: BaseException) -> str:
    """An error as one line of text, passwords of any URL in it hidden."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact(text)


def main(argv: list[str] | None = None) -> int:
    """Parse, load and validate settings, run the command; errors are one line on stderr.

    Exit codes: 0 success, 1 failure, 2 bad input (argument or setting; nothing was done), 130
    interrupted. An unexpected exception is shown as one line too; ``--debug`` shows its traceback.
    """
    # the embedded PostgreSQL's platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): not actionable
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        return args.handler(args, settings)
    except (BadInput, SettingsError) as exc:
        if args.debug:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (CliError, db.DatabaseUnavailable, embedded.EmbeddedDatabaseError) as exc:
        if args.debug:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an unforeseen failure: one line, the traceback only on request
        if args.debug:
            raise
        print(f"error: {type(exc).__name__}: {_one_line(exc)} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
