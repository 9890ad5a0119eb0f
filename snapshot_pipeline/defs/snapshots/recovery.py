"""Crash recovery on the Dagster side: dead snapshot runs marked failed, interrupted publishes resolved.

The library (``store/recovery.py``) finds what a dead run left behind whenever a partition's lock
is taken; this module turns a dead run into a FAILURE in the instance (with the reason), and
:func:`recover_store` runs the same recovery on a sensor tick (``crash_recovery_sensor``, ``sensors.py``),
so a crash is cleaned up within a minute even when no new run of that partition comes. Runs launched
by the daemon or the webserver are also covered by Dagster's run monitoring (``dagster.yaml``:
``run_monitoring``).

A run the CLI executes in its own process (``snapshot-pipeline snapshot``) and that dies after its
partition's claim is released (during its asset checks) leaves no holder record, and Dagster's run
monitoring does not watch in-process runs: the CLI tags such runs with its process (pid, host, start
time) and :func:`report_dead_cli_runs` (the sensor tick, ``doctor``, the next CLI run) marks those
whose process is gone FAILURE.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Callable

import dagster as dg

from snapshot_pipeline import db
from snapshot_pipeline.names import PARTITION_TAG
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import index, publication, recovery
from snapshot_pipeline.store.location import Store

RECOVERY_SENSOR = "crash_recovery_sensor"
logger = logging.getLogger(__name__)
# tags of a run the CLI executes in its own process: the process that runs it, to tell whether it died
CLI_PID_TAG = "snapshot_pipeline/cli_pid"
CLI_HOST_TAG = "snapshot_pipeline/cli_host"
CLI_PROCESS_START_TAG = "snapshot_pipeline/cli_process_start"  # Linux: /proc/<pid>/stat start time (pid reuse)
_UNFINISHED = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def report_dead_run(instance: dg.DagsterInstance, dead: recovery.DeadRun,
                    log: Callable[[str], None] | None = None) -> bool:
    """Mark ``dead``'s Dagster run FAILURE with the reason, unless it already ended. True when marked."""
    log = log or logger.info
    if not dead.run_id:
        return False
    run = instance.get_run_by_id(dead.run_id)
    if run is None or run.is_finished:
        return False
    instance.report_run_failed(run, message=dead.reason())
    log(f"operation=dead_run_reported run_id={dead.run_id} partition={dead.snapshot_date} status=FAILURE")
    return True


def dead_run_reporter(instance: dg.DagsterInstance, log: Callable[[str], None] | None = None
                      ) -> Callable[[recovery.DeadRun], None]:
    """The ``on_dead_run`` callback of :func:`snapshot_pipeline.snapshot.take_snapshot` for ``instance``."""
    def report(dead: recovery.DeadRun) -> None:
        report_dead_run(instance, dead, log)

    return report


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, Linux ``/proc``); None when unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[19]  # field 22 of stat; fields 1-2 end at the last ")"
    except (OSError, IndexError):
        return None


def cli_run_tags() -> dict[str, str]:
    """The tags the CLI puts on a run it executes in this process (see :func:`report_dead_cli_runs`)."""
    tags = {CLI_PID_TAG: str(os.getpid()), CLI_HOST_TAG: socket.gethostname()}
    start = _process_start(os.getpid())
    if start is not None:
        tags[CLI_PROCESS_START_TAG] = start
    return tags


def _process_alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` of this host still runs (and is the same process, when its start is known)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    return start is None or _process_start(pid) in (start, None)


def report_dead_cli_runs(instance: dg.DagsterInstance, log: Callable[[str], None] | None = None) -> list[dict]:
    """Mark FAILURE (with the reason) every unfinished run a CLI process of this host executed in-process
    and that process is gone; returns them as :meth:`recovery.Recovery.as_dict` entries.

    This covers a CLI run killed after its partition's claim was released (during its asset checks): no
    holder record names it and Dagster's run monitoring does not watch in-process runs. Sound: only runs
    tagged by :func:`cli_run_tags` on this host are examined, and a live process is never reported (a
    reused pid is told apart by its start time on Linux; elsewhere it is taken for alive). Runs of other
    hosts are left alone (their processes cannot be examined from here).
    """
    log = log or logger.info
    host = socket.gethostname()
    found: list[dict] = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=_UNFINISHED, tags={CLI_HOST_TAG: host})):
        try:
            pid = int(run.tags[CLI_PID_TAG])
        except (KeyError, ValueError):
            continue
        if pid == os.getpid() or _process_alive(pid, run.tags.get(CLI_PROCESS_START_TAG)):
            continue
        partition = run.tags.get(PARTITION_TAG)
        reason = (f"the `snapshot-pipeline` process executing this run of partition {partition} (pid {pid} on"
                  f" {host}) died without finishing; found gone at"
                  f" {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} with no lock holder to report it"
                  " (e.g. killed during its asset checks, after its partition's lock was released)")
        fresh = instance.get_run_by_id(run.run_id)
        if fresh is None or fresh.is_finished:
            continue
        instance.report_run_failed(fresh, message=reason)
        log(f"operation=dead_run_reported run_id={run.run_id} partition={partition} pid={pid} status=FAILURE")
        found.append({"snapshot_date": partition, "publish": "none", "removed": [], "delta_version": None,
                      "dead_run": {"snapshot_date": partition, "run_id": run.run_id, "pid": pid, "host": host,
                                   "started_at": None, "work_dir": None}})
    return found


def recover_store(settings: Settings, instance: dg.DagsterInstance,
                  log: Callable[[str], None] | None = None) -> list[dict]:
    """Resolve every partition left pending by a dead run whose lock is free (a publish whose Delta commit
    is missing is replayed); report dead runs failed (those holding a lock, then dead CLI runs)."""
    found: list[dict] = []
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        store = Store.at(settings.storage_uri)
        if recovery.pending_dates(store, conn):  # the steady state: one listing, one query
            index.migrate(conn)  # recovery writes (it resolves publishes under the partitions' locks)
            publication.ensure_table(store, conn, settings.history_days)
            recovered = recovery.recover_all(store, conn, log=log, on_dead_run=dead_run_reporter(instance, log),
                                             history_days=settings.history_days)
            found = [r.as_dict() for r in recovered if r.acted]
    return found + report_dead_cli_runs(instance, log)
