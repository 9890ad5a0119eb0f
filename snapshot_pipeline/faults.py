"""Pause points for real crash tests (``kill -9`` at a chosen phase of a materialization).

A test starts ``snapshot-pipeline snapshot`` with ``SNAPSHOT_PAUSE_AT=<phase>`` and
``SNAPSHOT_PAUSE_MARKER=<path>``; when the run reaches that phase it writes the marker (its pid)
and sleeps forever, and the test sends SIGKILL. Unset, a pause point costs one dict lookup.

Phases of :func:`snapshot_pipeline.snapshot.take_snapshot`, in order:

- ``read``: the ledger read is finished (its REPEATABLE READ view closed); the staging file is
  not finished yet;
- ``staged``: the staging Parquet file is complete (closed, checksummed), nothing published;
- ``visible``: the new file is renamed into the dataset directory, the index transaction
  (manifest row) is not committed yet;
- ``committed``: the index transaction is committed; the publish record and the backup of the
  previous file are not cleaned up yet.
"""

from __future__ import annotations

import os
import time

from snapshot_pipeline.settings import pause_point_setting

PHASES = ("read", "staged", "visible", "committed")


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
