"""Report assets downstream of ``balance_snapshots`` (the automation sensor that runs them: ``sensors.py``).

The computing is done by :mod:`snapshot_pipeline.reports` (plain Python); each
asset here binds one report to its partitions, its dependency on the snapshots
and an automation condition, and turns the result into UI metadata.

When each report is requested (``reports_automation_sensor``, evaluated by the daemon
every 30 s): :func:`after_snapshots`, for partitions in a recent time window:

* ``balance_movements`` (daily, reads snapshots ``D-1`` and ``D``) and
  ``ledger_currency_totals`` (daily, reads ``D``): every day whose snapshots are published, backfills and
  repairs of old days included, so the reports' partitions follow the snapshots' in the UI;
* ``month_end_balances`` (monthly): every closed month. Its dependency is
  the default time-window mapping (every day of the month: Dagster has no built-in
  "last day of the month" mapping that automation understands), so it is not
  requested before all of the month's daily partitions, the last day included, exist;
* ``reconciliation_report`` (daily): the latest day only, as it compares with the
  live ledger of now.

``balance_movements`` and ``reconciliation_report`` read the ledger, so they are in the ``ledger_db``
pool (``defs/common/pools.py``); the other two read only snapshot files.
"""

import datetime as dt
import warnings
from typing import Any

import dagster as dg

from snapshot_pipeline.defs.common.pools import LEDGER_DB_POOL
from snapshot_pipeline.defs.common.resources import SnapshotStoreResource
from snapshot_pipeline.defs.snapshots.assets import OWNERS
from snapshot_pipeline.names import ASSET_NAME as SNAPSHOTS
from snapshot_pipeline.reports import month_end, movements, reconciliation, totals
from snapshot_pipeline.reports.common import ReportError, ReportResult

GROUP = "reports"
NO_DRIFT_CHECK = "no_live_drift"


ALL_PARTITIONS = dt.timedelta.max  # after_snapshots(ALL_PARTITIONS): no time window


def after_snapshots(lookback: dt.timedelta | None = None) -> dg.AutomationCondition:
    """Request a report partition once the snapshots it reads exist, and again when they change.

    Like ``AutomationCondition.eager()`` (which only looks at the latest time partition
    and never requests what was already missing when automation was switched on), but:

    * over every partition within ``lookback`` of the latest one (None: the latest only;
      :data:`ALL_PARTITIONS`: every partition), so a snapshot backfilled or repaired for an earlier
      day still gets its reports;
    * a missing partition is requested even on the first evaluation (``make demo`` then
      ``make ui`` shows the reports of the demo's days), unless its latest run failed: a
      failed report is retried only when a snapshot it reads is updated.

    Never while a snapshot it reads is missing or being materialized, or it is in progress.
    """
    condition = dg.AutomationCondition
    missing = (condition.missing() & ~condition.execution_failed()).with_label("missing and not failed")
    updated = condition.any_deps_updated().since_last_handled().with_label("snapshots updated since handled")
    ready = ((missing | updated) & ~condition.any_deps_missing() & ~condition.any_deps_in_progress()
             & ~condition.in_progress())
    if lookback == ALL_PARTITIONS:
        return ready.with_label("after_snapshots(every partition)")
    window = f"last {lookback.days} days" if lookback else "latest partition"
    return (
        condition.in_latest_time_window(lookback) & ready
    ).with_label(f"after_snapshots({window})")


def common_metadata(result: ReportResult) -> dict[str, Any]:
    return {
        "dagster/row_count": result.rows,
        "path": dg.MetadataValue.path(result.path),
        "bytes_written": result.bytes_written,
        "duration_ms": result.duration_ms,
    }


def totals_metadata(rows: list[dict]) -> dict[str, Any]:
    """Per ledger and currency: a table with exact sums, and numeric entries the UI plots over time."""
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn("ledger_id", "string"),
            dg.TableColumn("currency", "string"),
            dg.TableColumn("balances", "int"),
            dg.TableColumn("balance_sum", "string", description="Σ balance, minor units"),
            dg.TableColumn("credit_sum", "string", description="Σ credit_balance, minor units"),
            dg.TableColumn("debit_sum", "string", description="Σ debit_balance, minor units"),
        ]
    )
    records = [
        dg.TableRecord({"ledger_id": r["ledger_id"] or "", "currency": r["currency"] or "",
                        "balances": r["balances"], "balance_sum": str(r["balance_sum"]),
                        "credit_sum": str(r["credit_sum"]), "debit_sum": str(r["debit_sum"])})
        for r in rows
    ]
    out: dict[str, Any] = {"totals": dg.MetadataValue.table(records=records, schema=schema)}
    for r in rows:
        group = f"{r['ledger_id']}/{r['currency']}"
        out[f"{group} balances"] = dg.MetadataValue.int(r["balances"])
        for name in ("balance_sum", "credit_sum", "debit_sum"):  # floats: for the plots; exact values in "totals"
            out[f"{group} {name}"] = dg.MetadataValue.float(float(r[name]))
    return out


def _run(context: dg.AssetExecutionContext, report: str, compute) -> ReportResult:
    context.log.info(f"operation=report report={report} partition={context.partition_key} status=started")
    try:
        result = compute()
    except ReportError as exc:
        context.log.error(f"operation=report report={report} partition={context.partition_key} status=failed"
                          f" error={exc}")
        raise dg.Failure(description=str(exc)) from exc
    context.log.info(
        f"operation=report report={report} partition={context.partition_key} rows={result.rows}"
        f" duration_ms={result.duration_ms} status=completed"
    )
    return result


def _lenient_mapping(**kwargs) -> dg.TimeWindowPartitionMapping:
    """A time-window mapping that tolerates upstream days before the first partition
    (``allow_nonexistent_upstream_partitions`` is marked beta in Dagster 1.13: its warning is expected)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=dg.BetaWarning)
        return dg.TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True, **kwargs)


# What every report asset shares: its group, owners and tags in the UI.
COMMON: dict[str, Any] = {"group_name": GROUP, "owners": OWNERS, "tags": {"domain": "ledger"}}


def build_report_assets(daily: dg.DailyPartitionsDefinition,
                        monthly: dg.MonthlyPartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The four report assets, on the snapshot asset's daily partitions and the matching monthly ones."""
    return [build_movements_asset(daily), build_totals_asset(daily), build_month_end_asset(monthly),
            build_reconciliation_asset(daily)]


def build_movements_asset(daily: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    """``balance_movements``: reads the day's snapshot and the day before's."""

    @dg.asset(
        partitions_def=daily,
        deps=[dg.AssetDep(SNAPSHOTS, partition_mapping=_lenient_mapping(start_offset=-1))],
        automation_condition=after_snapshots(ALL_PARTITIONS),
        kinds={"parquet"},
        metadata={"layout": "reports/balance_movements/snapshot_date=YYYY-MM-DD/part-00000.parquet",
                  "identity": "opening_balance + credits - debits = closing_balance"},
        pool=LEDGER_DB_POOL,
        **COMMON,
    )
    def balance_movements(context: dg.AssetExecutionContext,
                          snapshot_store: SnapshotStoreResource) -> dg.MaterializeResult:
        """Per balance and day: opening and closing balance, credits, debits and journal legs.

        Opening = snapshot of the previous day (from the journal when that partition is
        absent), closing = snapshot of the day; credits/debits are the changes of
        credit_balance/debit_balance, so opening + credits - debits = closing on every row;
        legs = the APPLIED legs the closing snapshot counts and the opening one does not.
        """
        settings = snapshot_store.settings(timezone=daily.timezone)
        date = dt.date.fromisoformat(context.partition_key)
        result = _run(context, "balance_movements", lambda: movements.balance_movements(settings, date))
        return dg.MaterializeResult(metadata={**common_metadata(result), **result.metrics})

    return balance_movements


def build_totals_asset(daily: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    """``ledger_currency_totals``: reads the day's snapshot."""

    @dg.asset(
        partitions_def=daily,
        deps=[dg.AssetDep(SNAPSHOTS)],
        automation_condition=after_snapshots(ALL_PARTITIONS),
        kinds={"parquet"},
        metadata={"layout": "reports/ledger_currency_totals/snapshot_date=YYYY-MM-DD/part-00000.parquet"},
        **COMMON,
    )
    def ledger_currency_totals(context: dg.AssetExecutionContext,
                               snapshot_store: SnapshotStoreResource) -> dg.MaterializeResult:
        """Per ledger and currency on the day: number of balances, Σ balance, Σ credit, Σ debit.

        Each total is also a numeric metadata entry, so the UI plots it across partitions.
        """
        settings = snapshot_store.settings(timezone=daily.timezone)
        date = dt.date.fromisoformat(context.partition_key)
        result = _run(context, "ledger_currency_totals", lambda: totals.ledger_currency_totals(settings, date))
        return dg.MaterializeResult(metadata={
            **common_metadata(result),
            "balances": result.metrics["balances"],
            **totals_metadata(result.metrics["totals"]),
        })

    return ledger_currency_totals


def build_month_end_asset(monthly: dg.MonthlyPartitionsDefinition) -> dg.AssetsDefinition:
    """``month_end_balances``: reads the snapshot of the month's last day."""

    @dg.asset(
        partitions_def=monthly,
        deps=[dg.AssetDep(SNAPSHOTS, partition_mapping=_lenient_mapping())],
        automation_condition=after_snapshots(ALL_PARTITIONS),
        kinds={"parquet", "csv"},
        metadata={"layout": "reports/month_end_balances/month=YYYY-MM/part-00000.parquet",
                  "csv": "reports/month_end_balances_csv/month_end_balances_YYYY-MM.csv"},
        **COMMON,
    )
    def month_end_balances(context: dg.AssetExecutionContext,
                           snapshot_store: SnapshotStoreResource) -> dg.MaterializeResult:
        """Every balance at the month's last cutoff (start of the next month), as Parquet and as CSV.

        The values are the snapshot of the month's last day; the automation condition waits
        until the month's daily snapshots, its last day included, are all materialized.
        """
        settings = snapshot_store.settings(timezone=monthly.timezone)
        month = dt.date.fromisoformat(context.partition_key)
        result = _run(context, "month_end_balances", lambda: month_end.month_end_balances(settings, month))
        by_currency = result.metrics["balance_by_currency"]
        return dg.MaterializeResult(metadata={
            **common_metadata(result),
            "csv_path": dg.MetadataValue.path(result.csv_path or ""),  # always set by month_end_balances
            "snapshot_date": result.metrics["snapshot_date"],
            "cutoff": result.metrics["cutoff"],
            "balance_by_currency": dg.MetadataValue.json({k or "": str(v) for k, v in by_currency.items()}),
            **{f"{currency} balance_sum": float(total) for currency, total in by_currency.items()},
        })

    return month_end_balances


def build_reconciliation_asset(daily: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    """``reconciliation_report``: reads the day's snapshot, the journal since and the live balances."""

    @dg.asset(
        partitions_def=daily,
        deps=[dg.AssetDep(SNAPSHOTS)],
        automation_condition=after_snapshots(),
        kinds={"parquet", "postgres"},
        check_specs=[dg.AssetCheckSpec(NO_DRIFT_CHECK, asset="reconciliation_report",
                                       description="No live balance drifts from snapshot + later legs")],
        metadata={"layout": "reports/reconciliation_report/snapshot_date=YYYY-MM-DD/part-00000.parquet"},
        pool=LEDGER_DB_POOL,
        **COMMON,
    )
    def reconciliation_report(context: dg.AssetExecutionContext,
                              snapshot_store: SnapshotStoreResource) -> dg.MaterializeResult:
        """Live blnk.balances rows that differ from the day's snapshot plus every journal row it excludes.

        One row per drifting balance (none on a consistent ledger), with live and expected
        values; the no_live_drift check fails (warning) when there is any.
        """
        settings = snapshot_store.settings(timezone=daily.timezone)
        date = dt.date.fromisoformat(context.partition_key)
        result = _run(context, "reconciliation_report",
                      lambda: reconciliation.reconciliation_report(settings, date))
        drifting = result.metrics["drifting_balances"]
        if drifting:
            context.log.warning(f"operation=report report=reconciliation_report partition={date}"
                                f" drifting_balances={drifting}")
        return dg.MaterializeResult(
            metadata={
                **common_metadata(result),
                **{k: result.metrics[k] for k in ("balances_checked", "drifting_balances",
                                                   "balances_with_later_legs", "live_read_transaction_id")},
                "drift_sample": drift_sample_table(result.metrics["sample"]),
            },
            check_results=[dg.AssetCheckResult(
                check_name=NO_DRIFT_CHECK, passed=drifting == 0, severity=dg.AssetCheckSeverity.WARN,
                metadata={"drifting_balances": drifting},
            )],
        )

    return reconciliation_report


DRIFT_SAMPLE_COLUMNS = ("balance_id", "drifting_columns", "balance_drift", "live_balance", "expected_balance")


def drift_sample_table(sample: list[dict]) -> dg.MetadataValue:
    """The first drifting balances as a UI table (exact amounts as strings)."""
    records = [dg.TableRecord({name: str(row[name]) for name in DRIFT_SAMPLE_COLUMNS}) for row in sample]
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(
        columns=[dg.TableColumn(name, "string") for name in DRIFT_SAMPLE_COLUMNS]))
