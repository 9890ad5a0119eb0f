"""SNAPSHOT_HISTORY_DAYS and SNAPSHOT_HOT_BALANCES: read in settings.py only, validated like every setting."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest

from snapshot_pipeline import settings
from snapshot_pipeline.cli.serve import ui_environment
from snapshot_pipeline.parsing import SettingsError
from snapshot_pipeline.query.engine import QueryEngine
from snapshot_pipeline.settings import DEFAULT_HISTORY_DAYS, DEFAULT_HOT_BALANCES, load_settings


def test_defaults_and_values(tmp_path):
    base = {"SNAPSHOT_HOME": str(tmp_path), "LEDGER_DATABASE_URL": "postgresql://u@127.0.0.1:1/x"}
    settings = load_settings(base)
    assert (settings.history_days, settings.hot_balances) == (DEFAULT_HISTORY_DAYS, DEFAULT_HOT_BALANCES) == (30, 16)
    chosen = load_settings({**base, "SNAPSHOT_HISTORY_DAYS": "7", "SNAPSHOT_HOT_BALANCES": "0"})
    assert (chosen.history_days, chosen.hot_balances) == (7, 0)
    engine = QueryEngine(chosen, max_connections=1)  # the pools open lazily: no database needed here
    try:
        assert engine.hot.max_balances == 0  # the engine takes the setting, not the environment
    finally:
        engine.close()


@pytest.mark.parametrize("name, value", [("SNAPSHOT_HISTORY_DAYS", "0"), ("SNAPSHOT_HISTORY_DAYS", "٣٠"),
                                         ("SNAPSHOT_HOT_BALANCES", "-1"), ("SNAPSHOT_HOT_BALANCES", "many")])
def test_bad_values_name_the_variable(tmp_path, name, value):
    with pytest.raises(SettingsError, match=name):
        load_settings({"SNAPSHOT_HOME": str(tmp_path), name: value})


# Arrow's allocator (settings.prefer_jemalloc): a command's process as the entry point starts it, the CLI's main
# first, then a command importing pyarrow
THROUGH_THE_CLI = """
import contextlib, sys
from snapshot_pipeline.cli import main
assert "pyarrow" not in sys.modules, "the CLI imported pyarrow before choosing its allocator"
with contextlib.suppress(SystemExit):
    main(["--help"])
import pyarrow
print(pyarrow.default_memory_pool().backend_name)
"""


def _allocator_after_the_cli(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != settings.ARROW_POOL_VARIABLE}
    done = subprocess.run([sys.executable, "-c", THROUGH_THE_CLI], env={**clean, **env}, capture_output=True,
                          text=True, check=True, timeout=120)
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.skipif("jemalloc" not in pa.supported_memory_backends(), reason="this pyarrow has no jemalloc")
def test_the_command_lines_processes_allocate_from_jemalloc():
    assert _allocator_after_the_cli() == "jemalloc"


def test_the_users_choice_of_allocator_is_kept(monkeypatch):
    assert _allocator_after_the_cli(ARROW_DEFAULT_MEMORY_POOL="system") == "system"
    monkeypatch.setenv(settings.ARROW_POOL_VARIABLE, "mimalloc")
    assert not settings.prefer_jemalloc()
    assert os.environ[settings.ARROW_POOL_VARIABLE] == "mimalloc"


@pytest.mark.skipif("jemalloc" not in pa.supported_memory_backends(), reason="this pyarrow has no jemalloc")
def test_the_processes_ui_starts_inherit_the_allocator(monkeypatch):
    monkeypatch.setenv(settings.ARROW_POOL_VARIABLE, "unset after the test")  # so that teardown removes it
    monkeypatch.delenv(settings.ARROW_POOL_VARIABLE)
    assert settings.prefer_jemalloc()
    assert ui_environment()[settings.ARROW_POOL_VARIABLE] == "jemalloc"


@pytest.mark.parametrize(("tag", "has_jemalloc"), [
    ("cp311-cp311-manylinux_2_28_x86_64", True),
    ("cp312-cp312-musllinux_1_2_x86_64", True),
    ("cp311-cp311-manylinux_2_28_aarch64", False),  # Arrow builds its ARM wheels without jemalloc
    ("cp311-cp311-macosx_12_0_x86_64", False),
    ("cp311-cp311-macosx_12_0_arm64", False),
    ("cp311-cp311-win_amd64", False),
    ("cp311-cp311-linux_x86_64", False),  # built from source: unknown
])
def test_jemalloc_is_asked_for_only_from_arrows_linux_x86_64_wheels(tag, has_jemalloc):
    assert settings.jemalloc_wheel([tag]) is has_jemalloc
