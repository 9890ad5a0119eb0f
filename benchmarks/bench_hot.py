"""``balance_at`` on busy ledgers over HTTP (issue 20 item 8), on Blnk's index set only (no ``ledger-indexes``).

One command seeds two throwaway ledgers and materializes their daily partitions:

* **busy**: the generator's ledger of ``--transactions`` (45,000) transactions over ``--days`` (10) days on
  ``--balances`` (1,500) balances; queries at random instants of random balances;
* **hot**: the same plus one omnibus balance with ``--hot-legs`` (10,000) legs a day on every day (5% holds,
  committed or voided hours later; 1% backdated, 1% future-dated); queries at random instants of its last day.

Then it serves each ledger with ``snapshot-pipeline serve`` (its default workers) and loads it with ``wrk``
(a C load generator: ``apt-get install wrk``; without it, the aiohttp closed loop of bench_query.py) for
``--seconds`` with 50 connections, and the hot balance also with one connection (its latency target), twice:
with the hot-balance cache (``snapshot_pipeline.query.hot``) and without it (``SNAPSHOT_HOT_BALANCES=0``:
the replay, the baseline). With every load it prints the load average before and after and the CPU per request
of the server's processes and of PostgreSQL (from ``/proc``): on a shared machine the CPU figures are the
stable ones. In process, it compares the hot balance's answers with the replay's at ``--check`` instants
(every tenth also with the from-genesis sum; the run fails on a difference). Targets are printed, never
asserted.

    python benchmarks/bench_hot.py                # ~4 minutes
    python benchmarks/bench_hot.py --seconds 5 --keep
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_query import RESULTS_DIR, _load, log, percentiles, start_service

from snapshot_pipeline import db, query, snapshot
from snapshot_pipeline.ledger import generator
from snapshot_pipeline.settings import load_settings
from snapshot_pipeline.store import index

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
HOT = "bln_hot_omnibus"
TARGET_BUSY_RPS, TARGET_BUSY_P99_MS, TARGET_HOT_P99_MS = 1000.0, 50.0, 10.0

# One omnibus USD balance with `legs` legs a day from `start` for `days` days, against the USD balances created
# before `start`: 5% holds (70% of them committed in half, 25% voided in half, 3 hours later), 1% backdated by
# up to two days, 1% future-dated by up to a day.
HOT_SQL = """
INSERT INTO blnk.balances (balance_id, balance, credit_balance, debit_balance, inflight_balance,
    inflight_credit_balance, inflight_debit_balance, currency, ledger_id, created_at, meta_data, version)
SELECT %(b)s, 0, 0, 0, 0, 0, 0, 'USD', ledger_id, %(start)s::timestamp - interval '30 days', '{}', 0
  FROM blnk.balances WHERE currency = 'USD' LIMIT 1;
CREATE TEMP TABLE hot_cp AS SELECT row_number() OVER (ORDER BY balance_id) AS k, balance_id FROM blnk.balances
 WHERE currency = 'USD' AND balance_id <> %(b)s AND created_at < %(start)s;
CREATE TEMP TABLE hot_legs AS
SELECT g, %(start)s::timestamp + (g * 86400.0 / %(legs)s::int) * interval '1 second'
          + random() * interval '1 second' AS ts,
       (SELECT balance_id FROM hot_cp WHERE k = 1 + (g * 7919) %% (SELECT count(*) FROM hot_cp)) AS other,
       random() AS r, random() AS r2
  FROM generate_series(0, %(legs)s::int * %(days)s::int - 1) g;
INSERT INTO blnk.transactions (transaction_id, source, destination, amount, precise_amount, precision, currency,
    status, created_at, effective_date)
SELECT 'txn_hot_' || g, CASE WHEN g %% 2 = 0 THEN %(b)s ELSE other END, CASE WHEN g %% 2 = 0 THEN other ELSE %(b)s END,
       (100 + g %% 997) / 100.0, 100 + g %% 997, 100, 'USD', CASE WHEN r < 0.05 THEN 'INFLIGHT' ELSE 'APPLIED' END, ts,
       CASE WHEN r2 < 0.01 THEN ts - (r2 * 200) * interval '1 day'
            WHEN r2 > 0.99 THEN ts + ((r2 - 0.99) * 100) * interval '1 day' END
  FROM hot_legs ORDER BY ts;
INSERT INTO blnk.transactions (transaction_id, parent_transaction, source, destination, amount, precise_amount,
    precision, currency, status, created_at)
SELECT 'txn_hotc_' || g, 'txn_hot_' || g, CASE WHEN g %% 2 = 0 THEN %(b)s ELSE other END,
       CASE WHEN g %% 2 = 0 THEN other ELSE %(b)s END, (100 + g %% 997) / 200.0, (100 + g %% 997) / 2, 100, 'USD',
       CASE WHEN r < 0.035 THEN 'APPLIED' ELSE 'VOID' END, ts + interval '3 hours'
  FROM hot_legs WHERE r < 0.05 AND (r < 0.035 OR r >= 0.0375) ORDER BY ts;
"""

WRK_SCRIPT = """
local paths = {}
for line in io.lines(os.getenv("PATHS_FILE")) do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
"""


def prepare(args, admin_url: str, name: str, hot: bool) -> dict:
    url = db.with_database(admin_url, name)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    store = Path(tempfile.gettempdir()) / f"{name}-store"
    shutil.rmtree(store, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "SNAPSHOT_"))}
    env.update({"LEDGER_DATABASE_URL": url, "SNAPSHOT_DATABASE_URL": url, "SNAPSHOT_STORAGE_URI": str(store),
                "SNAPSHOT_TIMEZONE": "UTC", "SNAPSHOT_START_DATE": args.start_date.isoformat(),
                "SNAPSHOT_HOME": str(store.parent)})
    log(f"seeding {name}: {args.balances:,} balances, {args.transactions:,} transactions, {args.days} days"
        + (f", + {HOT} with {args.hot_legs:,} legs a day" if hot else ""))
    with psycopg.connect(url, autocommit=True) as conn:
        generator.generate(conn, generator.LedgerSpec(args.balances, args.transactions, args.days, args.seed,
                                                      args.start_date), progress=False)
        if hot:
            params = {"b": HOT, "start": args.start_date, "legs": args.hot_legs, "days": args.days}
            for statement in filter(str.strip, HOT_SQL.split(";\n")):
                conn.execute(statement, params)
        conn.execute("VACUUM ANALYZE")
        facts = {"database": name, "transactions": conn.execute("SELECT count(*) FROM blnk.transactions").fetchone()[0],
                 "indexes": [r[0] for r in conn.execute(
                     "SELECT indexname FROM pg_indexes WHERE schemaname = 'blnk' AND tablename = 'transactions'")]}
        if hot:
            facts["hot_legs"] = conn.execute(
                "SELECT count(*) FROM blnk.transactions WHERE source = %(b)s OR destination = %(b)s",
                {"b": HOT}).fetchone()[0]
        index.migrate(conn)
    settings = load_settings(env)
    started = time.perf_counter()
    for i in range(args.days):
        snapshot.take_snapshot(settings, args.start_date + dt.timedelta(days=i), 10_000, log=lambda m: None)
    facts["snapshots_seconds"] = round(time.perf_counter() - started, 1)
    return {"env": env, "facts": facts, "settings": settings}


def paths_file(url: str, args, rng: random.Random, balance: str | None, out: Path) -> list[tuple[str, dt.datetime]]:
    """Random (balance, instant) pairs: any balance at any instant of the ledger's days (+1), or ``balance`` at
    any instant of the last day."""
    with psycopg.connect(url) as conn:
        ids = [r[0] for r in conn.execute("SELECT balance_id FROM blnk.balances ORDER BY id")]
    start = dt.datetime.combine(args.start_date, dt.time())
    last = start + dt.timedelta(days=args.days - 1)
    pairs = []
    for _ in range(args.paths):
        if balance:
            pairs.append((balance, last + dt.timedelta(microseconds=rng.randrange(86_400_000_000))))
        else:
            pairs.append((rng.choice(ids),
                          start + dt.timedelta(microseconds=rng.randrange((args.days + 1) * 86_400_000_000))))
    out.write_text("".join(f"/balances/{quote(b, safe='')}/at?timestamp={t.isoformat(timespec='microseconds')}Z\n"
                           for b, t in pairs))
    return pairs


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parents.setdefault(int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1]), []).append(
                int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [pid], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _backends(admin_url: str, name: str) -> list[int]:
    with psycopg.connect(admin_url) as conn:
        return [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,))]


def load(base: str, paths: Path, connections: int, seconds: float, server_pid: int, admin_url: str,
         name: str) -> dict:
    """wrk (or aiohttp) against ``base``; figures plus CPU per request of the server and of PostgreSQL."""
    lines = paths.read_text().split()
    load_before = os.getloadavg()
    py0, pg_pids = _cpu_seconds(_tree(server_pid)), _backends(admin_url, name)
    pg0 = _cpu_seconds(pg_pids)
    if shutil.which("wrk"):
        script = paths.with_suffix(".lua")
        script.write_text(WRK_SCRIPT)
        out = subprocess.run(
            ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-s",
             str(script), base], capture_output=True, text=True, env={**os.environ, "PATHS_FILE": str(paths)},
            check=True).stdout

        def ms(label: str) -> float:
            value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out).groups()  # type: ignore[union-attr]
            return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

        requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        result = {"tool": "wrk", "requests": requests,
                  "requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
                  "p50_ms": ms("50%"), "p90_ms": ms("90%"), "p99_ms": ms("99%"),
                  "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
                  "timeouts": int(m.group(1)) if (m := re.search(r"timeout (\d+)", out)) else 0}
    else:
        got = asyncio.run(_load(base, lines, connections, seconds, warmup=2.0))
        result = {"tool": "aiohttp (closed loop)", "requests": got["requests"],
                  "requests_per_second": got["requests_per_second"], "p50_ms": got["latency"]["p50_ms"],
                  "p90_ms": got["latency"]["p90_ms"], "p99_ms": got["latency"]["p99_ms"], "non_2xx": got["non_200"]}
    # backends the pools opened during the load count from their start
    py1, pg1 = _cpu_seconds(_tree(server_pid)), _cpu_seconds(sorted(set(pg_pids) | set(_backends(admin_url, name))))
    n = max(result["requests"], 1)
    result.update({"connections": connections, "seconds": seconds,
                   "server_cpu_ms_per_request": 1000 * (py1 - py0) / n,
                   "postgres_cpu_ms_per_request": 1000 * (pg1 - pg0) / n,
                   "loadavg_before": load_before, "loadavg_after": os.getloadavg()})
    log(f"  {connections:>2} connections: {result['requests_per_second']:,.0f} req/s, p50 {result['p50_ms']:.2f} ms,"
        f" p99 {result['p99_ms']:.2f} ms; CPU/request server {result['server_cpu_ms_per_request']:.2f} ms,"
        f" postgres {result['postgres_cpu_ms_per_request']:.2f} ms; load {load_before[0]:.1f} -> "
        f"{result['loadavg_after'][0]:.1f}")
    return result


def serve_and_load(ledger: dict, admin_url: str, paths: Path, plan: list[int], seconds: float,
                   cache: bool) -> list[dict]:
    env = dict(ledger["env"], **({} if cache else {"SNAPSHOT_HOT_BALANCES": "0"}))
    proc, base = start_service(env, None)
    try:
        lines = paths.read_text().split()
        log("  warm-up (not measured):")
        with httpx.Client(base_url=base, timeout=60) as client:
            for line in lines[:20]:
                client.get(line).raise_for_status()
        # every worker's pool, prepared statements and hot balances: a short unmeasured load on as many
        # connections as the largest measured one
        load(base, paths, max(plan), 3, proc.pid, admin_url, ledger["facts"]["database"])
        return [load(base, paths, connections, seconds, proc.pid, admin_url, ledger["facts"]["database"])
                for connections in plan]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def in_process(ledger: dict, pairs, check: int) -> dict:
    """The hot balance in process: latency with the cache (after its load) and without, and exactness."""
    settings = ledger["settings"]
    out: dict = {}
    with query.QueryEngine(settings) as fast, query.QueryEngine(settings) as slow:
        slow.hot.max_balances = 0
        fast.hot.after_replays = 1  # (the service loads on a balance's third heavy replay; here on the first)
        started = time.perf_counter()
        fast.balance_at(*pairs[0])
        out["first_answer_with_load_ms"] = 1000 * (time.perf_counter() - started)
        for label, engine in (("cached", fast), ("replay", slow)):
            samples = []
            for balance_id, at in pairs[: 2000 if label == "cached" else 200]:
                started = time.perf_counter()
                engine.balance_at(balance_id, at)
                samples.append(time.perf_counter() - started)
            out[label] = percentiles(samples)
        wrong = []
        for i, (balance_id, at) in enumerate(pairs[:check]):  # the replay; every tenth also from genesis
            a, r = fast.balance_at(balance_id, at), slow.balance_at(balance_id, at)
            if a != r or (i % 10 == 0 and a.amounts() != slow.balance_at(balance_id, at, from_source=True).amounts()):
                wrong.append(at.isoformat())
        out["checked_against_replay"], out["mismatches"] = check, wrong
        out["replayed_transactions_p50"] = sorted(
            fast.balance_at(b, t).replayed_transactions for b, t in pairs[:200])[100]
    log(f"  in process: cached p50 {out['cached']['p50_ms']:.3f} ms p99 {out['cached']['p99_ms']:.3f} ms;"
        f" replay p50 {out['replay']['p50_ms']:.1f} ms; first answer (load) {out['first_answer_with_load_ms']:.0f} ms;"
        f" {len(wrong)} mismatches in {check}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--balances", type=int, default=1500)
    parser.add_argument("--transactions", type=int, default=45_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--hot-legs", type=int, default=10_000, help="legs a day of the hot balance")
    parser.add_argument("--start-date", type=dt.date.fromisoformat, default=dt.date(2025, 1, 1))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--paths", type=int, default=20_000, help="distinct (balance, instant) requests")
    parser.add_argument("--seconds", type=float, default=20.0, help="each load")
    parser.add_argument("--check", type=int, default=100,
                        help="hot answers compared with the replay (every tenth also with the from-genesis sum)")
    parser.add_argument("--database-url", default=os.environ.get("LEDGER_DATABASE_URL") or DEFAULT_SERVER)
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    report: dict = {"args": vars(args) | {"start_date": args.start_date.isoformat()}, "cpus": os.cpu_count(),
                    "wrk": shutil.which("wrk")}
    work = Path(tempfile.mkdtemp(prefix="bench_hot_"))
    names = [f"bench_hot_busy_{stamp}", f"bench_hot_hot_{stamp}"]
    try:
        busy = prepare(args, args.database_url, names[0], hot=False)
        hot = prepare(args, args.database_url, names[1], hot=True)
        report["ledgers"] = {"busy": busy["facts"], "hot": hot["facts"]}
        busy_paths, hot_paths = work / "busy.txt", work / "hot.txt"
        paths_file(busy["env"]["LEDGER_DATABASE_URL"], args, rng, None, busy_paths)
        pairs = paths_file(hot["env"]["LEDGER_DATABASE_URL"], args, rng, HOT, hot_paths)

        log(f"hot balance in process ({hot['facts']['hot_legs']:,} legs)")
        report["hot_in_process"] = in_process(hot, pairs, args.check)
        for cache in (False, True):
            label = "cache" if cache else "replay (SNAPSHOT_HOT_BALANCES=0)"
            log(f"busy ledger over HTTP, {label}")
            report.setdefault("busy", {})[label] = serve_and_load(busy, args.database_url, busy_paths, [50],
                                                                  args.seconds, cache)
            log(f"hot balance over HTTP, {label}")
            report.setdefault("hot", {})[label] = serve_and_load(hot, args.database_url, hot_paths, [1, 50],
                                                                 args.seconds, cache)
    finally:
        if not args.keep:
            with psycopg.connect(args.database_url, autocommit=True) as conn:
                for name in names:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                    shutil.rmtree(Path(tempfile.gettempdir()) / f"{name}-store", ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    busy_new, busy_old = report["busy"]["cache"][0], report["busy"]["replay (SNAPSHOT_HOT_BALANCES=0)"][0]
    hot_new = report["hot"]["cache"]
    hot_old = report["hot"]["replay (SNAPSHOT_HOT_BALANCES=0)"]
    summary = {
        "busy_requests_per_second": busy_new["requests_per_second"], "busy_p50_ms": busy_new["p50_ms"],
        "busy_p99_ms": busy_new["p99_ms"],
        "busy_cpu_ms_per_request": busy_new["server_cpu_ms_per_request"] + busy_new["postgres_cpu_ms_per_request"],
        "hot_1_connection_p50_ms": hot_new[0]["p50_ms"], "hot_1_connection_p99_ms": hot_new[0]["p99_ms"],
        "hot_50_connections_requests_per_second": hot_new[1]["requests_per_second"],
        "hot_50_connections_p99_ms": hot_new[1]["p99_ms"],
        "hot_speedup_vs_replay_requests_per_second": hot_new[1]["requests_per_second"]
        / max(hot_old[1]["requests_per_second"], 1e-9),
        "hot_speedup_vs_replay_1_connection_p50": hot_old[0]["p50_ms"] / max(hot_new[0]["p50_ms"], 1e-9),
        "busy_ratio_vs_replay_requests_per_second": busy_new["requests_per_second"]
        / max(busy_old["requests_per_second"], 1e-9),
        "loadavg_during": [busy_new["loadavg_before"][0], hot_new[1]["loadavg_after"][0]],
        "targets (not asserted)": {
            f"busy >= {TARGET_BUSY_RPS:.0f} req/s": busy_new["requests_per_second"] >= TARGET_BUSY_RPS,
            f"busy p99 <= {TARGET_BUSY_P99_MS:.0f} ms": busy_new["p99_ms"] <= TARGET_BUSY_P99_MS,
            f"hot p99 <= {TARGET_HOT_P99_MS:.0f} ms (1 connection)": hot_new[0]["p99_ms"] <= TARGET_HOT_P99_MS,
        },
        "exact": not report["hot_in_process"]["mismatches"],
    }
    report["summary"] = summary
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"hot-{stamp}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(summary, indent=2))
    log(f"report: {out}")
    return 0 if summary["exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
