"""Benchmark of the four reports on a seeded ledger, against a baseline measured in the same run.

One command seeds a throwaway ledger, snapshots its last two days (the first from genesis, the
second incrementally) and then measures, each in its own fresh interpreter, its duration and its
peak RSS (``VmHWM`` of ``/proc/self/status``: unlike ``ru_maxrss``, which Linux carries over from the
parent through fork and exec, it is the worker's own):

(a) baseline: ``pyarrow.parquet.read_table`` of the day's whole snapshot file (every column in memory);
(b) ``balance_movements``, (c) ``ledger_currency_totals``, (d) ``month_end_balances`` (Parquet + CSV of
    the day, used as a month end: the benchmark calls the report on the day's snapshot),
(e) ``reconciliation_report`` (every live balance against snapshot + later legs).

Results are printed as a table and written as JSON to ``benchmarks/results/reports-<timestamp>.json``.

    python benchmarks/bench_reports.py                                   # 1M balances, 5M transactions
    python benchmarks/bench_reports.py --balances 20000 --transactions 100000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import RESULTS_DIR, log

HERE = Path(__file__).resolve().parent
REPORTS = ("baseline_read_table", "balance_movements", "ledger_currency_totals", "month_end_balances",
           "reconciliation_report")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker_main(spec_json: str) -> int:
    """One measurement in a fresh interpreter; JSON on the last stdout line."""
    spec = json.loads(spec_json)

    from snapshot_pipeline.reports import month_end, movements, reconciliation, totals
    from snapshot_pipeline.settings import load_settings
    from snapshot_pipeline.store import catalog

    settings = load_settings(spec["env"])
    day = dt.date.fromisoformat(spec["day"])
    rss_start = _status_kb("VmRSS")  # after the imports
    started = time.perf_counter()
    name = spec["report"]
    if name == "baseline_read_table":
        rows = catalog.read_partition(settings, day).num_rows
    elif name == "balance_movements":
        rows = movements.balance_movements(settings, day).rows
    elif name == "ledger_currency_totals":
        rows = totals.ledger_currency_totals(settings, day).metrics["balances"]
    elif name == "month_end_balances":
        # the month-end report of a month whose last day is `day`: make `day` such a day
        rows = month_end.month_end_balances(settings, day).rows
    else:
        rows = reconciliation.reconciliation_report(settings, day).metrics["balances_checked"]
    seconds = time.perf_counter() - started
    peak = _status_kb("VmHWM")
    print(json.dumps({"report": name, "seconds": round(seconds, 3), "balances": rows,
                      "balances_per_second": round(rows / seconds), "peak_rss_mb": round(peak / 1024, 1),
                      "rss_growth_mb": round((peak - rss_start) / 1024, 1)}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--balances", type=int, default=1_000_000)
    parser.add_argument("--transactions", type=int, default=5_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--database-url", default=os.environ.get("SNAPSHOT_TEST_DATABASE_URL")
                        or "postgresql://postgres@127.0.0.1:5432/test",
                        help="an admin URL of the PostgreSQL server (a throwaway database is created there)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args.worker)

    import psycopg
    from psycopg import sql

    from snapshot_pipeline import db, snapshot
    from snapshot_pipeline.ledger import generator
    from snapshot_pipeline.settings import load_settings

    name = f"bench_reports_{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="bench-reports-"))
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = db.with_database(args.database_url, name)
    # The period ends on the last day of a month, so that day's snapshot is also a month end.
    last = dt.date(2025, 1, 31)
    start = last - dt.timedelta(days=args.days - 1)
    env = {"LEDGER_DATABASE_URL": url, "SNAPSHOT_STORAGE_URI": str(work / "store"), "SNAPSHOT_TIMEZONE": "UTC",
           "SNAPSHOT_START_DATE": start.isoformat(), "SNAPSHOT_HOME": str(work)}
    results = []
    try:
        log(f"seeding {args.balances:,} balances, {args.transactions:,} transactions over {args.days} days")
        with psycopg.connect(url, autocommit=True) as conn:
            generator.generate(conn, generator.LedgerSpec(args.balances, args.transactions, args.days, args.seed,
                                                          start), progress=False)
        settings = load_settings(env)
        for day in (last - dt.timedelta(days=1), last):
            result = snapshot.take_snapshot(settings, day, 10_000)
            log(f"snapshot {day}: {result.rows:,} rows, {result.mode}, {result.duration_ms:,} ms")
        for report in REPORTS:
            spec = json.dumps({"report": report, "day": last.isoformat(), "env": env})
            proc = subprocess.run([sys.executable, __file__, "--worker", spec], capture_output=True, text=True,
                                  check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"{report} failed:\n{proc.stderr[-3000:]}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            log(f"{report}: {results[-1]}")
    finally:
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        shutil.rmtree(work, ignore_errors=True)
    baseline = results[0]["seconds"]
    print(f"{'report':<26}{'seconds':>10}{'x read_table':>14}{'balances/s':>14}{'peak RSS MB':>13}")
    for r in results:
        print(f"{r['report']:<26}{r['seconds']:>10.2f}{r['seconds'] / baseline:>14.1f}"
              f"{r['balances_per_second']:>14,}{r['peak_rss_mb']:>13,.0f}")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"reports-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"balances": args.balances, "transactions": args.transactions, "days": args.days,
                               "results": results}, indent=2))
    log(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
