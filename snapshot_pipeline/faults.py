"""Pause points for real crash tests (``kill -9`` at a chosen phase of a materialization).

A test starts ``snapshot-pipeline snapshot`` with ``SNAPSHOT_PAUSE_AT=<phase>`` and
``SNAPSHOT_PAUSE_MARKER=<path>``; when the run reaches that phase it writes the marker (its pid)
and sleeps forever, and the test sends SIGKILL. Unset, a pause point costs one dict lookup.

Phases of :func:`snapshot_pipeline.snapshot.take_snapshot`, in order (the protocol:
:mod:`snapshot_pipeline.store.publication`):

- ``read``: the ledger read is finished (its REPEATABLE READ view closed); the new file is not
  finished yet;
- ``staged``: the new Parquet file is complete (closed, checksummed) at its run-unique name, which
  no generation and no Delta version names;
- ``visible``: inside the index transaction (manifest and ``partition_versions`` rows naming the
  files written; a sharded run's files moved in), not committed yet;
- ``committed``: the index transaction is committed (the commit point); no Delta commit yet;
- ``delta``: the Delta commit is made; its version is not recorded in the index yet;
- ``published``: both stores agree; the run's asset checks have not started;
- ``checks``: inside the run's ``snapshot_file_checks`` step (the partition's lock is released).
"""

from __future__ import annotations

import os
import time

from snapshot_pipeline.settings import pause_point_setting

PHASES = ("read", "staged", "visible", "committed", "delta", "published", "checks")
FAIL_SHARD_VARIABLE = "SNAPSHOT_FAIL_SHARD"  # a shard number: that shard of a sharded run raises (tests)


class InjectedFailure(RuntimeError):
    """Raised at a fail point a test asked for."""


def fail_point(name: str, shard: int) -> None:
    """Raise :class:`InjectedFailure` when ``SNAPSHOT_FAIL_SHARD`` names ``shard`` (unset: return)."""
    wanted = os.environ.get(FAIL_SHARD_VARIABLE)
    if wanted is not None and wanted.strip() == str(shard):
        raise InjectedFailure(f"injected failure in {name} {shard} ({FAIL_SHARD_VARIABLE}={wanted})")


def pause_point(name: str) -> None:
    """Write the marker and sleep forever when the pause setting names ``name``; otherwise return."""
    if name not in PHASES:
        raise ValueError(f"unknown pause point {name!r}; phases are {', '.join(PHASES)}")
    setting = pause_point_setting()
    if setting is None or setting.phase != name:
        return
    setting.marker.parent.mkdir(parents=True, exist_ok=True)
    temporary = setting.marker.with_name(setting.marker.name + ".tmp")
    temporary.write_text(str(os.getpid()))
    os.replace(temporary, setting.marker)  # the test never reads a half-written marker
    while True:
        time.sleep(3600)
