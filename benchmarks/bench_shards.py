"""Benchmark of a sharded day, K = 1 vs K = 2, plan included, ratios measured in the same run (issue 20).

On one generated ledger (default 300,000 balances, 1,500,000 transactions over 30 days), day ``D - 1`` is
published once (genesis); then day ``D`` is rolled forward again and again on that base, alternating
K = 1 and K = 2 (``--repeats`` times each), on the path the Dagster job's steps take, without Dagster:

1. ``shards.plan`` — the one REPEATABLE READ view stages the step; the K per-shard deltas are computed in
   K sessions sharing its exported snapshot (K = 1: in the view's own session);
2. ``shards.merge_shard`` for every k, in K spawned processes at once (started and imported before the
   clock starts);
3. ``shards.commit_shards``.

It also times the unsharded ``take_snapshot`` (one process, delta streamed into the merge) as a reference,
and checks that every run wrote the same partition (``Table.equals``). Figures are medians over the
repeats; the ratios compare runs of this one invocation. The 1-minute load average is reported at the
start and at the end: other work on the machine skews the figures.

    python benchmarks/bench_shards.py --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _common import RESULTS_DIR, create_database, drop_database, last_two_days, log, report_head, seed, server_url

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _phase(run: dict, name: str) -> float | None:
    value = run.get("phases_ms", {}).get(name)
    return value / 1000 if value is not None else None


def summarize(runs: list[dict]) -> dict:
    return {
        "whole_day_seconds": _median([r["seconds"] for r in runs]),
        "plan_seconds": _median([r.get("plan_seconds") for r in runs]),
        "plan_journal_seconds": _median([_phase(r, "journal_ms") for r in runs]),
        "plan_delta_seconds": _median([_phase(r, "delta_ms") for r in runs]),
        "merge_wall_seconds": _median([r.get("merge_wall_seconds") for r in runs]),
        "commit_seconds": _median([r.get("commit_seconds") for r in runs]),
        "all_seconds": [round(r["seconds"], 3) for r in runs],
        "rows": runs[0]["rows"], "balances_changed": runs[0]["balances_changed"],
        "journal_rows": runs[0]["journal_rows"],
        "shard_rows": [c["rows"] for c in runs[0].get("shard_runs", [])],
        "peak_rss_mb": max((c["peak_rss_mb"] for r in runs for c in r.get("shard_runs", [])), default=None),
    }


def fmt(value, unit: str = " s") -> str:
    return "n/a" if value is None else f"{value:.2f}{unit}"


def render(report: dict) -> str:
    k1, k2, take = report["k1"], report["k2"], report["take"]
    lines = [
        f"ledger: {report['ledger'].get('balances', '?'):,} balances, {report['ledger'].get('transaction_rows', '?'):,}"
        f" journal rows; day {report['day']} rolled forward from {report['base_day']}:"
        f" {k1['journal_rows']:,} journal rows, {k1['balances_changed']:,} changed balances, {k1['rows']:,} rows",
        f"machine: {report['machine']['cpus']} cpus; load average (1 min) {report['machine']['load_start']:.2f}"
        f" at the start, {report['machine']['load_end']:.2f} at the end; medians of {report['repeats']} runs each",
        "",
        f"{'':44}{'K = 1':>10}{'K = 2':>10}{'K1 / K2':>10}",
    ]
    for label, key in (("plan (view, staging, delta, state)", "plan_seconds"),
                       ("  of which staging (one session)", "plan_journal_seconds"),
                       ("  of which delta (K sessions) + state", "plan_delta_seconds"),
                       ("merge (K processes, wall)", "merge_wall_seconds"),
                       ("commit", "commit_seconds"),
                       ("the whole day", "whole_day_seconds")):
        a, b = k1[key], k2[key]
        r = f"{a / b:.2f}x" if a and b else "n/a"
        lines.append(f"  {label:42}{fmt(a):>10}{fmt(b):>10}{r:>10}")
    lines += [
        "",
        f"  whole day, every run (s): K = 1 {k1['all_seconds']}, K = 2 {k2['all_seconds']}",
        f"  K = 2 shard rows: {k2['shard_rows']}; peak RSS of a shard process: {fmt(k2['peak_rss_mb'], ' MB')}",
        f"  reference, unsharded take_snapshot (one process): {fmt(take['whole_day_seconds'])}"
        f" (whole day K = 2 is {take['whole_day_seconds'] / k2['whole_day_seconds']:.2f}x faster)",
        f"  every run wrote the same partition: {'yes' if report['exact'] else 'NO'}",
        "",
        f"SPEEDUP whole day K=2 vs K=1 (plan included): {k1['whole_day_seconds'] / k2['whole_day_seconds']:.2f}x",
    ]
    return "\n".join(lines)


def bench_main(args) -> int:
    import bench_storage as bst
    import pyarrow.feather as feather

    stem = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="bench_shards_"))
    admin_url = server_url(args)
    name = None
    if args.ledger_url:
        url = args.ledger_url
        import psycopg

        from snapshot_pipeline.ledger import generator

        with psycopg.connect(url) as conn:
            counts = generator.ledger_counts(conn)
        ledger = {"balances": counts[0], "transaction_rows": counts[1], "reused": url} if counts else {}
    else:
        name = f"bench_shards_{stem.replace('-', '_')}_{os.getpid()}"
        url = create_database(admin_url, name)
        ledger = seed(url, args.balances, args.transactions, args.days, args.seed, args.start_date)
    base_day, last_day = last_two_days(args)
    report: dict = report_head(args, ledger=ledger, day=last_day.isoformat(), base_day=base_day.isoformat(),
                               repeats=args.repeats)
    try:
        bst.reset_index(url)
        spec = {"ledger_url": url, "home": str(work), "batch_size": args.batch_size,
                "storage": bst.fresh_local(work, "store")}
        log(f"genesis {base_day} ...")
        bst.run_worker({**spec, "kind": "take", "date": base_day.isoformat(), "shards": 1})
        runs: dict[str, list[dict]] = {"k1": [], "k2": [], "take": []}
        dumps: list[str] = []
        for repeat in range(args.repeats):
            order = (("k1", "parallel", 1), ("k2", "parallel", 2), ("take", "take", 1))
            if repeat % 2:
                order = tuple(reversed(order))
            for label, kind, k in order:
                dump = str(work / f"{label}-{repeat}.arrow") if repeat == 0 else None
                out = bst.run_worker({**spec, "kind": kind, "date": last_day.isoformat(), "shards": k,
                                      **({"dump": dump} if dump else {})})
                if dump:
                    dumps.append(dump)
                if out["mode"] != "incremental" or out["base_date"] != base_day.isoformat():
                    raise RuntimeError(f"{label} ran in mode {out['mode']} on base {out['base_date']}")
                runs[label].append(out)
                log(f"run {repeat + 1}/{args.repeats} {label}: {out['seconds']:.2f} s"
                    f" (plan {out.get('plan_seconds', 0):.2f}, merge {out.get('merge_wall_seconds', 0):.2f},"
                    f" commit {out.get('commit_seconds', 0):.2f})")
        reference = feather.read_table(dumps[0])
        report["exact"] = all(feather.read_table(d).equals(reference) for d in dumps)
        report.update({label: summarize(r) for label, r in runs.items()})
        report["runs"] = runs
        report["machine"]["load_end"] = os.getloadavg()[0]
        report["speedup"] = report["k1"]["whole_day_seconds"] / report["k2"]["whole_day_seconds"]
        print(render(report))
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        out_path = RESULTS_DIR / f"shards-{stem}.json"
        out_path.write_text(json.dumps(report, indent=2, default=str))
        log(f"results: {out_path}")
    finally:
        if name is not None and not args.keep:
            drop_database(admin_url, name)
        elif args.ledger_url:
            bst.reset_index(url)
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    if not report.get("exact"):
        log("FAILED: the runs wrote different partitions")
        return 1
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--balances", type=int, default=300_000, help="balances (default 300,000)")
    p.add_argument("--transactions", type=int, default=1_500_000, help="transactions (default 1,500,000)")
    p.add_argument("--days", type=int, default=30, help="days of history (default 30)")
    p.add_argument("--start-date", type=dt.date.fromisoformat, default=dt.date(2025, 1, 1))
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--batch-size", type=int, default=1000, help="batch size (default 1000)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each of K = 1, K = 2 (default 3)")
    p.add_argument("--smoke", action="store_true", help="tiny size (3k balances, 20k transactions, 5 days)")
    p.add_argument("--database-url", help="any database on the PostgreSQL server to use (default:"
                                          " LEDGER_DATABASE_URL, else the embedded PostgreSQL)")
    p.add_argument("--ledger-url", help="an already seeded ledger database to use instead of seeding one (its"
                                        " snapshot_index schema is dropped); --days and --start-date must match it")
    p.add_argument("--keep", action="store_true", help="keep the bench database and work dir")
    args = p.parse_args(argv)
    if args.smoke:
        args.balances, args.transactions, args.days, args.repeats = 3000, 20000, 5, 1
    return args


def main(argv: list[str] | None = None) -> int:
    return bench_main(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
