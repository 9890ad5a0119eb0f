"""Crash recovery on the Dagster side: dead snapshot runs marked failed, interrupted publishes resolved.

The library (``store/publish.py``) finds what a dead run left behind whenever a partition's lock
is taken; this module turns a dead run into a FAILURE in the instance (with the reason), and runs
the same recovery on a sensor tick, so a crash is cleaned up within a minute even when no new run
of that partition comes. Runs launched by the daemon or the webserver are also covered by Dagster's
run monitoring (``dagster.yaml``: ``run_monitoring``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import dagster as dg

from snapshot_pipeline import db
from snapshot_pipeline.defs.resources import SnapshotStoreResource
from snapshot_pipeline.defs.schedules import sensor_status
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import index, publish

RECOVERY_SENSOR = "crash_recovery_sensor"
logger = logging.getLogger(__name__)


def report_dead_run(instance: dg.DagsterInstance, dead: publish.DeadRun,
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
                      ) -> Callable[[publish.DeadRun], None]:
    """The ``on_dead_run`` callback of :func:`snapshot_pipeline.snapshot.take_snapshot` for ``instance``."""
    def report(dead: publish.DeadRun) -> None:
        report_dead_run(instance, dead, log)

    return report


def recover_store(settings: Settings, instance: dg.DagsterInstance,
                  log: Callable[[str], None] | None = None) -> list[dict]:
    """Resolve every partition left pending by a dead run whose lock is free (a publish whose Delta commit
    is missing is replayed); report dead runs failed."""
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        if not publish.pending_dates(settings.storage_uri, conn):  # the steady state: one listing, one query
            return []
        index.migrate(conn)  # recovery writes (it resolves publishes under the partitions' locks)
        publish.ensure_table(settings.storage_uri, conn, settings.history_days)
        found = publish.recover_all(settings.storage_uri, conn, log=log,
                                    on_dead_run=dead_run_reporter(instance, log),
                                    history_days=settings.history_days)
    return [r.as_dict() for r in found if r.acted]


def build_recovery_sensor(settings: Settings, minimum_interval_seconds: int = 60) -> dg.SensorDefinition:
    @dg.sensor(
        name=RECOVERY_SENSOR,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=sensor_status(settings.automation_running),
        description="Cleans up after snapshot runs whose process died: resolves an interrupted publish against"
                    " the manifest, marks the dead run failed and removes its leftovers. Requests no runs.",
    )
    def crash_recovery_sensor(context: dg.SensorEvaluationContext, snapshot_store: SnapshotStoreResource):
        """Cleans up after snapshot runs whose process died (kill -9, OOM, lost machine).

        For every partition with a holder record, a staging file or a generation the Delta log does
        not carry yet, whose lock is free (a held lock means a live run): an interrupted publish is
        resolved (the Delta commit replayed if the index committed, else the run's files removed),
        the dead run is marked FAILURE in the instance with the reason, and its staging files and
        work directory are removed. Requests no runs.
        """
        found = recover_store(snapshot_store.settings(), context.instance, context.log.info)
        for item in found:
            context.log.info(f"operation=crash_recovery {item}")
        return dg.SkipReason(f"recovered {len(found)} partition(s)" if found else "nothing to recover")

    return crash_recovery_sensor
