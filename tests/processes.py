"""The project's processes, run for real by the tests: the CLI as a subprocess, servers on free loopback
ports (started, waited for, stopped), headless Chromium and Dagster's GraphQL."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]  # the repository: workspace.yaml, dagster.yaml
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STARTUP_SECONDS = 180  # a bound on waiting for the server, not an assertion on speed
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")


def require_chromium() -> None:
    """Skip a browser test where Debian's chromium is missing (fail in CI, which installs it)."""
    if CHROMIUM is None:
        if IN_CI:
            pytest.fail("CI is set but Chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("Chromium is not installed (apt-get install chromium); CI installs it and runs this test")


@contextlib.contextmanager
def dagster_ui_page(url: str):
    """A headless Chromium page opened on ``url`` of a Dagster UI, its first-visit dialog dismissed."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1150})
            page.goto(url, wait_until="domcontentloaded")
            skip = page.get_by_role("button", name="Skip")  # the first-visit "Join the community" dialog
            try:
                skip.wait_for(timeout=15_000)
                skip.click()
            except PlaywrightTimeout:
                pass
            yield page
        finally:
            browser.close()


def cli(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("LEDGER_", "SNAPSHOT_")) and k != "DAGSTER_HOME"}
    full_env.update(env)
    proc = subprocess.run([sys.executable, "-m", "snapshot_pipeline.cli", *args], env=full_env,
                          capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, path: str, proc: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + path, timeout=5).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url}{path} did not come up in {seconds} s: {log.read_text()[-3000:]}")


class Process:
    def __init__(self, command: list[str], env: dict, log: Path):
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - closed by stop(), with the server
        self.proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=self._out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._out.close()


def base_env(settings_env: dict) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LEDGER_", "SNAPSHOT_", "DAGSTER_"))}
    env.update(settings_env)
    return env


def graphql(base: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{base}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        payload = json.loads(response.read())
    assert "errors" not in payload, payload
    return payload["data"]


def wait_for_server(base: str, process: subprocess.Popen, log: Path) -> dict:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dagster-webserver exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{base}/server_info", timeout=5) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"dagster-webserver did not answer /server_info within {STARTUP_SECONDS}s:\n{log.read_text()[-4000:]}")
