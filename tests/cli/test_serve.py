"""`snapshot-pipeline ui` stops itself and every process it started within 10 s of SIGTERM or SIGINT."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from snapshot_pipeline.cli.serve import _descendants

STOP_WITHIN_SECONDS = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_ui_stops_all_its_processes_on_a_signal(signum, adversarial_url, make_database, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "SNAPSHOT_", "DAGSTER_"))}
    env.update({
        "LEDGER_DATABASE_URL": adversarial_url, "SNAPSHOT_DATABASE_URL": make_database(),
        "SNAPSHOT_STORAGE_URI": str(tmp_path / "store"), "SNAPSHOT_START_DATE": "2026-10-01",
        "SNAPSHOT_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "SNAPSHOT_AUTOMATION_DEFAULT_STATUS": "STOPPED",
    })
    log = open(tmp_path / "ui.log", "wb")  # noqa: SIM115 - the server writes to it until stopped
    proc = subprocess.Popen([sys.executable, "-m", "snapshot_pipeline.cli", "ui", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "ui.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("the UI did not come up: " + (tmp_path / "ui.log").read_text()[-3000:])
        time.sleep(3)  # let the daemon and the code server start too
        tree = _descendants(proc.pid)
        assert len(tree) >= 3, tree  # dagster dev, its webserver, its daemon (and code servers)
        sent = time.monotonic()
        proc.send_signal(signum)
        proc.wait(timeout=STOP_WITHIN_SECONDS)
        while any(alive(pid) for pid in tree) and time.monotonic() - sent < STOP_WITHIN_SECONDS:
            time.sleep(0.1)
        left = [pid for pid in tree if alive(pid)]
        assert not left, f"still running {time.monotonic() - sent:.1f} s after the signal: {left}"
        assert time.monotonic() - sent < STOP_WITHIN_SECONDS
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _descendants(proc.pid) if proc.poll() is None else []:
            os.kill(pid, signal.SIGKILL)
        log.close()
