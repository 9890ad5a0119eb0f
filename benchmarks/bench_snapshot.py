"""Benchmark of the snapshot materialization against baselines measured in the same run (DESIGN §6).

One command seeds a throwaway ledger on Blnk's index set (DESIGN §2) and measures, on that ledger:

(a) raw ``COPY (SELECT <balance columns> FROM blnk.balances) TO STDOUT (FORMAT binary)``,
    drained by the client (psycopg 3): the ceiling for reading every balance once;
(b) a Blnk-style snapshot: Blnk's ``take_daily_balance_snapshots_batched`` shape (batched
    ``INSERT ... SELECT`` of the live rows, 1000 balances per batch), over a bounded subset;
(c) ``take_snapshot`` of the ledger's last day on top of the day before (roll-forward), per batch size;
    then the same day through the whole ``snapshot-pipeline snapshot`` command (Dagster run and checks),
    and again after ``ledger-indexes`` created the read indexes we offer (with and without them);
(d) ``take_snapshot`` of the day before, the first partition (genesis: the only full read);
(e) a dbt snapshot (``check`` strategy, dbt-postgres, ``dbt-core<1.12`` in its own venv) of the live
    ``blnk.balances`` after a day's updates: what a data team would set up instead;
(f) ``balances_at`` for every balance at mid-day of the last day (in process);
(g) (c) on a second ledger with the same daily activity and 4x the history.

Every (c)/(d)/(f) measurement runs in a fresh process (``--worker``) that reports its own peak RSS, as a
user's install runs it: without the test-only packages of the development environment (``runtime_only.py``).
Results are printed with ratios and targets and written as JSON to ``benchmarks/results/``.
Benchmarks report; a missed target does not fail the run.

    python benchmarks/bench_snapshot.py                              # 1M balances, 5M transactions, 30 days
    python benchmarks/bench_snapshot.py --balances 20000 --transactions 100000 --batch-sizes 1000
    python benchmarks/bench_snapshot.py --rss-scaling                # peak RSS of (c): 100k vs 1M
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import floor
from _common import (
    LAUNCHER,
    RESULTS_DIR,
    add_server_arguments,
    create_database,
    drop_database,
    last_two_days,
    log,
    seed,
    server_url,
)

HERE = Path(__file__).resolve().parent

DEFAULT_BALANCES = 1_000_000
DEFAULT_TRANSACTIONS = 5_000_000
DEFAULT_DAYS = 30
DEFAULT_BATCH_SIZES = (1000, 100_000)
DEFAULT_START_DATE = dt.date(2025, 1, 1)
DEFAULT_SEED = 42
BLNK_BATCH_SIZE = 1000  # Blnk's default batch_size of POST /balances-snapshots
DEFAULT_BLNK_SAMPLE = 50_000
COPY_REPEATS = 3
RSS_SCALING_SIZES = (100_000, 1_000_000)
RSS_SCALING_BATCH = 1000
RSS_GROWTH_TARGET_MB = 100.0
# Targets (issue 20): ratios against baselines measured in the same run.
BALANCES_AT_REPEATS = 3  # (f) in that many fresh processes, the median reported
TARGET_VS_FLOOR = 3.0  # (c) <= 3 x its physical floor (benchmarks/floor.py); (d) <= 3 x genesis's floor
TARGET_VS_BLNK = 100.0  # c >= 100 x b
TARGET_VS_DBT_PROCESS = 3.0  # the whole snapshot command >= 3 x faster than the whole `dbt snapshot` process
TARGET_COMMAND_EXTRA_SECONDS = 3.0  # the whole snapshot command <= the asset + 3 s
TARGET_CHECKS = 0.25  # the run's check steps <= 0.25 x the asset's step
TARGET_HISTORY = 1.2  # c on 4x the history <= 1.2 x c's time
TARGET_BALANCES_AT_SECONDS = 1.5
HISTORY_FACTOR = 4
DBT_VENV = HERE.parent / ".venv-dbt"
DBT_REQUIREMENTS = ("dbt-core>=1.8,<1.12", "dbt-postgres>=1.8,<1.12")

# The columns a balance snapshot carries (what (c) writes per balance, minus the computed cutoff).
BALANCE_COLUMNS = (
    "balance_id", "ledger_id", "identity_id", "indicator", "currency",
    "balance", "credit_balance", "debit_balance",
    "inflight_balance", "inflight_credit_balance", "inflight_debit_balance",
    "created_at",
)


# =============================================================================================== worker
# Runs in a fresh interpreter: one take_snapshot call, JSON result on the last stdout line.


def worker_main(spec_json: str) -> int:
    import resource

    import runtime_only

    # the ADBC driver imports polars when it is installed (0.23-0.6 s of a day here, inside take_snapshot's
    # first connection): a test-only package the user's install does not have
    runtime_only.hide_test_only_packages()
    from snapshot_pipeline.settings import prefer_jemalloc

    prefer_jemalloc()  # the allocator the command line's processes use (before pyarrow's import)

    rss_start_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fingerprint = code_fingerprint()
    spec = json.loads(spec_json)
    from snapshot_pipeline import snapshot
    from snapshot_pipeline.settings import load_settings

    settings = load_settings({
        "LEDGER_DATABASE_URL": spec["ledger_url"],
        "SNAPSHOT_DATABASE_URL": spec["ledger_url"],
        "SNAPSHOT_STORAGE_URI": spec["storage"],
        "SNAPSHOT_HOME": spec["home"],
        "SNAPSHOT_TIMEZONE": "UTC",
    })
    rss_imports_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if spec.get("kind") == "balances_at":
        return balances_at_worker(settings, spec, fingerprint, rss_start_kb, rss_imports_kb)
    messages: list[str] = []
    started = time.perf_counter()
    result = snapshot.take_snapshot(settings, dt.date.fromisoformat(spec["date"]), spec["batch_size"],
                                    log=messages.append)
    seconds = time.perf_counter() - started
    rss_peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    delta = journal_sum_ms = None
    for message in messages:
        found = re.search(r"journal_rows=(\d+)", message)
        if found:
            delta = int(found.group(1))
        found = re.search(r"journal_ms=(\d+)", message)
        if found:
            journal_sum_ms = int(found.group(1))
    out = {
        "date": spec["date"],
        "batch_size": spec["batch_size"],
        "seconds": seconds,
        "rows": result.rows,
        "rows_per_second": result.rows / seconds if seconds else None,
        "mode": result.mode,
        "base_date": result.base_date.isoformat() if result.base_date else None,
        "batches": result.batches,
        "balances_changed": result.balances_changed,
        "index_rows_written": result.index_rows_written,
        "delta_balances": delta,
        "journal_sum_seconds": journal_sum_ms / 1000 if journal_sum_ms is not None else None,
        "bytes_written": result.bytes_written,
        "reported_duration_ms": result.duration_ms,
        "reported_snapshots_per_second": result.snapshots_per_second,
        "code_fingerprint": fingerprint,
        "rss_at_start_mb": rss_start_kb / 1024,
        "rss_after_imports_mb": rss_imports_kb / 1024,
        "peak_rss_mb": rss_peak_kb / 1024,
        "phases_ms": result.phases_ms,
        "roll_forward_state": result.pending,
        "balanced": result.balanced,
        "log": messages,
    }
    print(json.dumps(out))
    return 0


def balances_at_worker(settings, spec: dict, fingerprint: str, rss_start_kb: int, rss_imports_kb: int) -> int:
    import resource

    from snapshot_pipeline import query

    at = dt.datetime.fromisoformat(spec["at"])
    with query.QueryEngine(settings, max_connections=1) as engine:
        started = time.perf_counter()
        table = engine.balances_at(at)
        seconds = time.perf_counter() - started
    meta = table.schema.metadata or {}
    print(json.dumps({
        "at": spec["at"], "seconds": seconds, "rows": table.num_rows,
        "anchor_date": meta.get(b"snapshot_pipeline.anchor_date", b"").decode(),
        "replayed_balances": int(meta.get(b"snapshot_pipeline.replayed_balances", b"0")),
        "code_fingerprint": fingerprint, "rss_at_start_mb": rss_start_kb / 1024,
        "rss_after_imports_mb": rss_imports_kb / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))
    return 0


# A process that only forks the worker and waits. Linux carries a process's peak RSS across execve
# (and subprocess uses vfork), so a worker exec'd straight from this (large) benchmark process would
# report the parent's peak as its own. Through this tiny intermediate, the worker's RUSAGE_SELF
# ru_maxrss is its own; ``rss_at_start_mb`` in the results shows the floor (~10 MB).


def run_worker(ledger_url: str, storage: Path, home: Path, date: dt.date, batch_size: int, **extra) -> dict:
    """One take_snapshot (or ``kind="balances_at"``) in a fresh process; peak RSS is the worker's own."""
    spec = {"ledger_url": ledger_url, "storage": str(storage), "home": str(home), "date": date.isoformat(),
            "batch_size": batch_size, **extra}
    command = [sys.executable, "-c", LAUNCHER,
               sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    started = time.perf_counter()
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    process_seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"worker for {date} (batch size {batch_size}) exited with {proc.returncode}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = process_seconds
    return result


# ============================================================================================ databases


# ================================================================================== (a) raw COPY TO STDOUT


def measure_copy(url: str, repeats: int = COPY_REPEATS) -> dict:
    import psycopg

    query = f"COPY (SELECT {', '.join(BALANCE_COLUMNS)} FROM blnk.balances) TO STDOUT (FORMAT binary)"
    runs = []
    with psycopg.connect(url, autocommit=True) as conn:
        expected = conn.execute("SELECT count(*) FROM blnk.balances").fetchone()[0]
        for _ in range(repeats):
            nbytes = 0
            with conn.cursor() as cur:
                started = time.perf_counter()
                with cur.copy(query) as copy:
                    for block in copy:
                        nbytes += len(block)
                seconds = time.perf_counter() - started
                rows = cur.rowcount if cur.rowcount and cur.rowcount > 0 else expected
            runs.append({"seconds": seconds, "rows": rows, "bytes": nbytes, "rows_per_second": rows / seconds})
    best = max(runs, key=lambda r: r["rows_per_second"])
    return {"query": query, "repeats": repeats, "runs": runs, "rows": best["rows"], "bytes": best["bytes"],
            "seconds": best["seconds"], "rows_per_second": best["rows_per_second"],
            "median_rows_per_second": statistics.median(r["rows_per_second"] for r in runs)}


# ========================================================================== (b) Blnk-style INSERT ... SELECT

# Blnk's blnk.balance_snapshots (its migration), amounts widened to NUMERIC: Blnk declares BIGINT,
# and the generated ledger holds amounts above 2^63 that BIGINT cannot store.
BLNK_DDL = """
DROP SCHEMA IF EXISTS bench_blnk CASCADE;
CREATE SCHEMA bench_blnk;
CREATE TABLE bench_blnk.balance_snapshots (
    id                      SERIAL PRIMARY KEY,
    balance_id              TEXT      NOT NULL REFERENCES blnk.balances (balance_id),
    ledger_id               TEXT      NOT NULL REFERENCES blnk.ledgers (ledger_id),
    balance                 NUMERIC   NOT NULL,
    credit_balance          NUMERIC   NOT NULL,
    debit_balance           NUMERIC   NOT NULL,
    inflight_balance        NUMERIC   NOT NULL,
    inflight_credit_balance NUMERIC   NOT NULL,
    inflight_debit_balance  NUMERIC   NOT NULL,
    currency                TEXT      NOT NULL,
    snapshot_time           TIMESTAMP WITH TIME ZONE NOT NULL,
    created_at              TIMESTAMP NOT NULL,
    last_tx_id              TEXT,
    meta_data               JSONB
);
CREATE INDEX idx_balance_snapshots_balance_id ON bench_blnk.balance_snapshots (balance_id);
CREATE INDEX idx_balance_snapshots_snapshot_time ON bench_blnk.balance_snapshots (snapshot_time);
CREATE INDEX idx_balance_snapshots_ledger_time ON bench_blnk.balance_snapshots (ledger_id, snapshot_time);
"""

# Blnk's take_daily_balance_snapshots_batched, statement for statement: live rows copied in keyset
# batches by balances.id, a NOT EXISTS "already snapshotted today" check and a correlated
# latest-transaction subquery per balance, all in one function call (one transaction). Two changes:
# the next keyset position is the last id of the batch (Blnk's own step query aggregates max(id) with
# an ORDER BY, which PostgreSQL rejects), and ``max_balances`` bounds the run to the first N balances.
BLNK_FUNCTION = """
CREATE OR REPLACE FUNCTION bench_blnk.take_daily_balance_snapshots_batched(batch_size INTEGER, max_balances BIGINT)
    RETURNS INTEGER
    LANGUAGE plpgsql
    STRICT
AS $$
DECLARE
    v_last_processed_id BIGINT := 0;
    v_stop_id BIGINT;
    v_total_processed INTEGER := 0;
    v_batch_count INTEGER;
    v_batch_last_id BIGINT;
BEGIN
    SELECT max(id) INTO v_stop_id FROM (SELECT id FROM blnk.balances ORDER BY id LIMIT max_balances) s;
    LOOP
        WITH batch AS (
            SELECT b.id, b.balance_id, b.ledger_id, b.balance, b.credit_balance, b.debit_balance,
                   b.inflight_balance, b.inflight_credit_balance, b.inflight_debit_balance,
                   b.currency, b.created_at, b.meta_data
            FROM blnk.balances b
            WHERE b.id > v_last_processed_id AND b.id <= v_stop_id
              AND NOT EXISTS (
                  SELECT 1 FROM bench_blnk.balance_snapshots bs
                  WHERE bs.balance_id = b.balance_id
                    AND DATE_TRUNC('day', bs.snapshot_time) = DATE_TRUNC('day', NOW())
              )
            ORDER BY b.id
            LIMIT batch_size
        ), inserted AS (
            INSERT INTO bench_blnk.balance_snapshots (
                balance_id, ledger_id, balance, credit_balance, debit_balance, inflight_balance,
                inflight_credit_balance, inflight_debit_balance, currency, snapshot_time, created_at,
                last_tx_id, meta_data)
            SELECT b.balance_id, b.ledger_id, b.balance, b.credit_balance, b.debit_balance, b.inflight_balance,
                   b.inflight_credit_balance, b.inflight_debit_balance, b.currency, DATE_TRUNC('day', NOW()),
                   b.created_at,
                   COALESCE((
                       SELECT t.transaction_id
                       FROM blnk.transactions t
                       WHERE t.source = b.balance_id OR t.destination = b.balance_id
                       ORDER BY t.created_at DESC
                       LIMIT 1
                   ), NULL),
                   b.meta_data
            FROM batch b
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM inserted), (SELECT max(id) FROM batch)
          INTO v_batch_count, v_batch_last_id;
        v_total_processed := v_total_processed + v_batch_count;
        EXIT WHEN v_batch_count = 0 OR v_batch_last_id IS NULL OR v_batch_last_id >= v_stop_id;
        v_last_processed_id := v_batch_last_id;
    END LOOP;
    RETURN v_total_processed;
END;
$$;
"""


BLNK_PRIOR_DAY = """
INSERT INTO bench_blnk.balance_snapshots (
    balance_id, ledger_id, balance, credit_balance, debit_balance, inflight_balance, inflight_credit_balance,
    inflight_debit_balance, currency, snapshot_time, created_at, last_tx_id, meta_data)
SELECT balance_id, ledger_id, balance, credit_balance, debit_balance, inflight_balance, inflight_credit_balance,
       inflight_debit_balance, currency, DATE_TRUNC('day', NOW()) - interval '1 day', created_at, NULL, meta_data
FROM blnk.balances
"""


def measure_blnk(url: str, sample: int) -> dict:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        total = conn.execute("SELECT count(*) FROM blnk.balances").fetchone()[0]
        conn.execute(BLNK_DDL)
        conn.execute(BLNK_FUNCTION)
        # Steady state of a daily job: yesterday's snapshot of every balance is already there, analyzed.
        # (On an empty, freshly analyzed table the cached plan of the NOT EXISTS probe is a sequential
        # scan per balance and the run turns quadratic; that first-run pathology is not what we compare to.)
        started = time.perf_counter()
        conn.execute(BLNK_PRIOR_DAY)
        conn.execute("VACUUM ANALYZE bench_blnk.balance_snapshots")
        prior_seconds = time.perf_counter() - started
        limit = total if sample <= 0 else min(sample, total)
        plan = [row[0] for row in conn.execute(
            "EXPLAIN SELECT (SELECT t.transaction_id FROM blnk.transactions t"
            " WHERE t.source = b.balance_id OR t.destination = b.balance_id ORDER BY t.created_at DESC LIMIT 1)"
            " FROM blnk.balances b WHERE b.id <= 1000"
        )]
        started = time.perf_counter()
        rows = conn.execute("SELECT bench_blnk.take_daily_balance_snapshots_batched(%s, %s)",
                            (BLNK_BATCH_SIZE, limit)).fetchone()[0]
        seconds = time.perf_counter() - started
        conn.execute("DROP SCHEMA bench_blnk CASCADE")
    rate = rows / seconds if seconds else None
    sampled = limit < total
    return {"batch_size": BLNK_BATCH_SIZE, "balances_total": total, "balances_measured": limit, "rows": rows,
            "seconds": seconds, "rows_per_second": rate, "sampled": sampled,
            "extrapolated_full_seconds": total / rate if rate else None, "latest_tx_subquery_plan": plan,
            "prior_day_rows": total, "prior_day_load_seconds": prior_seconds}


# ====================================================================== (c), (d) take_snapshot per batch size


def reset_store(ledger_url: str, storage: Path) -> None:
    """Forget every partition: drop the snapshot index schema and empty the Parquet root."""
    import psycopg

    with psycopg.connect(ledger_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS snapshot_index CASCADE")
    shutil.rmtree(storage, ignore_errors=True)
    storage.mkdir(parents=True)


def measure_pipeline(ledger_url: str, work: Path, genesis_date: dt.date, batch_size: int,
                     fingerprint: str | None = None) -> dict:
    """(d) genesis of ``genesis_date`` in an empty store, then (c) the next day on top of it."""
    storage = work / "snapshots"
    reset_store(ledger_url, storage)
    genesis = run_worker(ledger_url, storage, work, genesis_date, batch_size)
    incremental = run_worker(ledger_url, storage, work, genesis_date + dt.timedelta(days=1), batch_size)
    warnings = []
    if genesis["mode"] != "genesis":
        warnings.append(f"(d) ran in mode {genesis['mode']!r}, expected 'genesis'")
    if incremental["mode"] != "incremental" or incremental["base_date"] != genesis_date.isoformat():
        warnings.append(f"(c) ran in mode {incremental['mode']!r} with base {incremental['base_date']},"
                        f" expected 'incremental' on {genesis_date}")
    for label, run in (("(d)", genesis), ("(c)", incremental)):
        if fingerprint and run.get("code_fingerprint") != fingerprint:
            warnings.append(f"{label} ran on different snapshot_pipeline sources ({run.get('code_fingerprint')})"
                            f" than the run started with ({fingerprint})")
    for w in warnings:
        log("WARNING: " + w)
    return {"batch_size": batch_size, "genesis": genesis, "incremental": incremental, "warnings": warnings}


# ============================================================ the whole command, balances_at, indexes, dbt


def measure_command(ledger_url: str, admin_url: str, dagster_db: str, storage: Path, home: Path, date: dt.date,
                    start: dt.date, batch_size: int) -> dict:
    """``snapshot-pipeline snapshot --date`` in its own process: a Dagster run with the asset's checks."""
    from snapshot_pipeline import db

    dagster_url = create_database(admin_url, dagster_db)
    env = {**os.environ, "LEDGER_DATABASE_URL": ledger_url, "SNAPSHOT_DATABASE_URL": ledger_url,
           "SNAPSHOT_STORAGE_URI": str(storage), "SNAPSHOT_HOME": str(home), "SNAPSHOT_TIMEZONE": "UTC",
           "SNAPSHOT_START_DATE": start.isoformat(), "DAGSTER_PG_URL": dagster_url}
    env.pop("DAGSTER_HOME", None)
    # as a user's install runs it: without the test-only packages that pyarrow and ADBC import when present
    cli = [sys.executable, str(Path(__file__).with_name("runtime_only.py"))]
    # untimed: the new Dagster database's tables are created (about 1 s, once per instance) by a command that
    # opens the instance and has nothing to do, so the timed command starts as every later one on it does
    warm = subprocess.run([*cli, "doctor"], env=env, capture_output=True, text=True)
    if warm.returncode != 0:
        log(f"snapshot-pipeline doctor failed ({warm.returncode}): {warm.stderr[-2000:]}")
    command = [*cli, "snapshot", "--date", date.isoformat(), "--batch-size", str(batch_size)]
    wall_start = time.time()
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        log(f"snapshot command failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return {"seconds": seconds, "ok": False, "error": proc.stderr[-2000:], "database": db.redact(dagster_url)}
    out = json.loads(proc.stdout[proc.stdout.index("{"):])
    return {"seconds": seconds, "ok": True, "rows": out.get("dagster/row_count"), "mode": out.get("mode"),
            "asset_duration_ms": out.get("duration_ms"),
            # the live-drift comparison the asset makes in its own view for the live_balances_match check
            "live_drift_in_asset_ms": (out.get("phase_ms") or {}).get("live_drift_ms"),
            **run_timeline(dagster_url, wall_start, wall_start + seconds)}


def run_timeline(dagster_url: str, process_start: float, process_end: float) -> dict:
    """Where the command's time went, from the run's event log: each step's duration (the asset's step and the
    check steps), the time before the first step starts (start-up: imports, instance, run launch) and after
    the last one ends."""
    import psycopg

    from snapshot_pipeline import names

    with psycopg.connect(dagster_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT step_key, dagster_event_type, extract(epoch FROM timestamp)::float8 FROM event_logs"
            " WHERE dagster_event_type IN ('STEP_START', 'STEP_SUCCESS', 'STEP_FAILURE') ORDER BY id").fetchall()
    starts: dict[str, float] = {}
    steps: dict[str, float] = {}
    for step, kind, at in rows:
        if kind == "STEP_START":
            starts[step] = at
        elif step in starts:
            steps[step] = at - starts[step]
    if not starts:
        return {"steps_seconds": {}}
    first = min(starts.values())
    last = max(starts[s] + steps.get(s, 0.0) for s in starts)
    checks = sum(v for k, v in steps.items() if k != names.ASSET_NAME)  # every other step of the run is a check
    return {"steps_seconds": steps, "before_first_step_seconds": first - process_start,
            "after_last_step_seconds": process_end - last, "check_steps_seconds": checks}


def measure_balances_at(ledger_url: str, storage: Path, home: Path, at: dt.datetime,
                        repeats: int = BALANCES_AT_REPEATS) -> dict:
    """``repeats`` fresh worker processes; ``seconds`` is their median. The first is reported apart: it follows
    the floors' writes (and before them the runs'), which the server and the OS may still be flushing."""
    runs = [run_worker(ledger_url, storage, home, at.date(), 1000, kind="balances_at", at=at.isoformat())
            for _ in range(repeats)]
    seconds = [r["seconds"] for r in runs]
    return {**runs[0], "seconds": statistics.median(seconds), "first_seconds": seconds[0], "runs_seconds": seconds,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def create_offered_indexes(url: str) -> dict:
    import psycopg

    from snapshot_pipeline.ledger import indexes

    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        created = indexes.create_missing(conn, log=lambda m: None)
        conn.execute("ANALYZE blnk.transactions")
    return {"created": created, "seconds": time.perf_counter() - started}


def day_of_updates(url: str, day: dt.date) -> int:
    """What a day of Blnk activity does to the live rows: every balance its legs touch is updated."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(
            "UPDATE blnk.balances SET version = version + 1 WHERE balance_id IN ("
            " SELECT source FROM blnk.transactions WHERE created_at >= %(d)s AND created_at < %(e)s"
            " UNION SELECT destination FROM blnk.transactions WHERE created_at >= %(d)s AND created_at < %(e)s)",
            {"d": dt.datetime.combine(day, dt.time()), "e": dt.datetime.combine(day, dt.time()) + dt.timedelta(days=1)})
        changed = cur.rowcount
        conn.execute("VACUUM ANALYZE blnk.balances")
    return changed


DBT_SNAPSHOT = """{% snapshot balances_snapshot %}
{{ config(target_schema='bench_dbt', unique_key='balance_id', strategy='check', check_cols='all') }}
select balance_id, ledger_id, identity_id, indicator, currency, balance, credit_balance, debit_balance,
       inflight_balance, inflight_credit_balance, inflight_debit_balance, created_at, version
from blnk.balances
{% endsnapshot %}
"""


def ensure_dbt() -> Path | None:
    """dbt in its own virtual environment (its pins do not mix with Dagster's); None when it cannot be had."""
    dbt = DBT_VENV / "bin" / "dbt"
    if dbt.exists():
        return dbt
    log(f"installing {', '.join(DBT_REQUIREMENTS)} into {DBT_VENV} ...")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(DBT_VENV)], check=True)
        subprocess.run([str(DBT_VENV / "bin" / "pip"), "install", "--quiet", *DBT_REQUIREMENTS], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        log(f"dbt unavailable ({exc}); (e) skipped")
        return None
    return dbt


def measure_dbt(url: str, work: Path, day: dt.date) -> dict | None:
    """(e) dbt snapshot, check strategy, of the live balances: a first run, a day's updates, the timed run."""
    from urllib.parse import urlsplit

    dbt = ensure_dbt()
    if dbt is None:
        return None
    parts = urlsplit(url)
    project = work / "dbt_bench"
    (project / "snapshots").mkdir(parents=True, exist_ok=True)
    (project / "dbt_project.yml").write_text(
        "name: bench_snapshot\nversion: '1.0'\nconfig-version: 2\nprofile: bench_snapshot\n"
        "snapshot-paths: ['snapshots']\n")
    (project / "snapshots" / "balances.sql").write_text(DBT_SNAPSHOT)
    (project / "profiles.yml").write_text(
        "bench_snapshot:\n  target: bench\n  outputs:\n    bench:\n      type: postgres\n"
        f"      host: {parts.hostname or 'localhost'}\n      port: {parts.port or 5432}\n"
        f"      user: {parts.username or 'postgres'}\n      password: '{parts.password or ''}'\n"
        f"      dbname: {parts.path.lstrip('/')}\n      schema: bench_dbt\n      threads: 1\n")
    command = [str(dbt), "snapshot", "--project-dir", str(project), "--profiles-dir", str(project), "--quiet"]

    def run() -> dict:
        started = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, cwd=project)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"dbt snapshot failed: {proc.stdout[-1500:]} {proc.stderr[-1500:]}")
        results = json.loads((project / "target" / "run_results.json").read_text())
        node = results["results"][0]
        return {"seconds": seconds, "snapshot_step_seconds": node["execution_time"]}

    first = run()
    changed = day_of_updates(url, day)
    second = run()
    return {"first_run": first, "balances_updated": changed, "seconds": second["seconds"],
            "snapshot_step_seconds": second["snapshot_step_seconds"], "dbt": str(dbt)}


# ============================================================================================ reporting


def fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def fmt_count(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def fmt_seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def render(report: dict) -> str:
    a, b, per, ledger = report["copy"], report["blnk"], report["batches"], report["ledger"]
    lines = [
        "",
        f"snapshot benchmark  {report['started_at']}  host {report['machine']['node']}"
        f" ({report['machine']['cpus']} cpus), PostgreSQL {report['server_version']};"
        f" load average {report['machine']['load_average'][0]:.1f} at start,"
        f" {report['machine_at_end']['load_average'][0]:.1f} at end",
        f"ledger: {ledger['balances']:,} balances, {ledger['transaction_rows']:,} transaction rows"
        f" ({ledger['days']} days from {ledger['start_date']}, seed {ledger['seed']}), Blnk's index set;"
        f" seeded in {ledger['seconds']:.0f} s",
        f"code: {(report['code']['commit'] or 'unknown')[:12]} (sources {report['code']['fingerprint']})"
        f"{' + uncommitted changes in snapshot_pipeline/' if report['code']['snapshot_pipeline_dirty'] else ''}",
        f"partitions: (d) genesis {report['genesis_date']} in an empty store; (c) {report['incremental_date']}"
        " rolled forward from it",
        "",
        f"(a) raw COPY balances TO STDOUT (binary)     : {fmt_rate(a['rows_per_second']):>12} rows/s"
        f"  ({a['rows']:,} rows in {a['seconds']:.2f} s, best of {a['repeats']})",
    ]
    if b is None:
        lines.append("(b) Blnk-style batched INSERT ... SELECT     : skipped")
    else:
        sampled = f"; first {b['balances_measured']:,} balances, extrapolated" if b["sampled"] else ""
        lines.append(f"(b) Blnk-style batched INSERT ... SELECT     : {fmt_rate(b['rows_per_second']):>12} rows/s"
                     f"  ({b['rows']:,} rows in {b['seconds']:.2f} s{sampled})")
    e = report.get("dbt")
    if e is None:
        lines.append("(e) dbt snapshot (check strategy)           : skipped")
    else:
        lines.append(f"(e) dbt snapshot (check strategy), 2nd run   :"
                     f" {e['snapshot_step_seconds']:>10.2f} s snapshot step"
                     f" ({e['seconds']:.1f} s with dbt start-up; {e['balances_updated']:,} live rows updated)")
    fl = report.get("floor")
    if fl:
        day, gen = fl["day"], fl["genesis"]
        lines.append(f"floor of (c): {day['seconds']:.2f} s = pyarrow read + write of the base partition"
                     f" {day['parquet_read_write_seconds']:.2f} s ({day['parquet_rows']:,} rows) + binary COPY of the"
                     f" day's journal rows {day['journal_copy_seconds']:.2f} s ({day['journal_rows']:,} ids)")
        lines.append(f"floor of (d): {gen['seconds']:.2f} s = binary COPY of the journal"
                     f" {gen['journal_copy_seconds']:.2f} s + pyarrow write {gen['parquet_write_seconds']:.2f} s")
    lines.append("")
    header = (f"{'batch':>7} | {'(c) rows/s':>11} | {'(c) s':>6} | {'(d) rows/s':>11} | {'(d) s':>6} |"
              f" {'c/a':>5} | {'c/b':>7} | {'RSS c MB':>8} | {'RSS d MB':>8} | c phases (ms)")
    lines += [header, "-" * len(header)]
    for entry in per:
        c, d = entry["incremental"], entry["genesis"]
        lines.append(
            f"{entry['batch_size']:>7} | {fmt_rate(c['rows_per_second']):>11} | {c['seconds']:>6.2f} |"
            f" {fmt_rate(d['rows_per_second']):>11} | {d['seconds']:>6.2f} | {fmt_ratio(entry['c_over_a']):>5} |"
            f" {fmt_ratio(entry['c_over_b']):>7} | {c['peak_rss_mb']:>8.0f} | {d['peak_rss_mb']:>8.0f} |"
            f" {c.get('phases_ms')}")
        lines.append(f"        (c): {c['rows']:,} rows, {fmt_count(c['delta_balances'])} journal rows rolled in,"
                     f" {c['index_rows_written']:,} index rows, {c['bytes_written'] / 1e6:.1f} MB Parquet,"
                     f" state {c.get('roll_forward_state')}, balanced {c.get('balanced')}")
        for w in entry["warnings"]:
            lines.append(f"    WARNING: {w}")
    lines.append("")
    extra = report["extra"]
    if extra.get("command"):
        cmd = extra["command"]
        lines.append(f"whole `snapshot` command (Dagster run + checks), same day : {cmd['seconds']:.1f} s"
                     f" ({'ok' if cmd['ok'] else 'FAILED'}; asset {cmd.get('asset_duration_ms')} ms)")
        if cmd.get("steps_seconds"):
            steps = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(cmd["steps_seconds"].items(), key=lambda kv: -kv[1]))
            lines.append(f"  before the first step {cmd['before_first_step_seconds']:.1f} s; steps: {steps};"
                         f" after the last step {cmd['after_last_step_seconds']:.1f} s;"
                         f" live-drift comparison inside the asset step {cmd.get('live_drift_in_asset_ms')} ms")
    if extra.get("with_indexes"):
        wi = extra["with_indexes"]
        lines.append(f"(c) with ledger-indexes' read indexes ({len(wi['indexes']['created'])} created in"
                     f" {wi['indexes']['seconds']:.0f} s): {fmt_rate(wi['run']['rows_per_second'])} rows/s,"
                     f" {wi['run']['seconds']:.2f} s")
    if extra.get("balances_at"):
        ba = extra["balances_at"]
        runs = ", ".join(f"{x:.2f}" for x in ba.get("runs_seconds", [ba["seconds"]]))
        lines.append(f"(f) balances_at, every balance at {ba['at']}: {ba['seconds']:.2f} s (median of {runs} s; the"
                     f" first follows the floors' writes) for {ba['rows']:,} rows (anchor {ba['anchor_date']},"
                     f" {ba['replayed_balances']:,} balances in the delta, peak RSS {ba['peak_rss_mb']:.0f} MB)")
    if extra.get("history"):
        h = extra["history"]
        hc = h["incremental"]
        lines.append(f"(g) {HISTORY_FACTOR}x history ({h['ledger']['transaction_rows']:,} rows,"
                     f" {h['ledger']['days']} days):"
                     f" (c) {hc['seconds']:.2f} s, {fmt_rate(hc['rows_per_second'])} rows/s;"
                     f" genesis {h['genesis']['seconds']:.1f} s")
    lines.append("")
    for target in report["targets"]:
        lines.append(target["line"])
    return "\n".join(lines)


def evaluate_targets(report: dict) -> list[dict]:
    per = report["batches"]
    basis = next((e for e in per if e["batch_size"] == 1000), per[0])
    c = basis["incremental"]
    extra = report["extra"]
    out = []

    def target(label: str, value: float | None, ok: bool | None, detail: str) -> None:
        status = "n/a" if value is None else verdict(bool(ok))
        out.append({"target": label, "status": status, "value": value,
                    "line": f"target {label}: {status} ({detail})"})

    fl = report.get("floor") or {}
    cf = ratio(c["seconds"], fl["day"]["seconds"]) if fl.get("day") else None
    target("(c) <= 3 x its floor", cf, cf is not None and cf <= TARGET_VS_FLOOR,
           f"(c) / floor = {fmt_ratio(cf)}" + (f" ({c['seconds']:.2f} s / {fl['day']['seconds']:.2f} s)" if cf else ""))
    gf = ratio(basis["genesis"]["seconds"], fl["genesis"]["seconds"]) if fl.get("genesis") else None
    target("(d) genesis <= 3 x its floor", gf, gf is not None and gf <= TARGET_VS_FLOOR,
           f"(d) / floor = {fmt_ratio(gf)}")
    cb = basis["c_over_b"]
    target("c >= 100 x b", cb, cb is not None and cb >= TARGET_VS_BLNK, f"c/b = {fmt_ratio(cb)}")
    cmd = extra.get("command")
    ok_cmd = bool(cmd and cmd["ok"] and cmd.get("asset_duration_ms") is not None)
    over = cmd["seconds"] - cmd["asset_duration_ms"] / 1000 if ok_cmd else None
    target("whole snapshot command <= asset + 3 s", over, over is not None and over <= TARGET_COMMAND_EXTRA_SECONDS,
           f"command - asset = {over:.1f} s" if over is not None else "not measured")
    from snapshot_pipeline import names

    asset_step = cmd["steps_seconds"].get(names.ASSET_NAME) if ok_cmd and cmd.get("steps_seconds") else None
    ck = ratio(cmd["check_steps_seconds"], asset_step) if asset_step else None
    target("checks in the run <= 0.25 x the asset", ck, ck is not None and ck <= TARGET_CHECKS,
           f"check steps / asset step = {fmt_ratio(ck)}")
    in_asset = (cmd.get("live_drift_in_asset_ms") or 0) / 1000 if ok_cmd else 0.0
    cka = ratio(cmd["check_steps_seconds"] + in_asset, asset_step - in_asset) if asset_step else None
    target("  the same, counting the live comparison made inside the asset step as a check", cka,
           cka is not None and cka <= TARGET_CHECKS,
           f"(check steps + {in_asset:.2f} s) / (asset step - {in_asset:.2f} s) = {fmt_ratio(cka)}")
    e = report.get("dbt")
    de = ratio(e["seconds"], cmd["seconds"]) if e and ok_cmd else None
    target("whole command >= 3 x faster than dbt's whole process", de, de is not None and de >= TARGET_VS_DBT_PROCESS,
           f"dbt process / command = {fmt_ratio(de)}")
    h = extra.get("history")
    hh = ratio(h["incremental"]["seconds"], c["seconds"]) if h else None
    target(f"c on {HISTORY_FACTOR}x history <= 1.2 x c", hh, hh is not None and hh <= TARGET_HISTORY,
           f"ratio = {fmt_ratio(hh)}")
    ba = extra.get("balances_at")
    target("balances_at at mid-day <= 1.5 s", ba and ba["seconds"],
           ba is not None and ba["seconds"] <= TARGET_BALANCES_AT_SECONDS,
           f"{ba['seconds']:.2f} s" if ba else "not measured")
    return out


def write_json(report: dict, stem: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{stem}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    return path


def machine_info() -> dict:
    return {"node": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "load_average": os.getloadavg()}


def freeze_sources() -> Path:
    """Copy snapshot_pipeline/ to a temp dir and import it from there, here and in every worker.

    A run takes many minutes; if the package is edited meanwhile, workers started later would
    import the new code and one table would mix versions. The frozen copy is what the run measures.
    """
    root = Path(tempfile.mkdtemp(prefix="bench_snapshot_src_"))
    shutil.copytree(HERE.parent / "snapshot_pipeline", root / "snapshot_pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, str(root))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    return root


def code_fingerprint() -> str:
    """sha256 of the snapshot_pipeline sources this process imports (the frozen copy in a run)."""
    import snapshot_pipeline

    digest = hashlib.sha256()
    package = Path(snapshot_pipeline.__file__).resolve().parent
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".sql") and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def code_revision() -> dict:
    """The commit of the code under test and whether snapshot_pipeline/ has uncommitted changes."""
    root = HERE.parent

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    import snapshot_pipeline

    status = git("status", "--porcelain", "--", "snapshot_pipeline")
    return {"commit": git("rev-parse", "HEAD"), "snapshot_pipeline_dirty": bool(status) if status is not None else None,
            "snapshot_pipeline_status": status, "fingerprint": code_fingerprint(),
            "imported_from": str(Path(snapshot_pipeline.__file__).resolve().parent)}


def server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


# ================================================================================================ modes


def bench_main(args) -> int:
    from snapshot_pipeline import db

    started_at = dt.datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    stem = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    admin_url = server_url(args)
    name = f"bench_snapshot_{stem.replace('-', '_')}_{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="bench_snapshot_"))
    log(f"server {db.redact(admin_url)}; database {name}; work dir {work}")
    url = create_database(admin_url, name)
    created = [name]
    genesis_date, last_day = last_two_days(args)
    revision = code_revision()
    machine_at_start = machine_info()
    extra: dict = {}
    try:
        ledger = seed(url, args.balances, args.transactions, args.days, args.seed, args.start_date)
        ledger.update({"days": args.days, "seed": args.seed, "start_date": args.start_date.isoformat()})
        log("(a) raw COPY TO STDOUT ...")
        copy = measure_copy(url)
        log(f"(a) {copy['rows_per_second']:,.0f} rows/s")
        blnk = None
        if args.blnk_sample >= 0:
            log(f"(b) Blnk-style INSERT ... SELECT over "
                f"{'all' if args.blnk_sample == 0 else f'at most {args.blnk_sample:,}'} balances ...")
            blnk = measure_blnk(url, args.blnk_sample)
            log(f"(b) {blnk['rows_per_second']:,.0f} rows/s ({blnk['rows']:,} rows in {blnk['seconds']:.1f} s)")
        per = []
        for batch_size in args.batch_sizes:
            log(f"(d)+(c) take_snapshot, batch size {batch_size:,} ...")
            entry = measure_pipeline(url, work, genesis_date, batch_size, revision["fingerprint"])
            entry["c_over_a"] = ratio(entry["incremental"]["rows_per_second"], copy["rows_per_second"])
            entry["c_over_b"] = ratio(entry["incremental"]["rows_per_second"], blnk and blnk["rows_per_second"])
            log(f"  (d) {entry['genesis']['seconds']:.1f} s, peak RSS {entry['genesis']['peak_rss_mb']:.0f} MB;"
                f" (c) {entry['incremental']['rows_per_second']:,.0f} rows/s"
                f" in {entry['incremental']['seconds']:.2f} s,"
                f" peak RSS {entry['incremental']['peak_rss_mb']:.0f} MB, phases {entry['incremental']['phases_ms']}")
            per.append(entry)
        basis_batch = 1000 if 1000 in args.batch_sizes else args.batch_sizes[0]
        if basis_batch != args.batch_sizes[-1]:  # leave the store as the basis batch size made it
            measure_pipeline(url, work, genesis_date, basis_batch, revision["fingerprint"])
        storage = work / "snapshots"
        log("floor: pyarrow re-read + re-write of the base partition, binary COPY of the day's journal rows ...")
        floors = {"day": floor.day_floor(url, storage, genesis_date, last_day),
                  "genesis": floor.genesis_floor(url, storage, genesis_date)}
        log(f"  day floor {floors['day']['seconds']:.2f} s, genesis floor {floors['genesis']['seconds']:.2f} s")
        log("(f) balances_at at mid-day of the last day ...")
        extra["balances_at"] = measure_balances_at(url, storage, work, dt.datetime.combine(last_day, dt.time(12)))
        log(f"(f) {extra['balances_at']['seconds']:.2f} s")
        if not args.skip_command:
            log("whole snapshot command for the last day ...")
            created.append(f"{name}_dagster")
            extra["command"] = measure_command(url, admin_url, f"{name}_dagster", storage, work, last_day,
                                               args.start_date, basis_batch)
            log(f"  {extra['command']['seconds']:.1f} s")
        if not args.skip_indexes:
            log("(c) again with the read indexes ledger-indexes offers ...")
            indexes_made = create_offered_indexes(url)
            run = run_worker(url, storage, work, last_day, basis_batch)
            extra["with_indexes"] = {"indexes": indexes_made, "run": run}
            log(f"  {run['seconds']:.2f} s")
        if not args.skip_dbt:
            log("(e) dbt snapshot of the live balances ...")
            extra["dbt"] = measure_dbt(url, work, last_day)
            if extra["dbt"]:
                log(f"(e) snapshot step {extra['dbt']['snapshot_step_seconds']:.2f} s")
        if not args.keep:  # the history ledger needs the disk; --keep leaves this one for a later look
            drop_database(admin_url, name)
            created.remove(name)
        if HISTORY_FACTOR and not args.skip_history:
            history_name = f"{name}_history"
            history_days = args.days * HISTORY_FACTOR
            history_start = last_day - dt.timedelta(days=history_days - 1)
            log(f"(g) a second ledger: the same daily activity, {HISTORY_FACTOR}x the history ...")
            history_url = create_database(admin_url, history_name)
            created.append(history_name)
            history_ledger = seed(history_url, args.balances, args.transactions * HISTORY_FACTOR, history_days,
                                  args.seed, history_start)
            history_ledger.update({"days": history_days, "start_date": history_start.isoformat()})
            entry = measure_pipeline(history_url, work / "history", genesis_date, basis_batch, revision["fingerprint"])
            extra["history"] = {"ledger": history_ledger, **entry}
            log(f"(g) (c) {entry['incremental']['seconds']:.2f} s")
        report = {
            "benchmark": "bench_snapshot", "started_at": started_at, "finished_at": dt.datetime.now().isoformat(),
            "argv": sys.argv[1:], "server": db.redact(admin_url), "server_version": server_version(admin_url),
            "machine": machine_at_start, "machine_at_end": machine_info(), "ledger": ledger,
            "genesis_date": genesis_date.isoformat(), "incremental_date": last_day.isoformat(),
            "copy": copy, "blnk": blnk, "batches": per, "dbt": extra.pop("dbt", None), "extra": extra,
            "floor": floors,
            "code": revision, "code_at_end": code_revision(),
        }
        report["targets"] = evaluate_targets(report)
        print(render(report), flush=True)
        path = write_json(report, stem)
        print(f"\nresults written to {path}")
    finally:
        for database in created:
            if args.keep:
                log(f"--keep: database {database} left in place")
            else:
                drop_database(admin_url, database)
        if args.keep:
            log(f"--keep: work dir {work} left in place")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def rss_scaling_main(args) -> int:
    from snapshot_pipeline import db

    started_at = dt.datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    stem = dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-rss-scaling"
    admin_url = server_url(args)
    genesis_date = args.start_date + dt.timedelta(days=args.days - 2)
    revision = code_revision()
    runs = []
    for balances in RSS_SCALING_SIZES:
        name = f"bench_snapshot_rss_{balances}_{os.getpid()}"
        work = Path(tempfile.mkdtemp(prefix="bench_snapshot_rss_"))
        log(f"RSS scaling: {balances:,} balances; database {name} on {db.redact(admin_url)}")
        url = create_database(admin_url, name)
        try:
            ledger = seed(url, balances, 5 * balances, args.days, args.seed, args.start_date)
            entry = measure_pipeline(url, work, genesis_date, RSS_SCALING_BATCH, revision["fingerprint"])
            c = entry["incremental"]
            log(f"  (c) {c['rows']:,} rows in {c['seconds']:.1f} s, peak RSS {c['peak_rss_mb']:.0f} MB")
            runs.append({"balances": balances, "transactions": 5 * balances, "ledger": ledger, **entry})
        finally:
            if args.keep:
                log(f"--keep: database {name} and work dir {work} left in place")
            else:
                drop_database(admin_url, name)
                shutil.rmtree(work, ignore_errors=True)
    small, large = runs[0]["incremental"], runs[-1]["incremental"]
    growth = large["peak_rss_mb"] - small["peak_rss_mb"]
    growth_d = runs[-1]["genesis"]["peak_rss_mb"] - runs[0]["genesis"]["peak_rss_mb"]
    lines = ["", f"RSS scaling of (c) incremental take_snapshot, batch size {RSS_SCALING_BATCH}"
                 f" (transactions = 5 x balances)  {started_at}",
             f"code: {(revision['commit'] or 'unknown')[:12]} (sources {revision['fingerprint']})",
             f"{'balances':>10} | {'rows':>10} | {'(c) s':>7} | {'(c) rows/s':>10} | {'peak RSS c MB':>13} |"
             f" {'peak RSS d MB':>13}"]
    lines.append("-" * len(lines[-1]))
    for run in runs:
        c, d = run["incremental"], run["genesis"]
        lines.append(f"{run['balances']:>10,} | {c['rows']:>10,} | {c['seconds']:>7.2f} |"
                     f" {fmt_rate(c['rows_per_second']):>10} |"
                     f" {c['peak_rss_mb']:>13.0f} | {d['peak_rss_mb']:>13.0f}")
    for run in runs:
        for w in run["warnings"]:
            lines.append(f"  WARNING ({run['balances']:,} balances): {w}")
    lines.append("")
    lines.append(f"peak RSS growth of (c) from {RSS_SCALING_SIZES[0]:,} to {RSS_SCALING_SIZES[-1]:,} balances:"
                 f" {growth:+.0f} MB ((d) genesis: {growth_d:+.0f} MB)")
    target_line = (f"target RSS growth of (c) < {RSS_GROWTH_TARGET_MB:.0f} MB: "
                   f"{verdict(growth < RSS_GROWTH_TARGET_MB)} ({growth:+.0f} MB)")
    lines.append(target_line)
    print("\n".join(lines), flush=True)
    report = {"benchmark": "bench_snapshot --rss-scaling", "started_at": started_at,
              "finished_at": dt.datetime.now().isoformat(), "argv": sys.argv[1:], "server": db.redact(admin_url),
              "machine": machine_info(), "code": revision, "code_at_end": code_revision(),
              "batch_size": RSS_SCALING_BATCH, "runs": runs,
              "growth_mb": growth, "genesis_growth_mb": growth_d,
              "target": {"line": target_line, "status": verdict(growth < RSS_GROWTH_TARGET_MB)}}
    path = write_json(report, stem)
    print(f"\nresults written to {path}")
    return 0


# ================================================================================================== CLI


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch-sizes wants integers separated by commas, got {text!r}") from None
    if not sizes or any(not 1 <= s <= 1_000_000 for s in sizes):
        raise argparse.ArgumentTypeError("each batch size must be an integer from 1 to 1,000,000")
    return sizes


def _count(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:,}, got {value:,}")
        return value

    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--balances", type=_count(9), default=DEFAULT_BALANCES, help="balances to seed (default 1,000,000)")
    p.add_argument("--transactions", type=_count(0), default=DEFAULT_TRANSACTIONS,
                   help="transactions to seed (default 5,000,000; inflight children come on top)")
    p.add_argument("--days", type=_count(2), default=DEFAULT_DAYS, help="days of history (default 30)")
    p.add_argument("--start-date", type=dt.date.fromisoformat, default=DEFAULT_START_DATE,
                   help=f"first day of the seeded ledger (default {DEFAULT_START_DATE})")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed (default 42)")
    p.add_argument("--batch-sizes", type=_batch_sizes, default=list(DEFAULT_BATCH_SIZES),
                   help="batch sizes of (c)/(d), comma separated (default 1000,100000)")
    p.add_argument("--blnk-sample", type=int, default=DEFAULT_BLNK_SAMPLE,
                   help="(b) runs over the first N balances and extrapolates rows/s (default 50,000;"
                        " 0 = all balances; -1 = skip (b))")
    add_server_arguments(p)
    p.add_argument("--skip-dbt", action="store_true", help="skip (e), the dbt snapshot baseline")
    p.add_argument("--skip-history", action="store_true",
                   help=f"skip (g), the ledger with {HISTORY_FACTOR}x the history")
    p.add_argument("--skip-command", action="store_true", help="skip timing the whole snapshot command")
    p.add_argument("--skip-indexes", action="store_true", help="skip (c) with the read indexes ledger-indexes offers")
    p.add_argument("--rss-scaling", action="store_true",
                   help="measure peak RSS of (c) at batch size 1000 for 100k and 1M balances (5x transactions)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        return worker_main(args.worker)
    frozen = freeze_sources()
    try:
        if args.rss_scaling:
            return rss_scaling_main(args)
        return bench_main(args)
    finally:
        shutil.rmtree(frozen, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
