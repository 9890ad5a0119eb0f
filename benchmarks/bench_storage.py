"""Benchmark of the storage layer and of shards, on one generated ledger, in one run (issue 9).

(a) local disk vs a local S3 server (moto's standalone server on loopback, started and stopped here,
    as tests/s3.py does): a genesis partition (day ``D - 1``) and one rolled-forward day ``D`` on each;
    ratio S3 / local.
(b) shards 1 vs 2, local disk, the same day ``D`` on the same base ``D - 1``:
    * sequential, in one process: ``take_snapshot(..., shards=K)`` for K = 1, 2;
    * parallel: ``shards.plan``, then ``shards.merge_shard`` for every k in K processes at once
      (multiprocessing, spawn; processes started and imported before the clock starts), then
      ``shards.commit_shards``: what the Dagster job's steps do, without its step-launch overhead;
    * optionally (``--dagster``) one real ``balance_snapshots_sharded`` run with ``dg.execute_job`` on the
      multiprocess executor, for the step-launch overhead.
    Per-phase times (plan = consistent read + delta, merge per shard, commit), rows/s per shard, peak RSS
    of every shard process (``VmHWM``: its own, unlike ``ru_maxrss`` which Linux carries over from the
    parent), bytes per balance of the Parquet written. Exactness: every K=2 partition must equal the K=1
    partition (``pyarrow.Table.equals``); the benchmark fails (exit 1) if one does not.

Every measurement runs in a fresh interpreter (``--worker``). Results are printed and written as JSON to
``benchmarks/results/storage-<timestamp>.json``.

    python benchmarks/bench_storage.py                    # 200k balances, 1M transactions, 30 days
    python benchmarks/bench_storage.py --smoke            # 3k balances, 20k transactions, 5 days
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from _common import (
    RESULTS_DIR,
    Scratch,
    add_server_arguments,
    dispatch,
    last_two_days,
    log,
    report_head,
    run_script_worker,
    seed,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

DEFAULT_BALANCES = 200_000
DEFAULT_TRANSACTIONS = 1_000_000
DEFAULT_DAYS = 30
DEFAULT_START_DATE = dt.date(2025, 1, 1)
DEFAULT_BATCH_SIZE = 1000  # the snapshot jobs' default batch_size
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true"}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


# =============================================================================================== workers


def _settings(spec: dict):
    from snapshot_pipeline.settings import load_settings

    return load_settings({"LEDGER_DATABASE_URL": spec["ledger_url"], "SNAPSHOT_DATABASE_URL": spec["ledger_url"],
                          "SNAPSHOT_STORAGE_URI": spec["storage"], "SNAPSHOT_HOME": spec["home"],
                          "SNAPSHOT_TIMEZONE": "UTC", **spec.get("env", {})})


def _ready(_: int) -> int:
    """Both pool processes up, with the merge's modules imported, before the merge is timed."""
    import pyarrow.compute
    import pyarrow.parquet  # noqa: F401

    from snapshot_pipeline.snapshot import merge, shards  # noqa: F401
    time.sleep(0.3)
    return os.getpid()


def _merge_child(args: tuple[dict, dict, int]) -> dict:
    """One shard's merge in a spawned process: its own time and peak RSS."""
    from snapshot_pipeline.snapshot import shards

    spec, plan_dict, shard = args
    settings = _settings(spec)
    rss_before = _status_kb("VmHWM")
    started = time.perf_counter()
    record = shards.merge_shard(settings, shards.Plan.from_dict(plan_dict), shard, log=lambda _m: None)
    seconds = time.perf_counter() - started
    return {"shard": shard, "seconds": seconds, "rows": record["staged"]["rows"],
            "rows_per_second": record["staged"]["rows"] / seconds if seconds else None,
            "merge_ms": record["merge_ms"], "bytes": record["staged"].get("bytes"),
            "rss_after_imports_mb": rss_before / 1024, "peak_rss_mb": _status_kb("VmHWM") / 1024,
            "ru_maxrss_mb": __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss / 1024}


def _result(result, seconds: float) -> dict:
    return {"seconds": seconds, "rows": result.rows, "rows_per_second": result.rows / seconds if seconds else None,
            "mode": result.mode, "base_date": result.base_date.isoformat() if result.base_date else None,
            "bytes_written": result.bytes_written, "balances_changed": result.balances_changed,
            "index_rows_written": result.index_rows_written, "journal_rows": result.journal_rows,
            "phases_ms": result.phases_ms, "files": len(result.files), "balanced": result.balanced}


def _sharded_job():
    """The balance_snapshots_sharded job, built from the environment (reconstructable in step processes)."""
    from snapshot_pipeline.definitions import build_definitions

    return build_definitions().resolve_job_def("balance_snapshots_sharded")


def worker_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    os.environ.update(spec.get("env", {}))  # the AWS_* variables pyarrow reads (S3 runs)
    from snapshot_pipeline import snapshot
    from snapshot_pipeline.snapshot import shards
    from snapshot_pipeline.store import catalog

    settings = _settings(spec)
    date = dt.date.fromisoformat(spec["date"])
    rss_imports = _status_kb("VmHWM")
    if spec["kind"] == "take":
        started = time.perf_counter()
        result = snapshot.take_snapshot(settings, date, spec["batch_size"], shards=spec["shards"],
                                        log=lambda _m: None)
        out = _result(result, time.perf_counter() - started)
        out["peak_rss_mb"] = _status_kb("VmHWM") / 1024
        out["rss_after_imports_mb"] = rss_imports / 1024
    elif spec["kind"] == "parallel":
        import multiprocessing

        k = spec["shards"]
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(k) as pool:
            pool.map(_ready, range(k), chunksize=1)
            started = time.perf_counter()
            the_plan = shards.plan(settings, date, k, spec["batch_size"], log=lambda _m: None)
            planned = time.perf_counter()
            children = pool.map(_merge_child, [(spec, the_plan.as_dict(), s) for s in range(k)], chunksize=1)
            merged = time.perf_counter()
            result = shards.commit_shards(settings, the_plan, log=lambda _m: None)
            done = time.perf_counter()
        out = _result(result, done - started)
        out.update(plan_seconds=planned - started, merge_wall_seconds=merged - planned, commit_seconds=done - merged,
                   boundaries=the_plan.boundaries, shard_runs=children,
                   plan_process_peak_rss_mb=_status_kb("VmHWM") / 1024)
    elif spec["kind"] == "dagster":
        import dagster as dg

        os.environ.update({"LEDGER_DATABASE_URL": spec["ledger_url"], "SNAPSHOT_DATABASE_URL": spec["ledger_url"],
                           "SNAPSHOT_STORAGE_URI": spec["storage"], "SNAPSHOT_HOME": spec["home"],
                           "SNAPSHOT_TIMEZONE": "UTC", "SNAPSHOT_START_DATE": spec["start_date"],
                           "SNAPSHOT_EXECUTOR": "multiprocess"})
        started = time.perf_counter()
        with dg.instance_for_test() as instance:
            run = dg.execute_job(dg.reconstructable(_sharded_job), instance=instance, tags=spec.get("tags", {}),
                                 run_config=spec["run_config"])
            success = run.success
        out = {"seconds": time.perf_counter() - started, "success": success}
    else:
        raise SystemExit(f"unknown worker kind {spec['kind']!r}")
    if spec.get("dump"):  # the partition as written, for the exactness check
        import pyarrow.feather as feather

        feather.write_feather(catalog.read_partition(settings, date), spec["dump"], compression="uncompressed")
    print(json.dumps(out, default=str))
    return 0


def run_worker(spec: dict) -> dict:
    return run_script_worker(__file__, spec, f"{spec['kind']} for {spec['date']} (shards {spec.get('shards')})")


# ============================================================================================ S3 server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """``python -m moto.server`` on a free loopback port; stopped by its pid."""

    def __enter__(self) -> MotoServer:
        port = _free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url, timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    raise RuntimeError(f"moto server did not start on {self.url}") from None
                time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def bucket(self) -> str:
        import pyarrow.fs as pafs

        name = f"bench-{uuid.uuid4().hex[:12]}"
        fs = pafs.S3FileSystem(endpoint_override=self.url, region="us-east-1", scheme="http", access_key="testing",
                               secret_key="testing", allow_bucket_creation=True)
        fs.create_dir(name)
        return f"s3://{name}/snapshots"

    @property
    def env(self) -> dict:
        return {"AWS_ENDPOINT_URL": self.url, **S3_ENV}


# ================================================================================================ run


def reset_index(ledger_url: str) -> None:
    import psycopg

    with psycopg.connect(ledger_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS snapshot_index CASCADE")


def fresh_local(work: Path, name: str) -> str:
    path = work / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return str(path)


def ratio(num, den):
    return num / den if num is not None and den else None


def fmt_ratio(value) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def render(report: dict) -> str:
    lines = []
    led = report["ledger"]
    lines.append(f"ledger: {led['balances']:,} balances, {led['transaction_rows']:,} transaction rows, "
                 f"{report['args']['days']} days; D = {report['day']}; batch size {report['args']['batch_size']}; "
                 f"{report['machine']['cpus']} CPUs; load {report['machine']['load_start']} -> "
                 f"{report['machine']['load_end']}")
    st = report["storage"]
    lines.append("")
    lines.append("(a) local disk vs local S3 server (moto)          local        S3   S3/local")
    for phase in ("genesis", "incremental"):
        loc, s3 = st["local"][phase], st["s3"][phase]
        lines.append(f"    {phase:<12} seconds                  {loc['seconds']:>10.2f} {s3['seconds']:>9.2f}"
                     f"   {fmt_ratio(ratio(s3['seconds'], loc['seconds']))}")
        for key in sorted(set(loc["phases_ms"]) | set(s3["phases_ms"])):
            a, b = loc["phases_ms"].get(key), s3["phases_ms"].get(key)
            lines.append(f"      {key:<32} {a if a is not None else '-':>10} {b if b is not None else '-':>9}"
                         f"   {fmt_ratio(ratio(b, a))}")
    sh = report["shards"]
    lines.append("")
    lines.append("(b) shards, the same day D on the same base D-1 (local disk)")
    for label in ("take_1", "take_2"):
        r = sh[label]
        lines.append(f"    take_snapshot(shards={label[-1]}) sequential: {r['seconds']:.2f} s, "
                     f"{r['rows_per_second']:,.0f} rows/s, peak RSS {r['peak_rss_mb']:.0f} MB, phases {r['phases_ms']}")
    for label in ("parallel_1", "parallel_2"):
        r = sh[label]
        lines.append(f"    parallel K={label[-1]}: total {r['seconds']:.2f} s = plan {r['plan_seconds']:.2f} s"
                     f" (delta {r['phases_ms'].get('delta_ms')} ms) + merge wall {r['merge_wall_seconds']:.2f} s"
                     f" + commit {r['commit_seconds']:.2f} s; {r['rows_per_second']:,.0f} rows/s overall")
        for c in r["shard_runs"]:
            lines.append(f"      shard {c['shard']}: {c['rows']:,} rows in {c['seconds']:.2f} s ="
                         f" {c['rows_per_second']:,.0f} rows/s; peak RSS {c['peak_rss_mb']:.0f} MB"
                         f" (after imports {c['rss_after_imports_mb']:.0f} MB)")
    lines.append(f"    per-shard rows/s, K=2 vs K=1 (parallel):          {fmt_ratio(sh['per_shard_ratio'])}")
    lines.append(f"    merge wall, K=1 / K=2 (parallel speed-up):        {fmt_ratio(sh['merge_speedup'])}")
    lines.append(f"    whole day, K=1 / K=2 (parallel speed-up):         {fmt_ratio(sh['total_speedup'])}")
    lines.append(f"    whole day, sequential take_snapshot K=2 / K=1:    {fmt_ratio(sh['sequential_cost'])}")
    if sh.get("dagster"):
        d = sh["dagster"]
        lines.append(f"    dagster balance_snapshots_sharded K=2 (multiprocess): {d['seconds']:.2f} s"
                     f" (success={d['success']}); overhead vs parallel K=2: {d['overhead_seconds']:.2f} s")
    lines.append(f"    exactness: K=2 partitions equal the K=1 partition: {sh['exact']}")
    lines.append(f"    Parquet bytes per balance (day D, K=1): {sh['bytes_per_balance']:.1f}")
    return "\n".join(lines)


def bench_main(args) -> int:
    import pyarrow.feather as feather

    throwaway = Scratch.create(args, "bench_storage")
    url, work, stem = throwaway.url, throwaway.work, throwaway.stem
    base_day, last_day = last_two_days(args)
    report: dict = report_head(args, day=last_day.isoformat())
    exact = True
    try:
        report["ledger"] = seed(url, args.balances, args.transactions, args.days, args.seed, args.start_date)
        common = {"ledger_url": url, "home": str(work), "batch_size": args.batch_size}

        # (a) local disk vs S3, each from an empty store: genesis D-1, then D rolled forward
        storage: dict = {}
        with MotoServer() as server:
            for label in ("local", "s3"):
                reset_index(url)
                if label == "local":
                    spec = {**common, "storage": fresh_local(work, "local")}
                else:
                    spec = {**common, "storage": server.bucket(), "env": server.env}
                runs = {}
                for phase, day in (("genesis", base_day), ("incremental", last_day)):
                    log(f"(a) {label}: {phase} {day} ...")
                    runs[phase] = run_worker({**spec, "kind": "take", "date": day.isoformat(), "shards": 1})
                    log(f"(a) {label}: {phase} {runs[phase]['seconds']:.2f} s ({runs[phase]['mode']})")
                storage[label] = runs
        report["storage"] = storage

        # (b) shards: one local store, base D-1, then D again and again (each run replaces D)
        reset_index(url)
        spec = {**common, "storage": fresh_local(work, "shards")}
        run_worker({**spec, "kind": "take", "date": base_day.isoformat(), "shards": 1})
        sh: dict = {}
        dumps = {}
        for label, kind, k in (("take_1", "take", 1), ("take_2", "take", 2),
                               ("parallel_1", "parallel", 1), ("parallel_2", "parallel", 2)):
            dumps[label] = str(work / f"{label}.arrow")
            log(f"(b) {label} ...")
            sh[label] = run_worker({**spec, "kind": kind, "date": last_day.isoformat(), "shards": k,
                                    "dump": dumps[label]})
            log(f"(b) {label}: {sh[label]['seconds']:.2f} s, {sh[label]['files']} file(s)")
            if sh[label]["mode"] != "incremental" or sh[label]["base_date"] != base_day.isoformat():
                log(f"WARNING: {label} ran in mode {sh[label]['mode']} on base {sh[label]['base_date']}")
        if args.dagster:
            run_config = {"ops": {"plan_shards": {"config": {"shards": 2, "batch_size": args.batch_size}}}}
            log("(b) dagster balance_snapshots_sharded K=2 ...")
            try:
                d = run_worker({**spec, "kind": "dagster", "date": last_day.isoformat(), "shards": 2,
                                "run_config": run_config, "start_date": args.start_date.isoformat(),
                                "tags": {"dagster/partition": last_day.isoformat()},
                                "dump": str(work / "dagster.arrow")})
                d["overhead_seconds"] = d["seconds"] - sh["parallel_2"]["seconds"]
                sh["dagster"] = d
                dumps["dagster"] = str(work / "dagster.arrow")
            except Exception as exc:  # noqa: BLE001 - optional: report, do not fail the benchmark
                log(f"WARNING: the Dagster run failed: {exc}")
                sh["dagster_error"] = str(exc)
        reference = feather.read_table(dumps["take_1"])
        for label, path in dumps.items():
            table = feather.read_table(path)
            same = table.equals(reference)
            sh.setdefault("equal_to_k1", {})[label] = same
            if not same:
                exact = False
                log(f"ERROR: partition {last_day} of {label} differs from K=1 ({table.num_rows} vs"
                    f" {reference.num_rows} rows)")
        sh["exact"] = exact
        p1, p2 = sh["parallel_1"], sh["parallel_2"]
        rate1 = p1["shard_runs"][0]["rows_per_second"]
        rate2 = sum(c["rows_per_second"] for c in p2["shard_runs"]) / len(p2["shard_runs"])
        sh["per_shard_ratio"] = ratio(rate2, rate1)
        sh["merge_speedup"] = ratio(p1["merge_wall_seconds"], p2["merge_wall_seconds"])
        sh["total_speedup"] = ratio(p1["seconds"], p2["seconds"])
        sh["sequential_cost"] = ratio(sh["take_2"]["seconds"], sh["take_1"]["seconds"])
        sh["bytes_per_balance"] = sh["take_1"]["bytes_written"] / sh["take_1"]["rows"]
        report["shards"] = sh
        report["machine"]["load_end"] = os.getloadavg()[0]
        print(render(report))
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        out = RESULTS_DIR / f"storage-{stem}.json"
        out.write_text(json.dumps(report, indent=2, default=str))
        log(f"results: {out}")
    finally:
        throwaway.remove(args.keep)
    if not exact:
        log("FAILED: a sharded partition differs from the unsharded one")
        return 1
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--balances", type=int, default=DEFAULT_BALANCES, help="balances (default 200,000)")
    p.add_argument("--transactions", type=int, default=DEFAULT_TRANSACTIONS, help="transactions (default 1,000,000)")
    p.add_argument("--days", type=int, default=DEFAULT_DAYS, help="days of history (default 30)")
    p.add_argument("--start-date", type=dt.date.fromisoformat, default=DEFAULT_START_DATE)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="batch size (default 1000)")
    p.add_argument("--smoke", action="store_true", help="tiny size (3k balances, 20k transactions, 5 days)")
    p.add_argument("--dagster", action="store_true",
                   help="also time one balance_snapshots_sharded run (K=2) with dg.execute_job")
    add_server_arguments(p)
    args = p.parse_args(argv)
    if args.smoke:
        args.balances, args.transactions, args.days = 3000, 20000, 5
    return args


def main(argv: list[str] | None = None) -> int:
    return dispatch(argv, parse_args, worker_main, bench_main)


if __name__ == "__main__":
    sys.exit(main())
