"""One partition materialized through Dagster from the CLI, with a progress bar on the terminal.

Used by ``snapshot`` and ``demo``. Dagster is imported only here, inside the functions, so that
``snapshot-pipeline --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sys
from collections.abc import Callable

from snapshot_pipeline import calendar, progress, run_errors
from snapshot_pipeline.cli.common import CliError
from snapshot_pipeline.cli.instance import preflight, prepare_dagster_home
from snapshot_pipeline.settings import DEFAULT_START_SOURCE, LEDGER_RECORD, Settings

KEPT_CONNECTION_SECONDS = 60  # a kept connection of the Dagster instance is replaced once this old


class DayProgress:
    """A per-day progress bar (rows and rate; tqdm), drawn only when stderr is a terminal.

    Dagster captures a step's stdout/stderr (file descriptors 1 and 2) into the run's compute logs, so
    the bar writes to a duplicate of descriptor 2 taken before the run starts: still the terminal.
    """

    def __init__(self, label: str, total: int | None):
        from tqdm import tqdm  # noqa: PLC0415

        self._out = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
        self._bar = tqdm(total=total, desc=label, unit=" rows", leave=False, file=self._out,
                         disable=not self._out.isatty(), mininterval=0.2)

    def update_to(self, rows: int, total: int | None) -> None:
        """Move the bar to ``rows`` written out of ``total`` (the run's estimate, exact on its final report: the
        one whose rows are its total, drawn at once even within tqdm's minimum interval)."""
        if total is not None and max(total, rows) != self._bar.total:  # rows may pass the estimate before the end
            self._bar.total = max(total, rows)
            self._bar.refresh()
        self._bar.update(rows - self._bar.n)
        if rows == total:
            self._bar.refresh()

    def close(self) -> None:
        """Remove the bar and close the duplicated descriptor."""
        self._bar.close()
        self._out.close()


class _ProgressHandler(logging.Handler):
    """Turns the asset's ``status=progress`` log lines into :meth:`DayProgress.update_to` calls."""

    def __init__(self, bar: Callable[[], DayProgress]):
        super().__init__()
        self._bar = bar

    def emit(self, record: logging.LogRecord) -> None:
        message = getattr(record, "dagster_meta", {}).get("orig_message") or record.getMessage()
        report = progress.parse_line(message)
        if report is not None:
            self._bar().update_to(report.rows, report.total)


def _progress_logger_def(bar: Callable[[], DayProgress]):
    """A Dagster logger for CLI runs: the asset's progress lines drive the bar; every other record stays out
    of the terminal (it is in the run's log in the Dagster instance)."""
    import dagster as dg  # noqa: PLC0415

    @dg.logger(config_schema=None, description="progress bar of the snapshot CLI")
    def cli_progress(_init_context):
        log = logging.getLogger("snapshot_pipeline.cli.progress")
        log.propagate = False
        log.setLevel(logging.INFO)
        log.handlers = [_ProgressHandler(bar)]
        return log

    return cli_progress


def _start_date_origin(settings: Settings) -> str:
    """Where the first partition's date came from, as the user can change it."""
    if settings.start_date_source == LEDGER_RECORD:
        return (f"the seeded ledger's first day, recorded in {settings.home / LEDGER_RECORD};"
                " SNAPSHOT_START_DATE overrides it")
    if settings.start_date_source == DEFAULT_START_SOURCE:
        return "the default; set SNAPSHOT_START_DATE"
    return "SNAPSHOT_START_DATE"


def _check_partition(settings: Settings, snapshot_date: dt.date) -> None:
    """``snapshot_date`` must be a partition: from ``SNAPSHOT_START_DATE`` to the last closed day."""
    last = calendar.last_closed_day(settings.timezone)
    if snapshot_date < settings.start_date or snapshot_date > last:
        raise CliError(
            f"--date {snapshot_date} is not a partition: partitions run from {settings.start_date}"
            f" ({_start_date_origin(settings)}) to {last}, the last closed day in {settings.timezone}"
        )


def materialize_partition(settings: Settings, snapshot_date: dt.date, batch_size: int,
                          full_refresh: bool = False, *, verbose: bool = False, shards: int = 1) -> dict:
    """Run ``balance_snapshots_job`` for one partition on the Dagster instance; return its metrics.

    Quiet by default: a progress bar on stderr (on a terminal); Dagster's own log lines go to the run's
    log in the instance (the UI's run page) and, with ``verbose``, to stderr as well.

    Every check (partition range, databases reachable, storage writable) comes before Dagster is
    imported or a file is written.
    """
    _check_partition(settings, snapshot_date)
    preflight(settings)
    prepare_dagster_home(settings)
    bar = DayProgress(snapshot_date.isoformat(), None)  # the total comes with the run's progress lines
    try:
        config = {"batch_size": batch_size, "full_refresh": full_refresh, "shards": shards}
        result = _execute(settings, snapshot_date, config, verbose, lambda: bar)
    finally:
        bar.close()
    return _metrics(result, snapshot_date, batch_size)


def _execute(settings: Settings, snapshot_date: dt.date, config: dict, verbose: bool,
             bar: Callable[[], DayProgress]):
    """The job's in-process execution on the instance of ``DAGSTER_HOME``; a failed run is a :class:`CliError`.

    The run is tagged with this process (:func:`snapshot_pipeline.defs.snapshots.recovery.cli_run_tags`); afterwards,
    earlier CLI runs of this host whose process died unreported are marked failed.
    """
    import dagster as dg  # noqa: PLC0415 - keep `--help` fast

    from snapshot_pipeline.definitions import build_definitions  # noqa: PLC0415
    from snapshot_pipeline.defs.snapshots.recovery import cli_run_tags, report_dead_cli_runs  # noqa: PLC0415
    from snapshot_pipeline.names import ASSET_NAME, SNAPSHOT_JOB  # noqa: PLC0415

    job = build_definitions(settings).resolve_job_def(SNAPSHOT_JOB).with_logger_defs(
        {"console": dg.colored_console_logger, "cli_progress": _progress_logger_def(bar)})
    with dg.DagsterInstance.get() as instance, _storage_connections_kept(instance):
        result = job.execute_in_process(
            partition_key=snapshot_date.isoformat(),
            instance=instance,
            run_config={
                "ops": {ASSET_NAME: {"config": config}},
                "loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "CRITICAL"}},
                            "cli_progress": {}},
            },
            raise_on_error=False,
            tags=cli_run_tags(),  # this process runs it: if it dies after its lock is released, see below
        )
        # an earlier CLI run of this host that died after releasing its partition's lock (during its checks)
        # is reported here; one that died holding it was reported by this run's claim (recovery.recover)
        report_dead_cli_runs(instance)
    if not result.success:
        raise CliError(f"snapshot of {snapshot_date} failed (Dagster run {result.run_id}): {_failure(result)}")
    return result


@contextlib.contextmanager
def _storage_connections_kept(instance):
    """The run's events stored on kept PostgreSQL connections instead of one new connection per event.

    ``dagster_postgres`` opens a connection for every event it stores (``NullPool``, so that idle processes
    hold none): a CLI run made ~130 connections, 0.5-0.8 s of the command (measured: its time beyond the
    asset 2.7-3.3 s -> 2.2-2.5 s). The webserver's own remedy, ``optimize_for_webserver``, gives each storage
    a pool of one kept connection (more while threads store events at once, closed when returned),
    replaced once :data:`KEPT_CONNECTION_SECONDS` old (a server's idle timeout or a pooler may have closed
    it). It sets a ``statement_timeout`` on each connection: the one the instance's database gives (role,
    database, URL options), read first through the storage's own engine, so nothing changes there. The
    pools are closed afterwards (``dispose`` of a dagster-postgres storage leaves its engine alone: it had
    nothing to close). A storage that is not PostgreSQL (a ``dagster.yaml`` of your own) is left as it is.
    """
    timeout_ms = _statement_timeout_ms(instance.event_log_storage)
    if timeout_ms is None:
        yield
        return
    instance.optimize_for_webserver(statement_timeout=timeout_ms, pool_recycle=KEPT_CONNECTION_SECONDS,
                                    max_overflow=8)
    try:
        yield
    finally:
        for storage in (instance.run_storage, instance.event_log_storage, instance.schedule_storage):
            engine = getattr(storage, "_engine", None)  # the pool optimize_for_webserver made
            if engine is not None:
                engine.dispose()


def _statement_timeout_ms(storage) -> int | None:
    """The ``statement_timeout`` a connection of this dagster-postgres storage gets, through the storage's own
    engine (its driver, URL and token provider); None for another storage, or when it cannot be read (the run
    then stores its events as dagster-postgres does by default)."""
    engine = getattr(storage, "_engine", None)
    if not getattr(storage, "postgres_url", None) or engine is None:
        return None
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT setting FROM pg_settings WHERE name = 'statement_timeout'")
                       .scalar())
    except Exception:  # an optimization only: the run goes on without it (logged at DEBUG)
        logging.getLogger(__name__).debug("the Dagster instance's connections are not kept", exc_info=True)
        return None


def _metrics(result, snapshot_date: dt.date, batch_size: int) -> dict:
    """The materialization's metadata and the checks' outcomes, as the CLI prints them (JSON): the shape of
    :func:`snapshot_pipeline.run_summary.run_metrics`, which the HTTP status body shares."""
    from snapshot_pipeline.names import ASSET_NAME  # noqa: PLC0415
    from snapshot_pipeline.run_summary import run_metrics  # noqa: PLC0415

    events = result.asset_materializations_for_node(ASSET_NAME)
    metadata = {key: value.value for key, value in events[-1].metadata.items()}
    totals = metadata.pop("currency_totals", None)
    metadata["currency_totals"] = [dict(record.data) for record in totals.records] if totals is not None else []
    metadata["batch_size"] = batch_size
    checks = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return run_metrics(snapshot_date.isoformat(), result.run_id, metadata,
                       [(c.check_name, c.passed, c.severity.value) for c in checks])


def _failure(result) -> str:
    """The innermost message of the run's first step failure (Dagster wraps the asset's exception)."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            return run_errors.user_error(event.step_failure_data.error).message.strip()
    return "see the Dagster run logs"


def summary_line(out: dict) -> str:
    """One line per materialized day (stderr for `snapshot`, the table row for `demo`)."""
    checks = out.get("checks", {})
    passed = sum(1 for v in checks.values() if v == "passed")
    return (f"{out['snapshot_date']}  {out['dagster/row_count']:,} rows  {out['balances_changed']:,} changed"
            f"  {out['duration_ms']:,} ms  {out['snapshots_per_second']:,.0f} rows/s"
            f"  checks {passed}/{len(checks)} passed  run {out['run_id']}")
