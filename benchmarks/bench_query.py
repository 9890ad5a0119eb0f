"""Benchmark of balance-at-time queries against baselines measured in the same run (DESIGN §6).

One command seeds a throwaway ledger (or reuses one with ``--reuse``), creates the read indexes
(``ledger-indexes``), materializes ``--days`` daily partitions, then measures on the same data:

(a) ``QueryEngine.balance_at`` in-process, for ``--queries`` random (balance, T) pairs;
(b) the same pairs over HTTP (``snapshot-pipeline serve`` on a loopback port, ``--http-workers``): one
    client in sequence, then ``--http-clients`` (50) concurrent keep-alive clients (aiohttp) for
    ``--http-seconds``, first paced at ``--http-rate`` (1000) requests/s in total, latency counted from
    each request's scheduled time, then closed loop (as fast as the service answers); the load
    average before each load is recorded, as the figures only mean something on an idle machine;
(c) baseline: a from-genesis replay (``balance_at(..., from_source=True)``), same pairs;
(d) baseline: a Blnk-style query (latest snapshot row of the balance, then every leg recorded after it
    fetched to the client and summed there), same pairs;
(e) the heavy balances (>= ``--heavy-legs`` legs): (a), (c) and (d) for ``--heavy-queries`` random T;
(f) ``balances_at`` for every balance at two instants of the last day (mid-day, and one hour after
    its start), ``--balances-at-repeats`` runs each.

Methods (a), (c) and (d) are timed on warm pages (after one untimed pass of each over the same pairs);
the first, cold pass of (a) is reported too.

Every answer of (a) is compared with (c): the run fails if one differs. Results are printed and
written as JSON to ``benchmarks/results/query-<timestamp>.json``. A missed target does not fail it.

    python benchmarks/bench_query.py                      # 1M balances, 10M transactions, 30 partitions
    python benchmarks/bench_query.py --balances 20000 --transactions 200000 --days 10 --queries 300
    python benchmarks/bench_query.py --reuse bench_query_... --days 10 --http-only   # (a) and (b) only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg
from _common import RESULTS_DIR, log
from psycopg import sql

from snapshot_pipeline import db, query, snapshot
from snapshot_pipeline.ledger import generator, indexes
from snapshot_pipeline.settings import load_settings

HERE = Path(__file__).resolve().parent
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
TARGET_P50_MS = 2.0
TARGET_P99_MS = 10.0
TARGET_HEAVY_RATIO = 100.0
TARGET_BALANCES_AT_S = 3.0
TARGET_HTTP_RPS = 1000.0
TARGET_HTTP_P99_MS = 50.0
LAG_LIMIT_SECONDS = 2.0  # a paced load stops this long after its end even if requests are still due


def percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(ordered), "p50_ms": pick(0.50) * 1000, "p90_ms": pick(0.90) * 1000,
            "p99_ms": pick(0.99) * 1000, "max_ms": ordered[-1] * 1000,
            "mean_ms": statistics.fmean(ordered) * 1000}


# ------------------------------------------------------------------------------------------------ setup


def prepare_ledger(args, admin_url: str) -> tuple[str, dict]:
    name = args.reuse or f"bench_query_{time.strftime('%Y%m%d_%H%M%S')}"
    url = db.with_database(admin_url, name)
    facts: dict = {"database": name}
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(url, autocommit=True) as conn:
        counts = generator.ledger_counts(conn)
        if counts and counts[1]:
            log(f"reusing ledger {name}: {counts[0]:,} balances, {counts[1]:,} transactions")
            facts["seed_seconds"] = None
        else:
            spec = generator.LedgerSpec(args.balances, args.transactions, args.days, args.seed, args.start_date)
            log(f"seeding {name}: {spec.balances:,} balances, {spec.transactions:,} transactions, {spec.days} days")
            started = time.perf_counter()
            generator.generate(conn, spec, progress=True)
            facts["seed_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        built = indexes.create_missing(conn, log=log)
        facts["ledger_indexes_built"] = built
        facts["ledger_indexes_seconds"] = time.perf_counter() - started
        if built:
            log("VACUUM ANALYZE blnk.transactions")
            conn.execute("VACUUM ANALYZE blnk.transactions")
        counts = generator.ledger_counts(conn)
        facts["balances"], facts["transactions"] = counts
        span = conn.execute(
            "SELECT min(created_at)::date, max(created_at)::date FROM blnk.transactions").fetchone()
        facts["journal_first_day"], facts["journal_last_day"] = span[0].isoformat(), span[1].isoformat()
    return url, facts


def materialize(settings, first: dt.date, last: dt.date, batch_size: int) -> dict:
    with db.connect(db.snapshot_url(settings), autocommit=True) as conn:
        from snapshot_pipeline.store import index

        index.migrate(conn)
        done = {e.snapshot_date for e in index.all_partitions(conn)}
    seconds = {}
    day = first
    while day <= last:
        if day not in done:
            started = time.perf_counter()
            result = snapshot.take_snapshot(settings, day, batch_size, log=lambda m: None)
            seconds[day.isoformat()] = round(time.perf_counter() - started, 2)
            log(f"partition {day}: {result.rows:,} rows, {result.balances_changed:,} changed, mode {result.mode},"
                f" {seconds[day.isoformat()]} s")
        day += dt.timedelta(days=1)
    return {"materialized": seconds, "partitions": (last - first).days + 1}


def sample_pairs(url: str, n: int, first: dt.date, last: dt.date, rng: random.Random) -> list[tuple[str, dt.datetime]]:
    with psycopg.connect(url) as conn:
        (count,) = conn.execute("SELECT max(id) FROM blnk.balances").fetchone()
        ids = rng.sample(range(1, count + 1), min(n, count))
        rows = conn.execute("SELECT balance_id FROM blnk.balances WHERE id = ANY(%s)", (ids,)).fetchall()
    balances = [r[0] for r in rows]
    start = dt.datetime.combine(first, dt.time())
    span = (dt.datetime.combine(last + dt.timedelta(days=2), dt.time()) - start).total_seconds()
    pairs = []
    for i in range(n):
        at = start + dt.timedelta(microseconds=int(rng.random() * span * 1e6) // 1000 * 1000)  # milliseconds
        pairs.append((balances[i % len(balances)], at))
    return pairs


def heavy_balances(url: str, min_legs: int) -> list[tuple[str, int]]:
    with psycopg.connect(url) as conn:
        return [(b, int(n)) for b, n in conn.execute(
            "SELECT b, count(*) FROM (SELECT source AS b FROM blnk.transactions"
            " UNION ALL SELECT destination FROM blnk.transactions) legs GROUP BY b HAVING count(*) >= %s"
            " ORDER BY 2 DESC LIMIT 20", (min_legs,))]


# -------------------------------------------------------------------------------------------- baselines


BLNK_SNAPSHOT_SQL = """
SELECT p.cutoff_at, r.credit_balance, r.debit_balance
FROM (SELECT snapshot_date, cutoff_at FROM snapshot_index.partitions WHERE cutoff_at <= %(t)s
      ORDER BY cutoff_at DESC LIMIT 1) p
LEFT JOIN LATERAL (SELECT credit_balance, debit_balance FROM snapshot_index.balance_snapshots
                   WHERE balance_id = %(b)s AND snapshot_date <= p.snapshot_date
                   ORDER BY snapshot_date DESC LIMIT 1) r ON true
"""
BLNK_LEGS_SQL = """
SELECT source, destination, precise_amount FROM blnk.transactions
WHERE (source = %(b)s OR destination = %(b)s) AND status = 'APPLIED'
  AND created_at > %(since)s AND created_at <= %(t)s
"""


def blnk_style(conn: psycopg.Connection, balance_id: str, at: dt.datetime) -> int:
    """Blnk's GetBalanceAtTime shape: latest snapshot row, then every later leg fetched and summed client-side."""
    row = conn.execute(BLNK_SNAPSHOT_SQL, {"t": at, "b": balance_id}).fetchone()
    since, credit, debit = (row if row and row[1] is not None else (dt.datetime(1, 1, 1), 0, 0))
    credit, debit = int(credit), int(debit)
    for source, destination, amount in conn.execute(BLNK_LEGS_SQL, {"b": balance_id, "since": since, "t": at}):
        if destination == balance_id:
            credit += int(amount)
        if source == balance_id:
            debit += int(amount)
    return credit - debit


def timed(fn, pairs) -> tuple[list[float], list]:
    samples, answers = [], []
    for balance_id, at in pairs:
        started = time.perf_counter()
        answers.append(fn(balance_id, at))
        samples.append(time.perf_counter() - started)
    return samples, answers


# ------------------------------------------------------------------------------------------------- HTTP


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(env: dict, workers: int | None) -> tuple[subprocess.Popen, str]:
    """``snapshot-pipeline serve`` on a free loopback port (``workers`` processes; None = its default)."""
    port = free_port()
    command = [sys.executable, "-m", "snapshot_pipeline.cli", "serve", "--port", str(port), "--log-level", "warning"]
    if workers:
        command += ["--workers", str(workers)]
    proc = subprocess.Popen(command, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/health", timeout=5).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.terminate()
            raise RuntimeError("the HTTP service did not start")
        time.sleep(0.2)


def _at_path(balance_id: str, at: dt.datetime) -> str:
    return f"/balances/{quote(balance_id, safe='')}/at?timestamp={at.isoformat()}Z"


async def _load(base: str, paths: list[str], clients: int, seconds: float, warmup: float,
                rate: float | None = None) -> dict:
    """``clients`` concurrent keep-alive clients (one connection each, aiohttp) for ``warmup + seconds``.

    ``rate=None``: closed loop, each client sends its next request as soon as the previous answer is
    read (the service's maximum throughput; latency is then clients / throughput by Little's law).
    ``rate=R``: paced, together R requests/s, each client on a fixed schedule of one request every
    ``clients / R`` s; latency is measured from the *scheduled* send time, so a service that falls
    behind is charged for the wait (no coordinated omission). Only requests scheduled after the
    warm-up are counted.
    """
    import asyncio

    import aiohttp

    loop_start = time.perf_counter()
    measure_from, stop_at = loop_start + warmup, loop_start + warmup + seconds
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    interval = clients / rate if rate else 0.0

    async def client(first: int) -> None:
        async with aiohttp.ClientSession(base_url=base, connector=aiohttp.TCPConnector(limit=1)) as session:
            k, due = first, loop_start + interval * first / clients
            while True:
                if rate:
                    wait = due - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    started = due
                    due += interval
                else:
                    started = time.perf_counter()
                if started >= stop_at or time.perf_counter() > stop_at + LAG_LIMIT_SECONDS:
                    return  # (paced: a service this far behind has failed the rate; stop rather than drain)
                async with session.get(paths[k % len(paths)]) as response:
                    await response.read()
                    status = response.status
                k += clients
                if started >= measure_from:
                    latencies.append(time.perf_counter() - started)
                    statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    ok = statuses.get(200, 0)
    # Requests started (closed loop) or scheduled (paced) within the measured window, answered.
    return {"clients": clients, "paced_rate": rate, "seconds": seconds, "warmup_seconds": warmup,
            "requests": len(latencies), "requests_per_second": len(latencies) / seconds,
            "non_200": len(latencies) - ok, "statuses": {str(k): v for k, v in statuses.items()},
            "latency": percentiles(latencies) if latencies else None}


def measure_http(env: dict, pairs, concurrency: int, seconds: float = 30.0, workers: int | None = None,
                 rate: float = 1000.0) -> dict:
    """(b): one client in sequence over ``pairs`` (answers checked), then ``concurrency`` clients for
    ``seconds`` twice: paced at ``rate`` requests/s in total (the target's load), then closed loop.

    The load average (``os.getloadavg``) is recorded just before the load starts: the figure means
    something only on an otherwise idle machine, and the report says how idle it was.
    """
    import asyncio

    proc, base = start_service(env, workers)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for balance_id, at in pairs[:50]:  # warm the pools
                client.get(_at_path(balance_id, at))

            def one(balance_id, at):
                response = client.get(_at_path(balance_id, at))
                response.raise_for_status()
                return response.json()["balance"]["balance"]

            samples, answers = timed(one, pairs)
        paths = [_at_path(b, t) for b, t in pairs]
        load_before = os.getloadavg()
        paced = asyncio.run(_load(base, paths, concurrency, seconds, warmup=3.0, rate=rate))
        load_between = os.getloadavg()
        closed = asyncio.run(_load(base, paths, concurrency, seconds, warmup=3.0))
        load_after = os.getloadavg()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"latency": percentiles(samples), "answers": answers, "workers": workers or "default",
            "concurrent": paced, "closed_loop": closed, "loadavg_before_load": load_before,
            "loadavg_before_closed_loop": load_between, "loadavg_after_load": load_after,
            "concurrent_clients": concurrency, "concurrent_failures": paced["non_200"] + closed["non_200"],
            "concurrent_requests_per_second": paced["requests_per_second"]}


# ------------------------------------------------------------------------------------------------- main


def http_summary(http: dict) -> dict:
    """The concurrent-load figures of (b) for the summary."""
    loaded, closed = http["concurrent"], http["closed_loop"]
    return {"http_workers": http["workers"], "http_clients": loaded["clients"],
            "http_paced_rate": loaded["paced_rate"],
            "http_paced_requests_per_second": loaded["requests_per_second"],
            "http_paced_p50_ms": loaded["latency"]["p50_ms"], "http_paced_p99_ms": loaded["latency"]["p99_ms"],
            "http_closed_loop_requests_per_second": closed["requests_per_second"],
            "http_closed_loop_p50_ms": closed["latency"]["p50_ms"],
            "http_closed_loop_p99_ms": closed["latency"]["p99_ms"],
            "http_load_non_200": loaded["non_200"] + closed["non_200"],
            "loadavg_before_http_load": http["loadavg_before_load"]}


def http_targets(http: dict) -> dict:
    loaded = http["concurrent"]
    return {"http_ge_1000_rps": loaded["requests_per_second"] >= TARGET_HTTP_RPS * 0.99,
            "http_p99_le_50ms": loaded["latency"]["p99_ms"] <= TARGET_HTTP_P99_MS}


def http_only(args, env: dict, engine, pairs, report: dict) -> int:
    """``--http-only``: (a) in-process (warm) and (b) HTTP on the same pairs, answers compared."""
    timed(lambda b, t: engine.balance_at(b, t), pairs)  # warm pages
    log(f"(a) in-process balance_at, {len(pairs)} queries, warm")
    ours_s, ours = timed(lambda b, t: engine.balance_at(b, t), pairs)
    engine.close()
    log(f"(b) HTTP, {len(pairs)} queries, then {args.http_clients} concurrent clients for {args.http_seconds} s")
    http = measure_http(env, pairs, args.http_clients, args.http_seconds, args.http_workers, args.http_rate)
    http_wrong = sum(a != o.balance for a, o in zip(http.pop("answers"), ours, strict=False))
    report["balance_at"] = {"ours_in_process": percentiles(ours_s)}
    report["http"] = http | {"mismatches_vs_in_process": http_wrong}
    summary = {"in_process_p50_ms": report["balance_at"]["ours_in_process"]["p50_ms"],
               "in_process_p99_ms": report["balance_at"]["ours_in_process"]["p99_ms"],
               "in_process_queries_per_second_one_thread": len(ours_s) / sum(ours_s),
               "http_p50_ms": http["latency"]["p50_ms"], "http_p99_ms": http["latency"]["p99_ms"],
               **http_summary(http), "targets_met": http_targets(http), "exact": http_wrong == 0}
    report["summary"] = summary
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"query-http-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(summary, indent=2))
    log(f"report: {out}")
    return 0 if summary["exact"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--balances", type=int, default=1_000_000)
    parser.add_argument("--transactions", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30, help="days of journal = daily partitions")
    parser.add_argument("--start-date", type=dt.date.fromisoformat, default=dt.date(2025, 1, 1))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--heavy-legs", type=int, default=10_000)
    parser.add_argument("--heavy-queries", type=int, default=200)
    parser.add_argument("--balances-at-repeats", type=int, default=3)
    parser.add_argument("--http-clients", type=int, default=50)
    parser.add_argument("--http-seconds", type=float, default=30.0, help="duration of the concurrent HTTP load")
    parser.add_argument("--http-workers", type=int, help="serve --workers (default: serve's own default)")
    parser.add_argument("--http-rate", type=float, default=TARGET_HTTP_RPS,
                        help="total requests/s of the paced load (default 1000, the target)")
    parser.add_argument("--http-only", action="store_true",
                        help="only (a) in-process and (b) HTTP on the same pairs (skips baselines, heavy, balances_at)")
    parser.add_argument("--batch-size", type=int, default=10_000, help="snapshot batch size")
    parser.add_argument("--database-url", default=os.environ.get("LEDGER_DATABASE_URL") or DEFAULT_SERVER,
                        help="admin URL of the PostgreSQL server to create the ledger on")
    parser.add_argument("--reuse", help="name of a database seeded by an earlier run (skips seeding)")
    parser.add_argument("--keep", action="store_true", help="keep the database and store afterwards")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    report: dict = {"started_at": dt.datetime.now(dt.UTC).isoformat(), "args": vars(args) | {
        "start_date": args.start_date.isoformat()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}

    url, facts = prepare_ledger(args, args.database_url)
    report["ledger"] = facts
    store_dir = Path(tempfile.gettempdir()) / f"{facts['database']}-store"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "SNAPSHOT_"))}
    env.update({"LEDGER_DATABASE_URL": url, "SNAPSHOT_DATABASE_URL": url, "SNAPSHOT_STORAGE_URI": str(store_dir),
                "SNAPSHOT_TIMEZONE": "UTC", "SNAPSHOT_START_DATE": args.start_date.isoformat(),
                "SNAPSHOT_HOME": str(store_dir.parent)})
    settings = load_settings(env)
    first = dt.date.fromisoformat(facts["journal_first_day"])
    last = first + dt.timedelta(days=args.days - 1)
    report["snapshots"] = materialize(settings, first, last, args.batch_size)

    pairs = sample_pairs(url, args.queries, first, last, rng)
    engine = query.QueryEngine(settings, max_connections=2)
    for balance_id, at in pairs[:50]:  # warm connections and prepared statements
        engine.balance_at(balance_id, at)
        engine.balance_at(balance_id, at, from_source=True)
    if args.http_only:
        return http_only(args, env, engine, pairs, report)

    blnk_conn = psycopg.connect(url, autocommit=True)
    log(f"(a) in-process balance_at, {len(pairs)} queries, first touch (cold pages)")
    cold_s, _ = timed(lambda b, t: engine.balance_at(b, t), pairs)
    log("warm-up pass of (c) and (d) on the same pairs, so every method is measured on warm pages")
    timed(lambda b, t: engine.balance_at(b, t, from_source=True), pairs)
    timed(lambda b, t: blnk_style(blnk_conn, b, t), pairs)
    log("(a) in-process balance_at, warm")
    ours_s, ours = timed(lambda b, t: engine.balance_at(b, t), pairs)
    log("(c) from-genesis replay")
    genesis_s, genesis = timed(lambda b, t: engine.balance_at(b, t, from_source=True), pairs)
    wrong = [(a.balance_id, a.at.isoformat()) for a, g in zip(ours, genesis, strict=False)
             if a.amounts() != g.amounts()]
    log("(d) Blnk-style")
    blnk_s, _ = timed(lambda b, t: blnk_style(blnk_conn, b, t), pairs)
    report["balance_at"] = {
        "ours_in_process": percentiles(ours_s),
        "ours_in_process_first_touch": percentiles(cold_s),
        "from_genesis": percentiles(genesis_s),
        "blnk_style": percentiles(blnk_s),
        "mismatches_vs_genesis": wrong[:20],
        "replayed_transactions_p50": statistics.median(a.replayed_transactions for a in ours),
        "anchored_share": sum(a.anchor is not None for a in ours) / len(ours),
    }

    heavy = heavy_balances(url, args.heavy_legs)
    report["heavy"] = {"balances": heavy}
    if heavy:
        heavy_pairs = [(heavy[i % len(heavy)][0], at) for i, (_, at) in enumerate(
            sample_pairs(url, args.heavy_queries, first, last, rng))]
        log(f"(e) heavy balances ({len(heavy)} with >= {args.heavy_legs:,} legs), {len(heavy_pairs)} queries")
        h_ours_s, h_ours = timed(lambda b, t: engine.balance_at(b, t), heavy_pairs)
        h_gen_s, h_gen = timed(lambda b, t: engine.balance_at(b, t, from_source=True), heavy_pairs)
        h_blnk_s, _ = timed(lambda b, t: blnk_style(blnk_conn, b, t), heavy_pairs)
        ratios = sorted(g / o for g, o in zip(h_gen_s, h_ours_s, strict=False))
        recent = dt.datetime.combine(last - dt.timedelta(days=6), dt.time())
        recent_ratios = sorted(g / o for g, o, (_, at) in zip(h_gen_s, h_ours_s, heavy_pairs, strict=False)
                               if at >= recent)
        report["heavy"].update({
            "ours_in_process": percentiles(h_ours_s), "from_genesis": percentiles(h_gen_s),
            "blnk_style": percentiles(h_blnk_s),
            "speedup_vs_genesis_p50_over_p50": statistics.median(h_gen_s) / statistics.median(h_ours_s),
            "speedup_vs_genesis_median_per_query": ratios[len(ratios) // 2],
            "speedup_vs_genesis_total_time": sum(h_gen_s) / sum(h_ours_s),
            "speedup_vs_genesis_median_per_query_last_7_days": (
                recent_ratios[len(recent_ratios) // 2] if recent_ratios else None),
            "replayed_transactions_p50": statistics.median(a.replayed_transactions for a in h_ours),
            "genesis_transactions_p50": statistics.median(a.replayed_transactions for a in h_gen),
            "mismatches_vs_genesis": [(a.balance_id, a.at.isoformat()) for a, g in zip(h_ours, h_gen, strict=False)
                                      if a.amounts() != g.amounts()][:20],
        })
        wrong += report["heavy"]["mismatches_vs_genesis"]

    blnk_conn.close()
    log("(f) balances_at for every balance")
    report["balances_at"] = {}
    for label, at_all in (("mid_day", dt.datetime.combine(last, dt.time(15, 30, 0, 250000))),
                          ("one_hour_after_cutoff", dt.datetime.combine(last, dt.time(1, 0)))):
        runs = []
        for _ in range(args.balances_at_repeats):
            started = time.perf_counter()
            table = engine.balances_at(at_all)
            runs.append(time.perf_counter() - started)
        counted = engine.balances_at(at_all, count_replayed=True).schema.metadata
        report["balances_at"][label] = {
            "at": at_all.isoformat() + "Z", "rows": table.num_rows, "seconds": runs, "best_seconds": min(runs),
            "replayed_balances": int(counted[b"snapshot_pipeline.replayed_balances"]),
            "replayed_transactions": int(counted[b"snapshot_pipeline.replayed_transactions"])}
    engine.close()

    log(f"(b) HTTP, {len(pairs)} queries, then {args.http_clients} concurrent clients")
    http = measure_http(env, pairs, args.http_clients, args.http_seconds, args.http_workers, args.http_rate)
    http_wrong = sum(a != o.balance for a, o in zip(http.pop("answers"), ours, strict=False))
    report["http"] = http | {"mismatches_vs_in_process": http_wrong}

    b = report["balance_at"]
    summary = {
        "in_process_p50_ms": b["ours_in_process"]["p50_ms"], "in_process_p99_ms": b["ours_in_process"]["p99_ms"],
        "http_p50_ms": http["latency"]["p50_ms"], "http_p99_ms": http["latency"]["p99_ms"],
        **http_summary(http),
        "genesis_p50_ms": b["from_genesis"]["p50_ms"], "blnk_style_p50_ms": b["blnk_style"]["p50_ms"],
        "heavy_speedup_vs_genesis": report["heavy"].get("speedup_vs_genesis_p50_over_p50"),
        "balances_at_seconds_mid_day": report["balances_at"]["mid_day"]["best_seconds"],
        "balances_at_seconds_one_hour_after_cutoff": report["balances_at"]["one_hour_after_cutoff"]["best_seconds"],
        "targets_met": {
            "p50_le_2ms": b["ours_in_process"]["p50_ms"] <= TARGET_P50_MS,
            "p99_le_10ms": b["ours_in_process"]["p99_ms"] <= TARGET_P99_MS,
            "heavy_ge_100x": (report["heavy"].get("speedup_vs_genesis_p50_over_p50") or 0) >= TARGET_HEAVY_RATIO,
            "balances_at_lt_3s_mid_day": report["balances_at"]["mid_day"]["best_seconds"] < TARGET_BALANCES_AT_S,
            **http_targets(http),
        },
        "exact": not wrong and http_wrong == 0,
    }
    report["summary"] = summary
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"query-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(summary, indent=2))
    log(f"report: {out}")
    if not args.keep and not args.reuse:
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(facts["database"])))
        shutil.rmtree(store_dir, ignore_errors=True)
    return 0 if summary["exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
