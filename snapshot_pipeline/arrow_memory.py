"""Which allocator Arrow's buffers come from: jemalloc on Linux x86-64, where pyarrow's wheels have it.

pyarrow allocates from mimalloc by default. Over a day's merge at 1M balances mimalloc keeps much of what the
merge frees for reuse: the process's peak RSS was 490-520 MB against 405-445 MB with pyarrow's jemalloc pool,
at the same speed (docs/benchmarks.md, "2026-12-08"). Arrow chooses its pool once, when pyarrow is imported,
from ``ARROW_DEFAULT_MEMORY_POOL`` (``pyarrow.set_memory_pool`` later moves only the allocations pyarrow's
Python layer makes: the Parquet reader's and the kernels' own stay where they were). So the command line
sets that variable first thing (:func:`prefer_jemalloc`), for its own process and for every process it
starts (the Dagster webserver, daemon and run workers of ``ui``, the workers of ``serve``). A value the user
set is Arrow's own switch and is left alone; elsewhere (ARM wheels have no jemalloc, macOS wheels may not)
nothing is set.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import MutableMapping

USER_CHOICE = "ARROW_DEFAULT_MEMORY_POOL"
PREFERRED = "jemalloc"


def jemalloc_in_wheels() -> bool:
    """Whether pyarrow's wheels for this platform are built with jemalloc (Linux x86-64)."""
    return sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "amd64")


def prefer_jemalloc(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Ask Arrow for its jemalloc pool in this process (when pyarrow is not imported yet) and in the processes
    it starts, unless ``ARROW_DEFAULT_MEMORY_POOL`` is set already; returns whether it was set here."""
    if USER_CHOICE in environ or not jemalloc_in_wheels():
        return False
    environ[USER_CHOICE] = PREFERRED
    return True
