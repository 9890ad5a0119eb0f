"""Which allocator Arrow's buffers come from in the heavy paths (a partition's merge, ``balances_at``).

pyarrow 26 allocates from mimalloc by default. Over a 1M-balance day, mimalloc keeps what the merge frees
for reuse, and the process's peak RSS grows with the merge's length rather than with what it holds:
490-520 MB against 405-445 MB from pyarrow's jemalloc pool, at the same speed (docs/benchmarks.md,
"2026-12-08"). The snapshot core therefore allocates from jemalloc where this pyarrow build has it. An
``ARROW_DEFAULT_MEMORY_POOL`` the user sets is Arrow's own switch and is left to decide.
"""

from __future__ import annotations

import os

import pyarrow as pa

USER_CHOICE = "ARROW_DEFAULT_MEMORY_POOL"
PREFERRED = "jemalloc"


def use_preferred_pool() -> str:
    """Make jemalloc the process's default Arrow memory pool, unless the user chose one
    (``ARROW_DEFAULT_MEMORY_POOL``) or this build has no jemalloc (Windows wheels); returns the pool in use.

    Buffers already allocated keep the pool they came from; only later allocations move."""
    current = pa.default_memory_pool()
    if os.environ.get(USER_CHOICE) or current.backend_name == PREFERRED:
        return current.backend_name
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # pa.ArrowNotImplementedError: a build without jemalloc
        return current.backend_name
    pa.set_memory_pool(pool)
    return pool.backend_name
