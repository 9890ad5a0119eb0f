"""What a run launched from the UI or HTTP costs beyond the asset's own work (issue 12).

Starts ``snapshot-pipeline ui`` (``dagster dev``: webserver, daemon, queued run coordinator, the
project's ``dagster.yaml``) on a throwaway ledger, launches ``balance_snapshots_job`` for a few
partitions through the webserver's GraphQL API (the path ``POST /balances-snapshots`` takes), and
reports, per run: the wall time from launch to the run's end, the asset's own ``duration_ms``, and
the difference (queueing, run-worker start, the check steps, event writes).

    python benchmarks/bench_launch.py --database-url postgresql://postgres@127.0.0.1:5432/test
    python benchmarks/bench_launch.py --balances 3000 --transactions 30000 --runs 3   # the issue's 3,000-balance case

Prints a table and writes JSON to ``benchmarks/results/launch-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_snapshot import RESULTS_DIR, create_database, drop_database, log, seed, server_url  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
START = dt.date(2026, 9, 1)

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args) -> dict:
    from snapshot_pipeline import db
    from snapshot_pipeline.dagster_client import DagsterClient, DagsterUnavailable

    admin = server_url(args)
    name = f"bench_launch_{uuid.uuid4().hex[:8]}"
    url = create_database(admin, name)
    instance_url = create_database(admin, name + "_dagster")  # an instance of its own: no other runs in its queue
    work = Path(tempfile.mkdtemp(prefix="bench-launch-"))
    ui = None
    try:
        seed(url, args.balances, args.transactions, args.days, 7, START)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "SNAPSHOT_", "DAGSTER_"))}
        env.update({"LEDGER_DATABASE_URL": url, "SNAPSHOT_STORAGE_URI": str(work / "store"),
                    "SNAPSHOT_START_DATE": START.isoformat(), "SNAPSHOT_HOME": str(ROOT),
                    "DAGSTER_HOME": str(work / "dagster_home"), "SNAPSHOT_AUTOMATION_DEFAULT_STATUS": "STOPPED",
                    "DAGSTER_PG_URL": db.sqlalchemy_psycopg2(instance_url)})
        log(f"starting snapshot-pipeline ui on port {port} ...")
        ui = subprocess.Popen([sys.executable, "-m", "snapshot_pipeline.cli", "ui", "--port", str(port)], env=env,
                              stdout=open(work / "ui.log", "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
        client = DagsterClient(f"http://127.0.0.1:{port}", timeout=30)
        deadline = time.monotonic() + 300
        while True:
            try:
                client.selector()
                break
            except DagsterUnavailable:
                if time.monotonic() > deadline or ui.poll() is not None:
                    raise RuntimeError((work / "ui.log").read_text()[-3000:])
                time.sleep(1)
        rows = []
        for i in range(args.runs):
            partition = (START + dt.timedelta(days=i)).isoformat()
            launched_at = time.time()
            run_id = client.launch_snapshot(partition, args.batch_size)["run_id"]
            while not (status := client.run(run_id))["done"]:
                time.sleep(0.2)
            ended = status["end_time"] or time.time()
            asset_s = (status["metrics"] or {}).get("duration_ms", 0) / 1000
            row = {"partition": partition, "status": status["status"], "launch_to_end_s": round(ended - launched_at, 2),
                   "queued_to_start_s": round((status["start_time"] or ended) - launched_at, 2),
                   "asset_s": round(asset_s, 2), "overhead_s": round(ended - launched_at - asset_s, 2),
                   "rows": (status["metrics"] or {}).get("dagster/row_count")}
            log(json.dumps(row))
            rows.append(row)
        return {"balances": args.balances, "transactions": args.transactions, "runs": rows,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "load_average": os.getloadavg()}}
    finally:
        if ui is not None and ui.poll() is None:
            ui.send_signal(signal.SIGTERM)
            ui.wait(timeout=30)
        drop_database(admin, name)
        drop_database(admin, name + "_dagster")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="admin URL of a PostgreSQL server (default: the embedded one)")
    parser.add_argument("--balances", type=int, default=3000)
    parser.add_argument("--transactions", type=int, default=30_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    result = run(args)
    print(f"{'partition':<12}{'status':<9}{'launch→end s':>14}{'asset s':>9}{'overhead s':>12}")
    for r in result["runs"]:
        print(f"{r['partition']:<12}{r['status']:<9}{r['launch_to_end_s']:>14}{r['asset_s']:>9}{r['overhead_s']:>12}")
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"launch-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
