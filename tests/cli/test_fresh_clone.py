"""A fresh clone installs the runtime only (``make demo``) and runs the demo: no test, lint, browser, S3 or
benchmark packages in its environment."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.processes import base_env

ROOT = Path(__file__).resolve().parents[2]
NOT_RUNTIME = ("pytest", "playwright", "moto", "ruff", "mypy", "duckdb", "polars", "aiohttp",
               "dagster_k8s", "pandas")


@pytest.mark.slow
def test_fresh_clone_runs_make_demo_with_the_runtime_only(make_database, tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=300)
    env = base_env({"LEDGER_DATABASE_URL": make_database(), "SNAPSHOT_DATABASE_URL": make_database(),
                    "DAGSTER_HOME": str(tmp_path / "dagster_home")})
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(["make", "demo"], cwd=clone, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "materialized" in done.stdout and "Try next" in done.stdout, done.stdout
    site = next((clone / ".venv" / "lib").glob("python3*/site-packages"))
    installed = {p.name.split("-")[0].lower() for p in site.iterdir()}
    assert not [name for name in NOT_RUNTIME if name in installed], sorted(installed)
    assert {"dagster", "deltalake", "fastapi_offline", "prometheus_client"} <= installed
