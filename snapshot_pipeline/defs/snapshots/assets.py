"""The ``balance_snapshots`` asset: exact daily point-in-time snapshots of every balance."""


import datetime as dt
import warnings
from collections.abc import Mapping

import dagster as dg
from pydantic import Field

from snapshot_pipeline import names, progress, snapshot
from snapshot_pipeline.defs.common.pools import LEDGER_DB_POOL
from snapshot_pipeline.defs.common.resources import SnapshotStoreResource
from snapshot_pipeline.defs.snapshots.recovery import dead_run_reporter
from snapshot_pipeline.names import ASSET_NAME, DAYS_PER_BACKFILL_RUN, REASON_TAG, REPAIR_SENSOR

GROUP = "snapshots"
OWNERS = ["team:ledger-platform"]
LIVE_CHECK = "live_balances_match"
LIVE_DRIFT_METADATA = "live_drift"  # the in-run comparison the live_balances_match check reports
PROGRESS_EVERY_SECONDS = 1.0  # the run's progress line (snapshot_pipeline/progress.py), read by the CLI and HTTP


class SnapshotConfig(dg.Config):
    """Run configuration of a snapshot materialization."""

    batch_size: int = Field(
        default=names.BATCH_SIZE_DEFAULT,
        ge=names.BATCH_SIZE_MIN,
        le=names.BATCH_SIZE_MAX,
        description=(
            f"Balances merged per chunk (one Arrow record batch): {names.BATCH_SIZE_RULE};"
            f" default {names.BATCH_SIZE_DEFAULT}."
        ),
    )
    full_refresh: bool = Field(
        default=False,
        description="Compute the partition from genesis (a full read of the ledger) instead of rolling the"
                    " previous partition forward.",
    )
    shards: int = Field(
        default=1,
        ge=1,
        le=names.SHARDS_MAX,
        description="Merge the partition as this many balance_id ranges, one after the other in this step, each"
                    " its own part-0000k file (the balance_snapshots_sharded job runs them as parallel steps).",
    )


def _utc_naive(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def currency_table(rows: list[dict]) -> dg.MetadataValue:
    """Per-currency totals as a UI table (amounts as exact decimal strings)."""
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn("currency", "string"),
            dg.TableColumn("balances", "int"),
            dg.TableColumn("balance", "string", description="Σ balance, minor units"),
            dg.TableColumn("credit", "string", description="Σ credit_balance, minor units"),
            dg.TableColumn("debit", "string", description="Σ debit_balance, minor units"),
        ]
    )
    records = [
        dg.TableRecord(
            {
                "currency": row["currency"] or "",
                "balances": row["balances"],
                "balance": str(row["balance"]),
                "credit": str(row["credit"]),
                "debit": str(row["debit"]),
            }
        )
        for row in rows
    ]
    return dg.MetadataValue.table(records=records, schema=schema)


def run_reason(tags: Mapping[str, str]) -> str:
    """Why a run (re)materializes partitions, from its Dagster tags: recorded with each version."""
    if tags.get(REASON_TAG):
        return tags[REASON_TAG]
    if "dagster/backfill" in tags:
        return "backfill"
    if "dagster/schedule_name" in tags:
        return "schedule"
    sensor = tags.get("dagster/sensor_name")
    if sensor:
        return "repair" if sensor == REPAIR_SENSOR else "sensor"
    return "manual"


def result_metadata(result: snapshot.SnapshotResult) -> dict[str, object]:
    """The run metrics shown in the UI for one partition."""
    return {
        "dagster/row_count": result.rows,
        "balances_changed": result.balances_changed,
        "index_rows_written": result.index_rows_written,
        "batches": result.batches,
        "batch_size": dg.MetadataValue.text(str(result.batch_size)),  # a setting, not a measure: not plotted
        "duration_ms": result.duration_ms,
        "snapshots_per_second": float(result.snapshots_per_second),
        "bytes_written": result.bytes_written,
        "path": dg.MetadataValue.path(result.path),
        "cutoff": result.cutoff.replace(tzinfo=dt.UTC).isoformat(),
        "watermark": dg.MetadataValue.json(result.watermark),
        "watermark_transaction_id": dg.MetadataValue.text(str(result.watermark["max_transaction_id"])),
        "mode": result.mode,
        "base_partition": result.base_date.isoformat() if result.base_date else "none",
        "checksum_sha256": result.checksum,
        "currency_totals": currency_table(result.currency_totals),
        "journal_rows_rolled_in": result.journal_rows,
        "roll_forward_state": dg.MetadataValue.json(result.pending),
        "phase_ms": dg.MetadataValue.json(result.phases_ms),
        "balanced_per_currency": result.balanced,
        "delta_version": dg.MetadataValue.int(result.delta_version) if result.delta_version is not None else "none",
        "generation": result.generation or 0,
        **({LIVE_DRIFT_METADATA: dg.MetadataValue.json(result.live_drift)} if result.live_drift is not None else {}),
    }


# Longer than 60 lines: most of it is the decorator's arguments and the docstring the UI shows; the work is in
# _snapshot_one_day and the library.
def build_snapshot_asset(partitions_def: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    """The asset, bound to the daily partitions of the configured business time zone."""

    with warnings.catch_warnings():  # `backfill_policy` is marked beta in Dagster 1.13
        warnings.simplefilter("ignore", category=dg.BetaWarning)

        @dg.asset(
            name=ASSET_NAME,
            partitions_def=partitions_def,
            group_name=GROUP,
            kinds={"postgres", "parquet", "deltalake"},
            owners=OWNERS,
            tags={"domain": "ledger"},
            metadata={"partition_time_zone": partitions_def.timezone,
                      "layout": "Delta table balance_snapshots/ (partitioned by snapshot_date)"},
            backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=DAYS_PER_BACKFILL_RUN),
            deps=[dg.AssetDep(ASSET_NAME, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1,
                                                                                          end_offset=-1))],
            pool=LEDGER_DB_POOL,
        )
        def balance_snapshots(
            context: dg.AssetExecutionContext, config: SnapshotConfig, snapshot_store: SnapshotStoreResource
        ):
            """Every balance of the ledger as of the partition's cutoff (start of the next local day).

            Values are Σ over the journal (APPLIED legs and open INFLIGHT holds with
            effective time before the cutoff), computed by rolling the previous partition
            forward: its Parquet merged with the journal rows since, read by key in one
            REPEATABLE READ view (the first partition, or `full_refresh`, reads everything).
            Written as one zstd Parquet file per day, or one per shard with the `shards` config,
            sorted by `balance_id`, into the Delta table `balance_snapshots` (partitioned by
            `snapshot_date`: one Delta commit per materialization replaces the day, so every reader
            sees the old day or the new one), plus change-only rows in the Postgres index. Earlier
            versions stay readable for SNAPSHOT_HISTORY_DAYS (`snapshot-pipeline history`); the
            metadata names the Delta version written. Re-running a day is safe.

            A backfill runs up to DAYS_PER_BACKFILL_RUN days per run, oldest first, each day rolled
            forward from the one before and committed on its own: every day gets its own
            materialization and metadata; if a day fails, the days before it stay materialized.
            Day D depends on day D-1 (declared, so backfills run their ranges oldest first); any day can
            still be materialized on its own: it rolls forward the nearest earlier published day.
            """
            settings = snapshot_store.settings(timezone=partitions_def.timezone)
            days = [dt.date.fromisoformat(key) for key in context.partition_keys]
            if len(days) > 1:
                context.log.info(f"operation=balance_snapshot range={days[0]}..{days[-1]} days={len(days)}"
                                 f" status=started")
            done: list[tuple[str, dict]] = []
            for snapshot_date in days:
                key = snapshot_date.isoformat()
                cutoff = _utc_naive(partitions_def.time_window_for_partition_key(key).end)
                try:
                    result = _snapshot_one_day(context, config, settings, snapshot_date, cutoff,
                                               compare_live=snapshot_date == days[-1] and _live_check_runs(context))
                except BaseException:  # also a cancel or termination (Dagster's interrupt is a BaseException)
                    # The days already committed are real: record them before the run fails.
                    for done_key, metadata in done:
                        yield dg.AssetMaterialization(asset_key=ASSET_NAME, partition=done_key, metadata=metadata)
                    raise
                metadata = result_metadata(result)
                done.append((key, metadata))
                if len(days) > 1:
                    context.add_asset_metadata(metadata, partition_key=key)
            yield dg.MaterializeResult(metadata=done[0][1] if len(days) == 1 else None)

    return balance_snapshots


def _live_check_runs(context: dg.AssetExecutionContext) -> bool:
    """Whether the run evaluates the live_balances_match check (then the asset compares in its own view): the
    run's job, as selected, has the check's step."""
    return context.job_def.graph.has_node_named(f"{ASSET_NAME}_{LIVE_CHECK}")


def _snapshot_one_day(context: dg.AssetExecutionContext, config: SnapshotConfig, settings, snapshot_date: dt.date,
                      cutoff: dt.datetime, compare_live: bool) -> snapshot.SnapshotResult:
    """Roll one day forward and commit it; logs its start, progress and summary lines. ``compare_live``: the
    last day of a run whose live_balances_match check runs is compared with the live rows in the run's view."""
    context.log.info(
        f"operation=balance_snapshot snapshot_date={snapshot_date} batch_size={config.batch_size}"
        f" cutoff={cutoff.isoformat()}Z status=started"
    )
    try:
        result = snapshot.take_snapshot(
            settings, snapshot_date, config.batch_size, run_id=context.run.run_id, log=context.log.info,
            on_progress=progress.Reporter(context.log.info, snapshot_date.isoformat(), PROGRESS_EVERY_SECONDS),
            full_refresh=config.full_refresh,
            shards=config.shards,
            on_dead_run=dead_run_reporter(context.instance, context.log.warning),
            reason=run_reason(context.run.tags),
            compare_live=compare_live,
        )
    except Exception as exc:
        context.log.error(
            f"operation=balance_snapshot snapshot_date={snapshot_date} status=failed"
            f" error={type(exc).__name__}: {exc}"
        )
        raise
    if result.cutoff != cutoff:  # the library and Dagster must agree on the day's boundary
        raise snapshot.SnapshotError(f"cutoff mismatch: {result.cutoff} != {cutoff}")
    context.log.info(
        f"operation=balance_snapshot snapshot_date={snapshot_date} total_snapshots={result.rows}"
        f" balances_changed={result.balances_changed} duration_ms={result.duration_ms}"
        f" snapshots_per_second={result.snapshots_per_second} status=completed"
    )
    return result
