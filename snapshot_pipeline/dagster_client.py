"""The Dagster webserver's GraphQL API, for the HTTP service: launch snapshot runs, read their status.

Blnk's ``POST /balances-snapshots`` launches a run of ``balance_snapshots_job`` for one partition on the
configured Dagster instance (``DAGSTER_WEBSERVER_URL``), so it shows up, with its logs and metrics, in the
Dagster UI like any other run.

Dagster's own client, :class:`dagster_graphql.DagsterGraphQLClient`, launches the run
(``submit_job_execution``) and reads its status (``get_run_status``). What it does not offer is read
with two small named queries sent through the same library stack (``gql`` over ``requests``), since the
client has no public way to send a query of one's own: :data:`JOBS_QUERY` (which code location holds the
job, looked up once) and :data:`RUN_DETAILS_QUERY` (the run's tags, times, materialization metadata,
progress lines and failure messages). ``dagster_graphql`` imports dagster (~0.9 s), so it is imported
when a client is built (at the service's startup), not when this module is.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any
from urllib.parse import urlsplit

from snapshot_pipeline import progress, run_errors
from snapshot_pipeline.names import ASSET_NAME, LATE_TRANSACTIONS_TAG, PARTITION_TAG, SNAPSHOT_JOB, TRIGGER_TAG
from snapshot_pipeline.outages import OutageLog
from snapshot_pipeline.query.instants import iso_utc
from snapshot_pipeline.run_summary import run_metrics

DONE_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}
# what submit_job_execution raises for a location that went away (reloaded, renamed): Dagster is not ready
_UNAVAILABLE_KINDS = ("PythonError", "PipelineNotFoundError", "JobNotFoundError", "RepositoryLocationNotFound")
_CONFIG_INVALID_KINDS = ("RunConfigValidationInvalid", "PipelineConfigValidationInvalid")


logger = logging.getLogger("snapshot_pipeline.dagster_client")
UNAVAILABLE_HINT = ("start it with `snapshot-pipeline ui` (or `make ui`), or set DAGSTER_WEBSERVER_URL to a running"
                    " one, then retry")


class DagsterUnavailable(RuntimeError):
    """The Dagster webserver cannot be reached, or the code location is not loaded."""


class RunNotFound(LookupError):
    """No run with this id exists on the instance."""

    def __init__(self, run_id: str):
        super().__init__(f"run {run_id!r} does not exist")
        self.run_id = run_id


class LaunchRejected(ValueError):
    """Dagster refused the run (invalid config or partition); the message says why."""


JOBS_QUERY = """
query SnapshotPipelineJobs {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection { nodes { name location { name } jobs { name } } }
    ... on PythonError { message }
  }
}
"""

RUN_DETAILS_QUERY = """
query SnapshotPipelineRunDetails($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      runId
      jobName
      startTime
      endTime
      tags { key value }
      assetMaterializations {
        assetKey { path }
        metadataEntries {
          __typename
          label
          ... on IntMetadataEntry { intValue intRepr }
          ... on FloatMetadataEntry { floatValue }
          ... on TextMetadataEntry { text }
          ... on PathMetadataEntry { path }
          ... on JsonMetadataEntry { jsonString }
          ... on BoolMetadataEntry { boolValue }
          ... on TableMetadataEntry { table { records } }
        }
      }
      eventConnection(limit: 5000) {
        events {
          __typename
          ... on MessageEvent { message timestamp }
          ... on AssetCheckEvaluationEvent { evaluation { checkName success severity } }
          ... on ExecutionStepFailureEvent { error { message className cause { message className } } }
          ... on RunFailureEvent { message }
        }
      }
    }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}
"""


# a run of the job for one partition that has not finished yet: a second trigger answers it (idempotent POST)
ACTIVE_RUNS_QUERY = """
query SnapshotPipelineActiveRuns($filter: RunsFilter!) {
  runsOrError(filter: $filter, limit: 1) {
    __typename
    ... on Runs { results { runId status } }
    ... on PythonError { message }
  }
}
"""
ACTIVE_STATUSES = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED"]
# what GET /metrics reads from the instance: failed snapshot runs, and the runs the late-row repair scan requested
# (each tagged with the late journal rows it found, LATE_TRANSACTIONS_TAG)
RUN_FACTS_QUERY = """
query SnapshotPipelineRunFacts($failed: RunsFilter!, $repairs: RunsFilter!) {
  failed: runsOrError(filter: $failed) { __typename ... on Runs { count } ... on PythonError { message } }
  repairs: runsOrError(filter: $repairs, limit: 1000) {
    __typename
    ... on Runs { count results { tags { key value } } }
    ... on PythonError { message }
  }
}
"""


def _one_line(exc: BaseException) -> str:
    """An exception as one short line (no newlines: it goes into an HTTP error message)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


class DagsterClient:
    """One Dagster webserver (``base_url``, e.g. ``http://127.0.0.1:3000``), through ``dagster_graphql``.

    Each call builds its own transport (``requests``, ``timeout`` seconds), so one client may serve
    concurrent requests (the HTTP service's thread pool) without sharing a connection.

    A webserver that becomes unreachable is logged once as a warning (every later failure to reach it at
    DEBUG: a service scraped for ``/metrics`` every 15 s would otherwise repeat it), and once at INFO when it
    answers again; an error it answers with (HTTP 5xx, a GraphQL error) is a warning each time.
    """

    def __init__(self, base_url: str, timeout: float = 10.0):
        import dagster_graphql  # noqa: F401, PLC0415 - loads dagster here (the service's startup), not on a request

        self.base_url = base_url.rstrip("/")
        self._timeout = max(1, round(timeout))
        self._selector: dict | None = None
        self._outages = OutageLog(logger, f"Dagster webserver {self.base_url}")  # only unreachability is one

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own session."""

    # ------------------------------------------------------------------------------------------ transport

    def _transport(self):
        from gql.transport.requests import RequestsHTTPTransport  # noqa: PLC0415

        return RequestsHTTPTransport(url=f"{self.base_url}/graphql", timeout=self._timeout)

    def _client(self):
        """Dagster's client of this webserver (``dagster_graphql`` imports dagster: imported here)."""
        from dagster_graphql import DagsterGraphQLClient  # noqa: PLC0415

        parts = urlsplit(self.base_url)
        return DagsterGraphQLClient(parts.hostname or "", port_number=parts.port, use_https=parts.scheme == "https",
                                    timeout=self._timeout, path_prefix=parts.path.rstrip("/"),
                                    transport=self._transport())

    def _query(self, document: str, variables: dict[str, Any] | None = None) -> dict:
        """One of this module's named queries; any failure to get an answer is :class:`DagsterUnavailable`."""
        from gql import Client, GraphQLRequest  # noqa: PLC0415

        try:
            answer = Client(transport=self._transport()).execute(GraphQLRequest(document, variable_values=variables))
        except Exception as exc:
            raise self._unavailable(exc) from exc
        self._outages.answered()
        return answer

    def _unavailable(self, exc: Exception) -> DagsterUnavailable:
        """A failure to get an answer, as what a user can act on; the library's own text goes to the log only."""
        from gql.transport.exceptions import (  # noqa: PLC0415
            TransportProtocolError,
            TransportQueryError,
            TransportServerError,
        )

        # gql's own error (from a query) or the one Dagster's client wraps (a launch, a status); gql's wraps
        # requests' in turn, so the first of the two that is gql's says what the webserver did
        answered = TransportServerError | TransportQueryError | TransportProtocolError
        chain = [e for e in (exc, exc.__cause__) if e is not None]
        cause = next((e for e in chain if isinstance(e, answered)), chain[-1])
        if isinstance(cause, TransportServerError):
            what = f"answered HTTP {cause.code}"
        elif isinstance(cause, TransportQueryError):
            what = "answered a GraphQL error"
        elif isinstance(cause, TransportProtocolError):
            what = "answered something other than Dagster's GraphQL"
        else:
            what = "is unreachable"
        if what == "is unreachable":  # an outage: warned about once, until the webserver answers again
            self._outages.down(f"{self._outages.source}: {_one_line(cause)} ({UNAVAILABLE_HINT})")
        else:  # an error is an answer: an outage before it is over, and the error a warning each time
            self._outages.answered()
            logger.warning("%s: %s", self._outages.source, _one_line(cause))
        return DagsterUnavailable(f"the Dagster webserver at {self.base_url} {what}: {UNAVAILABLE_HINT}")

    # ---------------------------------------------------------------------------------------------- calls

    def selector(self) -> dict:
        """The code location and repository that hold ``balance_snapshots_job`` (looked up once)."""
        if self._selector is None:
            data = self._query(JOBS_QUERY)["repositoriesOrError"]
            if data["__typename"] != "RepositoryConnection":
                raise DagsterUnavailable(f"Dagster could not list its repositories: {data.get('message')}")
            for repo in data["nodes"]:
                if any(job["name"] == SNAPSHOT_JOB for job in repo["jobs"]):
                    self._selector = {"repository_location_name": repo["location"]["name"],
                                      "repository_name": repo["name"]}
                    break
            else:
                raise DagsterUnavailable(
                    f"no loaded code location of the Dagster webserver at {self.base_url} has {SNAPSHOT_JOB}")
        return self._selector

    def launch_snapshot(self, partition_key: str, batch_size: int, tags: dict[str, str] | None = None) -> dict:
        """Launch ``balance_snapshots_job`` for one partition (``submit_job_execution``); returns ``{"run_id"}``."""
        from dagster_graphql import DagsterGraphQLClientError  # noqa: PLC0415

        selector = self.selector()
        try:
            run_id = self._client().submit_job_execution(
                SNAPSHOT_JOB, **selector, run_config={"ops": {ASSET_NAME: {"config": {"batch_size": batch_size}}}},
                tags={PARTITION_TAG: partition_key, **(tags or {})})
        except DagsterGraphQLClientError as exc:
            raise self._launch_error(exc) from None
        self._outages.answered()
        return {"run_id": run_id}

    def _launch_error(self, exc: Exception) -> Exception:
        """What a refused launch means: Dagster not ready (503) or the run itself refused (400)."""
        if exc.__cause__ is not None or len(exc.args) < 2:
            return self._unavailable(exc)
        kind, detail = exc.args[0], exc.args[1]
        if kind in _CONFIG_INVALID_KINDS:
            return LaunchRejected("; ".join(e["message"] for e in detail))
        if kind in _UNAVAILABLE_KINDS:
            self._selector = None  # the location may have been reloaded or renamed
            return DagsterUnavailable(f"Dagster could not launch the run ({kind}): {detail}")
        return LaunchRejected(f"Dagster refused the run ({kind}): {detail}")

    def active_snapshot_run(self, partition_key: str) -> str | None:
        """The id of a run of ``balance_snapshots_job`` for ``partition_key`` that is queued or running, if any."""
        variables = {"filter": {"pipelineName": SNAPSHOT_JOB, "statuses": ACTIVE_STATUSES,
                                "tags": [{"key": PARTITION_TAG, "value": partition_key}]}}
        data = self._query(ACTIVE_RUNS_QUERY, variables)["runsOrError"]
        if data["__typename"] != "Runs":
            raise DagsterUnavailable(f"Dagster could not list its runs: {data.get('message')}")
        results = data["results"]
        return results[0]["runId"] if results else None

    def pipeline_run_facts(self) -> dict[str, int]:
        """``failed_runs`` of ``balance_snapshots_job``; ``repair_runs`` requested by the late-row repair scan and
        the ``late_transactions`` they were requested for (the latest 1,000 such runs)."""
        variables = {"failed": {"pipelineName": SNAPSHOT_JOB, "statuses": ["FAILURE"]},
                     "repairs": {"tags": [{"key": TRIGGER_TAG, "value": "late_transaction_repair"}]}}
        data = self._query(RUN_FACTS_QUERY, variables)
        if data["failed"]["__typename"] != "Runs" or data["repairs"]["__typename"] != "Runs":
            raise DagsterUnavailable("Dagster could not count its runs")
        late = 0
        for run in data["repairs"]["results"]:
            value = next((t["value"] for t in run["tags"] if t["key"] == LATE_TRANSACTIONS_TAG), "0")
            late += int(value) if value.isascii() and value.isdigit() else 0
        return {"failed_runs": data["failed"]["count"], "repair_runs": data["repairs"]["count"],
                "late_transactions": late}

    def run_url(self, run_id: str) -> str:
        """The run's page in the Dagster UI."""
        return f"{self.base_url}/runs/{run_id}"

    def status(self, run_id: str) -> str:
        """The run's status (``get_run_status``): QUEUED, STARTING, STARTED, SUCCESS, FAILURE, CANCELED..."""
        from dagster_graphql import DagsterGraphQLClientError  # noqa: PLC0415

        try:
            status = self._client().get_run_status(run_id).value
        except DagsterGraphQLClientError as exc:
            if exc.__cause__ is None and exc.args and "NotFound" in str(exc.args[0]):
                raise RunNotFound(run_id) from None
            if exc.__cause__ is None and len(exc.args) >= 2:
                raise DagsterUnavailable(f"Dagster could not read run {run_id}: {exc.args[1]}") from None
            raise self._unavailable(exc) from None
        self._outages.answered()
        return status

    def run(self, run_id: str) -> dict:
        """Status of a run; while it runs, its progress; once it succeeded, its metrics; if it failed, why.

        The status is read first, then the details: a run seen done has its materialization in them.
        """
        status = self.status(run_id)
        result = self._query(RUN_DETAILS_QUERY, {"runId": run_id})["runOrError"]
        kind = result["__typename"]
        if kind == "RunNotFoundError":
            raise RunNotFound(run_id)
        if kind != "Run":
            raise DagsterUnavailable(f"Dagster could not read run {run_id}: {result.get('message')}")
        return _run_body(result, status, self.run_url(result["runId"]))


def _instant(seconds: float | None) -> str | None:
    """Dagster's Unix seconds as the service's one instant shape (RFC 3339, UTC ``Z``, microseconds)."""
    return iso_utc(dt.datetime.fromtimestamp(seconds, dt.UTC)) if seconds is not None else None


def _run_body(result: dict, status: str, run_url: str) -> dict:
    """The status endpoint's body from the run's details: ``metrics`` in the CLI's JSON shape once done."""
    tags = {t["key"]: t["value"] for t in result["tags"]}
    events = result["eventConnection"]["events"]
    done = status in DONE_STATUSES
    partition = tags.get(PARTITION_TAG)
    out = {"run_id": result["runId"], "job_name": result["jobName"], "status": status, "done": done,
           "partition": partition, "start_time": _instant(result["startTime"]),
           "end_time": _instant(result["endTime"]), "metrics": None,
           "progress": _progress(events) if not done or status == "SUCCESS" else None,  # a success's last: 100%
           "error": None, "run_url": run_url}
    for materialization in result["assetMaterializations"]:
        if materialization["assetKey"]["path"] == [ASSET_NAME]:
            metadata = {entry["label"]: _metadata_value(entry) for entry in materialization["metadataEntries"]}
            checks = [(e["evaluation"]["checkName"], e["evaluation"]["success"], e["evaluation"]["severity"])
                      for e in events if e["__typename"] == "AssetCheckEvaluationEvent"]
            out["metrics"] = run_metrics(partition or "", result["runId"], metadata, checks)
    if status == "FAILURE":
        messages = [run_errors.user_error_message(e.get("error")) or e.get("message") for e in events
                    if e["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent")]
        out["error"] = next((m.strip() for m in messages if m), "the run failed; see its logs in the Dagster UI")
    return out


def _progress(events: list[dict]) -> dict | None:
    """Rows so far out of the partition's row count, and the rate, from the latest progress line the run
    logged (:func:`snapshot_pipeline.progress.parse_line`; None before the first)."""
    for event in reversed(events):
        if not event["__typename"].endswith("LogMessageEvent"):
            continue
        report = progress.parse_line(event.get("message") or "")
        if report is None:
            continue
        at = event.get("timestamp")
        return {**report.as_dict(), "at": _instant(float(at) / 1000) if at else None}
    return None


def _metadata_value(entry: dict):
    kind = entry["__typename"]
    if kind == "IntMetadataEntry":
        return entry["intValue"] if entry.get("intValue") is not None else int(entry["intRepr"])
    if kind == "FloatMetadataEntry":
        return entry["floatValue"]
    if kind == "TextMetadataEntry":
        return entry["text"]
    if kind == "PathMetadataEntry":
        return entry["path"]
    if kind == "JsonMetadataEntry":
        return json.loads(entry["jsonString"])
    if kind == "BoolMetadataEntry":
        return entry["boolValue"]
    if kind == "TableMetadataEntry":
        return [json.loads(record) for record in entry["table"]["records"]]
    return None  # tables and other kinds are shown in the Dagster UI
