"""``demo`` on a fresh home: partitions start at the seeded ledger's first day, and every line it prints under
"Try next" runs as printed (the servers come up on the port the line names, moved to a free one)."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from snapshot_pipeline import calendar
from snapshot_pipeline.settings import load_settings
from tests.processes import base_env, free_port

ROOT = Path(__file__).resolve().parents[2]
NOISE = ("superseded", "will not be used", "XDG_RUNTIME_DIR", "Traceback")


def run_server(command: str, env: dict, probe: str, log: Path, seconds: float = 240) -> str:
    """Start ``command`` (a printed hint) with its PORT on a free port; wait for ``probe``; stop it; its output."""
    port = free_port()
    command = re.sub(r"PORT=\d+", f"PORT={port}", command)
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, shell=True, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    if httpx.get(f"http://127.0.0.1:{port}{probe}", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
            else:
                pytest.fail(f"{command} did not answer {probe}: {log.read_text()[-3000:]}")
            time.sleep(5)  # let the daemon and code server start (their warnings would come now)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return log.read_text()


@pytest.mark.slow
def test_demo_hints_run_as_printed(make_database, tmp_path):
    ledger = make_database()
    env = base_env({"LEDGER_DATABASE_URL": ledger, "SNAPSHOT_DATABASE_URL": make_database(),
                    "SNAPSHOT_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster_home"),
                    "SNAPSHOT_AUTOMATION_DEFAULT_STATUS": "STOPPED"})  # no SNAPSHOT_START_DATE: the default
    demo = subprocess.run([sys.executable, "-m", "snapshot_pipeline.cli", "demo", "--days", "2", "--balances", "300",
                           "--transactions", "3000", "--seed-days", "5"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, demo.stderr[-3000:]
    # the partitions start at the ledger's first day (recorded by the demo), not at 2026-01-01
    first = calendar.last_closed_day("UTC") - dt.timedelta(days=4)
    settings = load_settings(env)
    assert settings.start_date == first and settings.start_date_source == ".data/ledger.json"
    before = subprocess.run([sys.executable, "-m", "snapshot_pipeline.cli", "snapshot", "--date", "2020-01-01"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    record = tmp_path / ".data" / "ledger.json"  # the start's origin, not the environment
    assert before.returncode == 1 and f"recorded in {record}" in before.stderr, before.stderr
    hints = demo.stdout.split("Try next", 1)[1].splitlines()[1:]
    commands = [line.split("  # ", 1)[0].strip() for line in hints if line.strip()]
    assert len(commands) == 7, demo.stdout
    assert not any("YYYY" in c or "<" in c for c in commands), commands
    for command in commands:
        if command.startswith("make ui"):
            output = run_server(command, env, "/server_info", tmp_path / "ui.log")
            assert not [n for n in NOISE if n in output], output[-3000:]
            assert len(output.splitlines()) < 40, output  # a quiet ui: a handful of lines, not thousands
        elif command.startswith("make serve"):
            output = run_server(command, env, "/docs", tmp_path / "serve.log")
            assert "Traceback" not in output, output[-3000:]
        else:
            done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=600)
            assert done.returncode == 0, f"{command}: {done.stderr[-3000:]}"
            if " balance-at " in command or " balance-history " in command:  # the example balance exists in each
                assert '"existed": true' in done.stdout and '"existed": false' not in done.stdout, done.stdout
    assert (tmp_path / "balances.csv").stat().st_size > 1000


def test_numbers_are_ascii_digits_only(tmp_path):
    """``--batch-size ٥٠٠`` (Arabic-Indic digits) is refused before anything runs, as Blnk's server refuses it."""
    done = subprocess.run([sys.executable, "-m", "snapshot_pipeline.cli", "snapshot", "--date", "2026-11-01",
                           "--batch-size", "\u0665\u0660\u0660"], cwd=tmp_path, capture_output=True, text=True,
                          env=base_env({"SNAPSHOT_HOME": str(tmp_path)}), timeout=120)
    assert done.returncode == 2 and "ASCII digits" in done.stderr, done.stderr
    assert not (tmp_path / ".data").exists()
