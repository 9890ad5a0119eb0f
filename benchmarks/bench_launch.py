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

from _common import RESULTS_DIR, create_database, drop_database, log, seed, server_url

ROOT = Path(__file__).resolve().parent.parent
START = dt.date(2026, 9, 1)

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_BACKFILL_MUTATION = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}
"""
_BACKFILL_QUERY = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) { __typename ... on PartitionBackfill { status numPartitions } }
}
"""


def graphql(client, document: str, variables: dict) -> dict:
    """A raw GraphQL request to the webserver (the backfill mutation is not part of the project's client)."""
    import httpx
    response = httpx.post(f"{client.base_url}/graphql", json={"query": document, "variables": variables}, timeout=60)
    response.raise_for_status()
    payload = response.json()
    if payload.get("errors"):
        raise RuntimeError(payload["errors"][0].get("message"))
    return payload["data"]


def asset_seconds(url: str, days: list[dt.date]) -> float:
    """Σ of the snapshot's own duration over ``days`` (the manifest's duration_ms)."""
    import psycopg
    with psycopg.connect(url) as conn:
        total = conn.execute("SELECT sum(duration_ms) FROM snapshot_index.partitions WHERE snapshot_date = ANY(%s)",
                             (days,)).fetchone()[0]
    return float(total or 0) / 1000


def wait_published(url: str, days: list[dt.date], deadline: float) -> None:
    import psycopg
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            if conn.execute("SELECT to_regclass('snapshot_index.partitions')").fetchone()[0] is not None:
                count = conn.execute("SELECT count(*) FROM snapshot_index.partitions WHERE snapshot_date = ANY(%s)",
                                     (days,)).fetchone()[0]
                if count == len(days):
                    return
        time.sleep(0.5)
    raise RuntimeError(f"{len(days)} days were not published in time")


def measure_gap_fill(client, url: str, first: dt.date, count: int) -> dict:
    """The same number of days filled two ways, on consecutive days of one ledger: one run per day
    (launched together, as the gap filler used to) and one backfill (ranged runs, the backfill policy)."""
    single_days = [first + dt.timedelta(days=i) for i in range(count)]
    ranged_days = [first + dt.timedelta(days=count + i) for i in range(count)]
    started = time.monotonic()
    for day in single_days:
        client.launch_snapshot(day.isoformat(), 1000)
    wait_published(url, single_days, started + 1800)
    single_s = time.monotonic() - started
    log(f"{count} one-day runs: {single_s:.1f} s wall, {asset_seconds(url, single_days):.1f} s of asset work")
    started = time.monotonic()
    result = graphql(client, _BACKFILL_MUTATION, {"params": {
        "partitionNames": [d.isoformat() for d in ranged_days],
        "assetSelection": [{"path": ["balance_snapshots"]}], "fromFailure": False}})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"backfill refused: {result}")
    wait_published(url, ranged_days, started + 1800)
    ranged_s = time.monotonic() - started  # every day published (the data is there)
    while True:  # the backfill daemon marks the backfill done on its next tick (every 30 s in Dagster)
        status = graphql(client, _BACKFILL_QUERY, {"id": result["backfillId"]})["partitionBackfillOrError"]["status"]
        if status not in ("REQUESTED",):
            break
        if time.monotonic() - started > 1800:
            raise RuntimeError("the backfill did not finish in 30 minutes")
        time.sleep(0.5)
    completed_s = time.monotonic() - started
    log(f"one backfill of {count} days: {ranged_s:.1f} s to publish, {completed_s:.1f} s to {status},"
        f" {asset_seconds(url, ranged_days):.1f} s of asset work")
    return {"days": count, "one_run_per_day_s": round(single_s, 1),
            "one_run_per_day_asset_s": round(asset_seconds(url, single_days), 1),
            "backfill_s": round(ranged_s, 1), "backfill_completed_s": round(completed_s, 1),
            "backfill_asset_s": round(asset_seconds(url, ranged_days), 1),
            "backfill_status": status, "speedup": round(single_s / max(ranged_s, 1e-9), 2)}


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
        seed(url, args.balances, args.transactions, max(args.days, args.runs + 2 * args.gap_days), 7, START)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "SNAPSHOT_", "DAGSTER_"))}
        env.update({"LEDGER_DATABASE_URL": url, "SNAPSHOT_STORAGE_URI": str(work / "store"),
                    "SNAPSHOT_START_DATE": START.isoformat(), "SNAPSHOT_HOME": str(ROOT),
                    "DAGSTER_HOME": str(work / "dagster_home"), "SNAPSHOT_AUTOMATION_DEFAULT_STATUS": "STOPPED",
                    "DAGSTER_PG_URL": db.sqlalchemy_psycopg2(instance_url)})
        log(f"starting snapshot-pipeline ui on port {port} ...")
        ui = subprocess.Popen([sys.executable, "-m", "snapshot_pipeline.cli", "ui", "--port", str(port)], env=env,
                              stdout=open(work / "ui.log", "wb"),  # noqa: SIM115 - the server outlives this block
                              stderr=subprocess.STDOUT, cwd=ROOT)
        client = DagsterClient(f"http://127.0.0.1:{port}", timeout=30)
        deadline = time.monotonic() + 300
        while True:
            try:
                client.selector()
                break
            except DagsterUnavailable:
                if time.monotonic() > deadline or ui.poll() is not None:
                    raise RuntimeError((work / "ui.log").read_text()[-3000:]) from None
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
        gap = (measure_gap_fill(client, url, START + dt.timedelta(days=args.runs), args.gap_days)
               if args.gap_days else None)
        return {"balances": args.balances, "transactions": args.transactions, "runs": rows, "gap_fill": gap,
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
    parser.add_argument("--gap-days", type=int, default=14,
                        help="days filled once as one-day runs and once as one backfill (0: skip)")
    args = parser.parse_args()
    result = run(args)
    print(f"{'partition':<12}{'status':<9}{'launch→end s':>14}{'asset s':>9}{'overhead s':>12}")
    for r in result["runs"]:
        print(f"{r['partition']:<12}{r['status']:<9}{r['launch_to_end_s']:>14}{r['asset_s']:>9}{r['overhead_s']:>12}")
    if result["gap_fill"]:
        g = result["gap_fill"]
        print(f"gap of {g['days']} days: one run per day {g['one_run_per_day_s']} s"
              f" (asset {g['one_run_per_day_asset_s']} s); one backfill {g['backfill_s']} s to publish,"
              f" {g['backfill_completed_s']} s to completion (asset {g['backfill_asset_s']} s): {g['speedup']}x")
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"launch-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
