"""What the automation costs: repair-sensor scans, each asset check, retention (one command, one throwaway ledger).

Seeds a ledger with the project's generator, publishes a run of consecutive daily partitions,
then measures on that ledger:

* ``lateness.scan``: the first scan (no cursor: from the oldest watermark), an unchanged journal
  (the steady state between ticks), after N ordinary new rows, and after a few backdated rows
  (which it must find);
* every asset check (``snapshot_pipeline.quality``) on the newest partition;
* retention: the dry-run plan, then applying a policy that removes all but the last two days.

Prints a table and writes JSON to ``benchmarks/results/automation-<timestamp>.json``.

    python benchmarks/bench_automation.py --database-url postgresql://postgres@127.0.0.1:5432/test
    python benchmarks/bench_automation.py --balances 20000 --transactions 200000   # quick
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, create_database, drop_database, log, seed, server_url

START = dt.date(2026, 9, 1)


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return value, round((time.perf_counter() - started) * 1000, 1)


def insert_rows(url: str, count: int, effective: dt.datetime | None) -> None:
    """``count`` APPLIED rows between two existing balances, recorded now, dated ``effective`` (None: now)."""
    import psycopg

    with psycopg.connect(url) as conn:
        source, destination = [r[0] for r in conn.execute(
            "SELECT balance_id FROM blnk.balances WHERE currency = 'USD' ORDER BY id LIMIT 2")]
        conn.execute(
            "INSERT INTO blnk.transactions (transaction_id, source, destination, amount, precise_amount, precision,"
            " currency, status, created_at, effective_date)"
            " SELECT 'bench_' || %s || '_' || g, %s, %s, 1, 100, 100, 'USD', 'APPLIED',"
            " (now() AT TIME ZONE 'UTC'), %s FROM generate_series(1, %s) g",
            (uuid.uuid4().hex, source, destination, effective, count))
        # keep the live rows the way Blnk does (every APPLIED leg counts at once), so live_drift stays honest
        conn.execute("UPDATE blnk.balances SET credit_balance = credit_balance + 100 * %s,"
                     " balance = balance + 100 * %s WHERE balance_id = %s", (count, count, destination))
        conn.execute("UPDATE blnk.balances SET debit_balance = debit_balance + 100 * %s,"
                     " balance = balance - 100 * %s WHERE balance_id = %s", (count, count, source))


def settle(url: str, snapshot_text: str) -> None:
    """Wait until the ledger transactions in flight at ``snapshot_text`` have finished (normally at once)."""
    import psycopg

    from snapshot_pipeline.quality import lateness

    with psycopg.connect(url, autocommit=True) as conn:
        while not lateness.finished(snapshot_text, *lateness.activity(conn.cursor())[2:]):
            time.sleep(0.1)


def run(args) -> dict:
    from snapshot_pipeline import calendar, quality, snapshot
    from snapshot_pipeline.quality import lateness
    from snapshot_pipeline.settings import load_settings
    from snapshot_pipeline.store.retention import Policy, apply_retention

    admin = server_url(args)
    name = f"bench_automation_{time.strftime('%Y%m%d_%H%M%S')}"
    url = create_database(admin, name)
    storage = Path(tempfile.mkdtemp(prefix="bench-automation-"))
    out: dict = {"python": platform.python_version(), "machine": platform.machine(), "partitions": args.partitions}
    try:
        out["ledger"] = seed(url, args.balances, args.transactions, args.days, 42, START)
        settings = load_settings({"LEDGER_DATABASE_URL": url, "SNAPSHOT_STORAGE_URI": str(storage),
                                  "SNAPSHOT_START_DATE": START.isoformat(), "SNAPSHOT_HOME": str(storage)})
        last = START + dt.timedelta(days=args.days - 1)
        dates = calendar.days(last - dt.timedelta(days=args.partitions - 1), last)
        for date in dates:
            result, ms = timed(snapshot.take_snapshot, settings, date, 10_000)
            log(f"published {date}: {result.rows:,} rows, {result.balances_changed:,} changed, {ms:,.0f} ms")
        scans = {}
        first, scans["first_scan_ms"] = timed(lateness.scan, settings, lateness.ScanState())
        settle(url, first.state.snapshot)
        settled, _ = timed(lateness.scan, settings, first.state)
        settle(url, settled.state.snapshot)
        quiet, scans["unchanged_scan_ms"] = timed(lateness.scan, settings, settled.state)
        scans["unchanged_examined"] = quiet.examined
        insert_rows(url, args.new_rows, None)
        moved, scans["new_rows_scan_ms"] = timed(lateness.scan, settings, quiet.state)
        scans["new_rows"] = args.new_rows
        scans["new_rows_requests"] = len(moved.new_requests)
        insert_rows(url, 10, dt.datetime.combine(dates[1], dt.time(12)))
        late, scans["backdated_scan_ms"] = timed(lateness.scan, settings, moved.state)
        scans["backdated_requests"] = [f.date.isoformat() for f in late.new_requests]
        scans["cursor_bytes"] = len(late.state.to_json())
        out["repair"] = scans
        log(f"repair scans: {scans}")
        newest = dates[-1]
        snapshot.take_snapshot(settings, newest, 10_000)  # current again after the inserted rows
        checks = {}
        for name_, function, kwargs in [
            ("integrity (row count + identity + double entry, one pass)", quality.integrity, {}),
            ("parquet_matches_manifest", quality.parquet_matches_manifest, {}),
            ("parquet_matches_index (audit job)", quality.parquet_matches_index, {}),
            ("sampled_recomputation_k20", quality.sampled_recomputation, {"sample_size": 20, "seed": 1}),
            ("live_drift", quality.live_drift, {}),
        ]:
            outcome, ms = timed(function, settings, newest, **kwargs)
            outcomes = outcome.values() if isinstance(outcome, dict) else [outcome]  # integrity: one per check
            passed = all(o.passed for o in outcomes)
            checks[name_] = {"ms": ms, "passed": passed}
            log(f"check {name_}: {ms:,.0f} ms passed={passed}")
        out["checks"] = checks
        policy = Policy(2, 0)
        plan, dry_ms = timed(apply_retention, settings, reference=newest, dry_run=True, policy=policy)
        report, apply_ms = timed(apply_retention, settings, reference=newest, policy=policy)
        out["retention"] = {"dry_run_ms": dry_ms, "apply_ms": apply_ms, "removed": len(report["partitions_removed"]),
                            "index_rows_deleted": report["index_rows_deleted"], "bytes_freed": report["bytes_freed"],
                            "anchor_rows": [a["index_rows"] for a in report["anchors_rewritten"]]}
        log(f"retention: {out['retention']}")
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        if not args.keep:
            drop_database(admin, name)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--balances", type=int, default=200_000)
    p.add_argument("--transactions", type=int, default=2_000_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--partitions", type=int, default=5, help="consecutive daily partitions to publish")
    p.add_argument("--new-rows", type=int, default=10_000, help="ordinary rows added before the incremental scan")
    p.add_argument("--database-url", help="any database on the PostgreSQL server to use (default: the embedded one)")
    p.add_argument("--keep", action="store_true", help="keep the throwaway database")
    args = p.parse_args(argv)
    result = run(args)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"automation-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))
    log(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
