"""The Arrow memory pool of the heavy paths: jemalloc where the build has it, unless the user chose one."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pyarrow as pa
import pytest

from snapshot_pipeline import arrow_memory, query, snapshot
from tests.conftest import make_settings

PROBE = ("from snapshot_pipeline import arrow_memory; import pyarrow as pa;"
         " print(arrow_memory.use_preferred_pool(), pa.default_memory_pool().backend_name)")


def _jemalloc_available() -> bool:
    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        return False
    return True


needs_jemalloc = pytest.mark.skipif(not _jemalloc_available(), reason="this pyarrow build has no jemalloc")


def _probe(**env: str) -> str:
    """What a fresh interpreter's ``use_preferred_pool`` returns, and its default pool afterwards."""
    clean = {k: v for k, v in os.environ.items() if k != arrow_memory.USER_CHOICE}
    done = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                          check=True, timeout=120)
    return done.stdout.strip()


@needs_jemalloc
def test_a_fresh_process_moves_to_jemalloc():
    assert _probe() == "jemalloc jemalloc"


def test_the_users_choice_of_pool_is_kept():
    assert _probe(ARROW_DEFAULT_MEMORY_POOL="system") == "system system"


@pytest.fixture
def system_pool(monkeypatch):
    """The process's default pool set to Arrow's system allocator for the test, restored afterwards."""
    monkeypatch.delenv(arrow_memory.USER_CHOICE, raising=False)
    before = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    yield
    pa.set_memory_pool(before)


@needs_jemalloc
def test_a_snapshot_and_balances_at_allocate_from_jemalloc(system_pool, adversarial_url, make_database, tmp_path):
    settings = make_settings(adversarial_url, tmp_path / "store", index_url=make_database())
    day = dt.date(2026, 10, 30)
    snapshot.take_snapshot(settings, day, 500)
    assert pa.default_memory_pool().backend_name == "jemalloc"
    pa.set_memory_pool(pa.system_memory_pool())
    with query.QueryEngine(settings) as engine:
        assert engine.balances_at(dt.datetime(2026, 10, 31, 12)).num_rows > 0
    assert pa.default_memory_pool().backend_name == "jemalloc"
