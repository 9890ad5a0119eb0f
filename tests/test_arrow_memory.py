"""The allocator Arrow uses in the command line's processes: jemalloc on Linux x86-64, unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from snapshot_pipeline import arrow_memory

# a command's process as the entry point starts it: the CLI's main runs, then a command imports pyarrow
THROUGH_THE_CLI = """
import contextlib, sys
from snapshot_pipeline.cli import main
assert "pyarrow" not in sys.modules, "the CLI imported pyarrow before choosing its allocator"
with contextlib.suppress(SystemExit):
    main(["--help"])
import pyarrow
print(pyarrow.default_memory_pool().backend_name)
"""


def _backend_after_the_cli(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != arrow_memory.USER_CHOICE}
    done = subprocess.run([sys.executable, "-c", THROUGH_THE_CLI], env={**clean, **env}, capture_output=True,
                          text=True, check=True, timeout=120)
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(not arrow_memory.jemalloc_in_wheels(), reason="pyarrow's wheels here have no jemalloc")
def test_the_command_lines_processes_allocate_from_jemalloc():
    assert _backend_after_the_cli() == "jemalloc"


def test_the_users_choice_of_allocator_is_kept():
    assert _backend_after_the_cli(ARROW_DEFAULT_MEMORY_POOL="system") == "system"
    environ = {arrow_memory.USER_CHOICE: "mimalloc"}
    assert not arrow_memory.prefer_jemalloc(environ)
    assert environ == {arrow_memory.USER_CHOICE: "mimalloc"}


def test_nothing_is_set_where_the_wheels_have_no_jemalloc(monkeypatch):
    monkeypatch.setattr(arrow_memory.platform, "machine", lambda: "aarch64")
    environ: dict[str, str] = {}
    assert not arrow_memory.prefer_jemalloc(environ)
    assert environ == {}
