"""What the benchmarks share (each is still one command of its own): the log line, the worker launcher, and the
throwaway databases and work directories a run measures in (:class:`Scratch`), seeded by the ledger generator.

Every measurement runs in a fresh interpreter: ``run_script_worker`` starts ``SCRIPT --worker SPEC`` through a
small launcher process, so the worker's peak RSS (``ru_maxrss`` of its own process) is its own, and reads the
JSON the worker prints last.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# a process that only starts the worker: Linux carries ru_maxrss over a fork, so the worker must not be forked
# from the (large) benchmark process itself
RESULTS_DIR = Path(__file__).resolve().parent / "results"  # every benchmark's JSON results

LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def log(message: str) -> None:
    """A progress line on stderr (stdout carries the report)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_script_worker(script: str | Path, spec: dict, label: str) -> dict:
    """Run ``script --worker <spec as JSON>`` in a fresh interpreter (with ``spec["env"]`` added to the
    environment); returns the JSON it printed last, plus ``process_seconds``."""
    command = [sys.executable, "-c", LAUNCHER, sys.executable, str(Path(script).resolve()), "--worker",
               json.dumps(spec)]
    started = time.perf_counter()
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, env={**os.environ, **spec.get("env", {})})
    if proc.returncode != 0:
        raise RuntimeError(f"worker {label} exited with {proc.returncode}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_seconds"] = time.perf_counter() - started
    return out


# ====================================================================================== throwaway databases


def server_url(args) -> str:
    """A URL on the server to use: --database-url, else LEDGER_DATABASE_URL, else the embedded PostgreSQL."""
    from snapshot_pipeline import db
    from snapshot_pipeline.settings import load_settings

    if args.database_url:
        return args.database_url
    return db.ledger_url(load_settings())  # LEDGER_DATABASE_URL, or starts/reuses the embedded server


def create_database(admin_url: str, name: str) -> str:
    import psycopg
    from psycopg import sql

    from snapshot_pipeline import db

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return db.with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def seed(url: str, balances: int, transactions: int, days: int, seed_value: int, start: dt.date) -> dict:
    import psycopg

    from snapshot_pipeline.ledger import generator

    spec = generator.LedgerSpec(balances, transactions, days, seed_value, start)
    log(f"seeding {balances:,} balances, {transactions:,} transactions over {days} days from {start} ...")
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        summary = generator.generate(conn, spec, progress=sys.stderr.isatty())
        seeded = time.perf_counter()
        # The generator rewrites every live balance row (dead tuples, unset hint bits) and autovacuum
        # would then run during the measurements: settle the tables first, for every measurement alike.
        conn.execute("VACUUM (ANALYZE) blnk.ledgers, blnk.balances, blnk.transactions")
        conn.execute("CHECKPOINT")
        vacuum_seconds = time.perf_counter() - seeded
        counts = generator.ledger_counts(conn)
        sizes = conn.execute(
            "SELECT pg_total_relation_size('blnk.balances'), pg_total_relation_size('blnk.transactions')"
        ).fetchone()
    seconds = time.perf_counter() - started
    log(f"seeded in {seconds:.0f} s (VACUUM ANALYZE {vacuum_seconds:.0f} s of it): {counts[0]:,} balances,"
        f" {counts[1]:,} transaction rows")
    return {**summary, "balances": counts[0], "transaction_rows": counts[1], "seconds": seconds,
            "vacuum_seconds": vacuum_seconds,
            "balances_bytes": sizes[0], "transactions_bytes": sizes[1]}


@dataclasses.dataclass(frozen=True)
class Scratch:
    """One benchmark run's throwaway database (on the server of ``--database-url``) and work directory."""

    admin_url: str
    name: str
    url: str
    work: Path
    stem: str  # the run's timestamp, for result file names

    @classmethod
    def create(cls, args, prefix: str) -> Scratch:
        stem = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        admin_url = server_url(args)
        name = f"{prefix}_{stem.replace('-', '_')}_{os.getpid()}"
        work = Path(tempfile.mkdtemp(prefix=f"{prefix}_"))
        log(f"database {name}; work dir {work}")
        return cls(admin_url, name, create_database(admin_url, name), work, stem)

    def remove(self, keep: bool) -> None:
        """Drop the database and the work directory (``keep``: say where they are instead)."""
        if keep:
            log(f"--keep: database {self.name} and {self.work} left in place")
            return
        drop_database(self.admin_url, self.name)
        shutil.rmtree(self.work, ignore_errors=True)


def last_two_days(args) -> tuple[dt.date, dt.date]:
    """The seeded ledger's last day (the day measured) and the day before it (its base partition)."""
    last_day = args.start_date + dt.timedelta(days=args.days - 1)
    return last_day - dt.timedelta(days=1), last_day


def report_head(args, **extra) -> dict:
    """The start of a report: the arguments as given and the machine (cores, load average at the start)."""
    return {"args": {k: str(v) if isinstance(v, dt.date) else v for k, v in vars(args).items()},
            "machine": {"cpus": os.cpu_count(), "load_start": os.getloadavg()[0]}, **extra}


def add_server_arguments(parser: argparse.ArgumentParser, *, worker: bool = True) -> None:
    """``--database-url`` (the server the throwaway databases go on), ``--keep`` and the hidden ``--worker``."""
    parser.add_argument("--database-url", help="any database on the PostgreSQL server to use (default:"
                                               " LEDGER_DATABASE_URL's server, else the embedded PostgreSQL)")
    parser.add_argument("--keep", action="store_true", help="keep the bench database(s) and work dir(s)")
    if worker:
        parser.add_argument("--worker", help=argparse.SUPPRESS)


def dispatch(argv: list[str] | None, parse_args, worker_main, bench_main) -> int:
    """A benchmark's ``main``: the worker when started with ``--worker``, else the benchmark itself."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        return worker_main(args.worker)
    return bench_main(args)
