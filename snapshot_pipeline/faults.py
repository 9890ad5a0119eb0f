"""Pause points for real crash tests (``kill -9`` at a chosen phase of a materialization).

A test starts ``snapshot-pipeline snapshot`` with ``SNAPSHOT_PAUSE_AT=<phase>`` and
``SNAPSHOT_PAUSE_MARKER=<path>``; when the run reaches that phase it writes the marker (its pid)
and sleeps forever, and the test sends SIGKILL. Unset, a pause point costs one dict lookup.

Phases of :func:`snapshot_pipeline.snapshot.take_snapshot`, in order:

- ``read``: the ledger read is finished (its REPEATABLE READ view closed); the staging file is
  not finished yet;
- ``staged``: the staging Parquet file is complete (closed, checksummed), nothing published;
- ``visible``: the new files are moved to their run-unique names in the dataset directory, the
  index transaction (manifest row naming them) is not committed yet;
- ``committed``: the index transaction is committed; the superseded files are not deleted yet.
"""

from __future__ import annotations

import os
import time

from snapshot_pipeline.settings import pause_point_setting

# read: the ledger read; staged: the files written; visible: inside the index transaction, files in place;
# committed: the index COMMITted, the Delta commit not made; delta: the Delta commit made, its version not
# recorded; published: both stores agree, before the run's checks; checks: inside the run's asset checks
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
