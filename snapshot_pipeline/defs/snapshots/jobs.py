"""Jobs over ``balance_snapshots``: ``balance_snapshots_job`` and the sharded ``balance_snapshots_sharded``.

``balance_snapshots_job`` materializes daily partitions with the in-run checks (schedules, sensors, UI,
HTTP). It runs on the code location's executor (``SNAPSHOT_EXECUTOR``, ``defs/common/executors.py``; by
default in one process: a snapshot run is one asset step plus a few check steps, and a process start
per step would cost more than the work itself).

``balance_snapshots_sharded`` merges one daily partition as K shards in parallel on Dagster's executor.
Three kinds of step (:mod:`snapshot_pipeline.snapshot.shards` does the work; steps share only the store,
so they may run in separate processes or Kubernetes pods):

* ``plan_shards`` — the one consistent read of the ledger, under one cut: it stages the step once and
  computes the K per-shard deltas at once in K database sessions sharing the view's exported snapshot
  (they must import it while the view's transaction is open, so they run inside this step, not in the
  merge steps); fans out K shards;
* ``merge_shard`` (K dynamic steps) — each merges one ``balance_id`` range of the base with its own delta;
* ``commit_shards`` — publishes all K files or none, and records the ``balance_snapshots`` materialization.

The sharded job runs on the multiprocess executor (at most ``SNAPSHOT_MAX_CONCURRENT_STEPS`` shards at once),
or on ``k8s_job_executor`` with ``SNAPSHOT_EXECUTOR=k8s`` (docs/deploying.md). A failed shard
skips the commit: nothing is published and the work prefix is removed.
"""

import datetime as dt

import dagster as dg
from pydantic import Field

from snapshot_pipeline import names, progress
from snapshot_pipeline.defs.common.pools import LEDGER_DB_POOL
from snapshot_pipeline.defs.common.resources import (
    PLAN_OUTPUT,
    PLAN_STEP,
    STEP_IO,
    SnapshotStoreResource,
    remove_step_outputs,
)
from snapshot_pipeline.defs.snapshots.assets import SnapshotConfig, result_metadata, run_reason
from snapshot_pipeline.defs.snapshots.recovery import dead_run_reporter
from snapshot_pipeline.names import ASSET_NAME, SNAPSHOT_JOB
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.snapshot import shards

SHARDED_JOB = "balance_snapshots_sharded"


def build_snapshot_job() -> "dg.UnresolvedAssetJobDefinition":
    """Materializes daily partitions of `balance_snapshots` with the in-run checks (schedules, sensors, HTTP)."""
    return dg.define_asset_job(
        SNAPSHOT_JOB,
        selection=dg.AssetSelection.assets(ASSET_NAME),
        description="Materialize daily partitions of balance_snapshots and run the in-run checks"
                    " (file checks, sampled recompute, live drift over changed balances).",
        tags={"domain": "ledger"},
    )


class ShardedSnapshotConfig(SnapshotConfig):
    """Run configuration of a sharded snapshot: the snapshot's, with shards run as steps of their own."""

    shards: int = Field(default=2, ge=1, le=names.SHARDS_MAX,
                        description="Shards to merge the partition as (balance_id ranges split by the base"
                                    " partition's row-group statistics), each a step of its own.")


def build_sharded_job(partitions_def: dg.DailyPartitionsDefinition, executor: dg.ExecutorDefinition
                      ) -> dg.JobDefinition:
    """The sharded snapshot job over the daily partitions."""
    timezone = partitions_def.timezone
    plan_shards, merge_shard, commit_shards = (build_plan_op(timezone), build_merge_op(timezone),
                                               build_commit_op(timezone))

    @dg.job(name=SHARDED_JOB, partitions_def=partitions_def, executor_def=executor,
            tags={"domain": "ledger"},
            description="One daily partition of balance_snapshots merged as K balance_id shards in parallel"
                        " steps (config `shards`), published all at once.")
    def balance_snapshots_sharded():
        plan, shard = plan_shards()
        staged = shard.map(lambda k: merge_shard(plan, k))
        commit_shards(plan, staged.collect())

    return balance_snapshots_sharded


def build_plan_op(timezone: str) -> dg.OpDefinition:
    """``plan_shards``: the sharded job's one read of the ledger (pool ``ledger_db``)."""

    @dg.op(name=PLAN_STEP, tags={"kind": "postgres"}, pool=LEDGER_DB_POOL,
           out={PLAN_OUTPUT: dg.Out(dict, io_manager_key=STEP_IO), "shard": dg.DynamicOut(int, io_manager_key=STEP_IO)})
    def plan_shards(context: dg.OpExecutionContext, config: ShardedSnapshotConfig,
                    snapshot_store: SnapshotStoreResource):
        """The one consistent read: K per-shard deltas (K sessions, one snapshot) and the roll-forward state
        written to the store, K shards planned."""
        settings = snapshot_store.settings(timezone=timezone)
        date = dt.date.fromisoformat(context.partition_key)
        plan = shards.plan(settings, date, config.shards, config.batch_size, run_id=context.run_id,
                           full_refresh=config.full_refresh, log=context.log.info,
                           on_dead_run=dead_run_reporter(context.instance, context.log.warning))
        yield dg.Output(plan.as_dict(), output_name=PLAN_OUTPUT)
        for shard in range(plan.shards):
            yield dg.DynamicOutput(shard, output_name="shard", mapping_key=f"shard_{shard}")

    return plan_shards


def build_merge_op(timezone: str) -> dg.OpDefinition:
    """``merge_shard``: reads only the store (the base partition's files and the plan's delta), so no pool."""

    @dg.op(out=dg.Out(dict, io_manager_key=STEP_IO), tags={"kind": "parquet"})
    def merge_shard(context: dg.OpExecutionContext, snapshot_store: SnapshotStoreResource, plan: dict,
                    shard: int) -> dict:
        """Merge one balance_id range of the base partition and the delta into a staged Parquet file."""
        settings = snapshot_store.settings(timezone=timezone)
        the_plan = shards.Plan.from_dict(plan)
        try:
            record = shards.merge_shard(settings, the_plan, shard, log=context.log.info)
        except BaseException as exc:
            first = shards.plan_exists(the_plan)
            _discard_run(settings, the_plan, context.run_id)  # the commit is skipped: the others stop
            if not first:
                raise _stopped(shard) from exc
            raise
        if not shards.plan_exists(the_plan):  # another shard failed while this one merged: write no output
            _discard_run(settings, the_plan, context.run_id)  # (what this one wrote since goes too)
            raise _stopped(shard)
        return record

    return merge_shard


def _discard_run(settings: Settings, plan: shards.Plan, run_id: str) -> None:
    """Remove a failed sharded run's work: its work prefix (plan, delta, staged files) and its step outputs."""
    shards.discard(plan)
    remove_step_outputs(settings.storage_uri, run_id)


def _stopped(shard: int) -> shards.SnapshotError:
    return shards.SnapshotError(f"shard {shard} stopped: another shard of this run failed first and its work was"
                                " removed; nothing is published")


def build_commit_op(timezone: str) -> dg.OpDefinition:
    """``commit_shards``: publishes the staged files (the snapshot index and the Delta log; no ledger read)."""

    @dg.op(out=dg.Out(dg.Nothing), tags={"kind": "postgres"})
    def commit_shards(context: dg.OpExecutionContext, snapshot_store: SnapshotStoreResource, plan: dict,
                      staged: list[dict]):
        """Publish all K shard files as the partition in one index transaction, or nothing."""
        settings = snapshot_store.settings(timezone=timezone)
        the_plan = shards.Plan.from_dict(plan)
        if sorted(r["shard"] for r in staged) != list(range(the_plan.shards)):
            shards.discard(the_plan)
            raise shards.SnapshotError(f"{len(staged)} of {the_plan.shards} shards staged; nothing is published")
        result = shards.commit_shards(settings, the_plan, run_id=context.run_id, log=context.log.info,
                                      on_dead_run=dead_run_reporter(context.instance, context.log.warning),
                                      reason=run_reason(context.run.tags))
        progress.Reporter(context.log.info, the_plan.snapshot_date.isoformat())(result.rows, result.rows, True)
        context.log.info(f"operation=balance_snapshot snapshot_date={the_plan.snapshot_date} shards={the_plan.shards}"
                         f" total_snapshots={result.rows} duration_ms={result.duration_ms} status=completed")
        metadata: dict = {**result_metadata(result), "shards": the_plan.shards}
        remove_step_outputs(settings.storage_uri, context.run_id)  # the plan and shard records passed between steps
        yield dg.AssetMaterialization(asset_key=ASSET_NAME, partition=context.partition_key, metadata=metadata)

    return commit_shards


def sharded_executor(settings: Settings, default: dg.ExecutorDefinition) -> dg.ExecutorDefinition:
    """Shards run in parallel: the multiprocess executor unless the location runs on Kubernetes."""
    if settings.executor == "k8s":
        return default
    return dg.multiprocess_executor.configured({"max_concurrent": settings.max_concurrent_steps},
                                               name="multiprocess_shards")
