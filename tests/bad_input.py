"""Shared by the bad-input tests (CLI and HTTP): a small ledger with one unrepresentable amount, URLs
carrying a password, the CLI run as a subprocess, and the proofs that nothing was written (no Dagster run,
no index row, no file)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from snapshot_pipeline.ledger import generator
from tests.helpers import insert_transaction

PASSWORD = "Hunter2Secret"
HUGE = 10**70  # beyond decimal256(60, 0), the widened arithmetic, and far beyond decimal128(38, 0)
SMALL = generator.LedgerSpec(balances=60, transactions=3000, days=5, seed=13, start_date=dt.date(2026, 10, 25))
HUGE_AT = dt.datetime(2026, 10, 26, 12)
RANGE = "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z"


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "SNAPSHOT_", "DAGSTER_"))}
    full_env.update(env)
    return subprocess.run([sys.executable, "-m", "snapshot_pipeline.cli", *args], env=full_env,
                          capture_output=True, text=True, timeout=120)


def with_password(url: str, scheme: str | None = None, password: str = PASSWORD) -> str:
    """``url`` with ``password`` in its user info (the test server trusts loopback, so it still connects)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{parts.username or 'postgres'}:{password}@{parts.hostname}{port}"
    return urlunsplit(parts._replace(scheme=scheme or parts.scheme, netloc=netloc))


def seed_small_ledger(url: str) -> dict:
    """The small ledger plus one APPLIED leg of 10^70 between two early balances.

    Returns the balance ids: ``source`` and ``destination`` of the huge leg, and ``plain``, a balance
    whose amounts are ordinary.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        generator.generate(conn, SMALL, progress=False)
        ids = [r[0] for r in conn.execute(
            "SELECT balance_id FROM blnk.balances WHERE currency = 'USD' AND created_at < %s ORDER BY balance_id"
            " LIMIT 3", (HUGE_AT - dt.timedelta(hours=12),))]
    insert_transaction(url, ids[0], ids[1], HUGE, created_at=HUGE_AT)
    return {"source": ids[0], "destination": ids[1], "plain": ids[2]}


def files_under(path: Path) -> list[str]:
    """Every file and directory under ``path`` (empty when nothing was written there)."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def dagster_runs(url: str) -> int:
    """Runs recorded in the Dagster instance stored at ``url`` (0 when its tables were never created)."""
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('public.runs')").fetchone()[0] is None:
            return 0
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0]


def index_rows(url: str) -> int:
    """Manifest and per-balance rows of the snapshot index at ``url`` (0 when it was never migrated)."""
    with psycopg.connect(url) as conn:
        total = 0
        for table in ("snapshot_index.partitions", "snapshot_index.balance_snapshots"):
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None:
                total += conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return total


def assert_one_clean_line(text: str) -> str:
    """``text`` (a CLI's stderr or an HTTP error message) is one line, no traceback, no password."""
    assert "Traceback" not in text, text
    assert PASSWORD not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]
