"""A small client of the Dagster webserver's GraphQL API (httpx): launch snapshot runs, read their status.

The HTTP service uses it for Blnk's ``POST /balances-snapshots``: a run of ``balance_snapshots_job``
for one partition is launched on the configured Dagster instance (``DAGSTER_WEBSERVER_URL``), so it
shows up, with its logs and metrics, in the Dagster UI like any other run. It does not import
dagster (the webserver is a separate process).
"""

from __future__ import annotations

import json
import re

import httpx

from snapshot_pipeline.names import ASSET_NAME, PARTITION_TAG, SNAPSHOT_JOB

DONE_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}
# the asset's progress log line (defs/assets.py Progress):
# "operation=balance_snapshot snapshot_date=D status=progress rows=N batches=B snapshots_per_second=R"
_PROGRESS = re.compile(r"operation=balance_snapshot snapshot_date=\S+ status=progress\b")
_FIELD = re.compile(r"(\w+)=(\S+)")


class DagsterUnavailable(RuntimeError):
    """The Dagster webserver cannot be reached, or the code location is not loaded."""


class RunNotFound(LookupError):
    def __init__(self, run_id: str):
        super().__init__(f"run {run_id!r} does not exist")
        self.run_id = run_id


class LaunchRejected(ValueError):
    """Dagster refused the run (invalid config or partition); the message says why."""


_JOBS_QUERY = """
query SnapshotPipelineJobs {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection { nodes { name location { name } jobs { name } } }
    ... on PythonError { message }
  }
}
"""

_LAUNCH_MUTATION = """
mutation SnapshotPipelineLaunch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}
"""

_RUN_QUERY = """
query SnapshotPipelineRun($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      runId
      jobName
      status
      startTime
      endTime
      tags { key value }
      assetMaterializations {
        assetKey { path }
        partition
        metadataEntries {
          __typename
          label
          ... on IntMetadataEntry { intValue intRepr }
          ... on FloatMetadataEntry { floatValue }
          ... on TextMetadataEntry { text }
          ... on PathMetadataEntry { path }
          ... on JsonMetadataEntry { jsonString }
          ... on BoolMetadataEntry { boolValue }
        }
      }
      eventConnection(limit: 5000) {
        events {
          __typename
          ... on MessageEvent { message timestamp }
          ... on ExecutionStepFailureEvent { error { message cause { message } } }
          ... on RunFailureEvent { message }
        }
      }
    }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}
"""


class DagsterClient:
    """GraphQL over HTTP to one Dagster webserver."""

    def __init__(self, base_url: str, timeout: float = 10.0, transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        self._selector: dict | None = None

    def close(self) -> None:
        self._http.close()

    def _graphql(self, document: str, variables: dict | None = None) -> dict:
        try:
            response = self._http.post("/graphql", json={"query": document, "variables": variables or {}})
        except httpx.HTTPError as exc:
            raise DagsterUnavailable(f"the Dagster webserver at {self.base_url} is unreachable: {exc}") from exc
        if response.status_code != 200:
            raise DagsterUnavailable(
                f"the Dagster webserver at {self.base_url} answered HTTP {response.status_code}: {response.text[:300]}")
        payload = response.json()
        if payload.get("errors"):
            raise DagsterUnavailable(f"GraphQL error from {self.base_url}: {payload['errors'][0].get('message')}")
        return payload["data"]

    def selector(self) -> dict:
        """The code location and repository that hold ``balance_snapshots_job`` (looked up once)."""
        if self._selector is None:
            data = self._graphql(_JOBS_QUERY)["repositoriesOrError"]
            if data["__typename"] != "RepositoryConnection":
                raise DagsterUnavailable(f"Dagster could not list its repositories: {data.get('message')}")
            for repo in data["nodes"]:
                if any(job["name"] == SNAPSHOT_JOB for job in repo["jobs"]):
                    self._selector = {"repositoryLocationName": repo["location"]["name"],
                                      "repositoryName": repo["name"], "jobName": SNAPSHOT_JOB}
                    break
            else:
                raise DagsterUnavailable(
                    f"no loaded code location of the Dagster webserver at {self.base_url} has {SNAPSHOT_JOB}")
        return self._selector

    def launch_snapshot(self, partition_key: str, batch_size: int, tags: dict[str, str] | None = None) -> dict:
        """Launch ``balance_snapshots_job`` for one partition; returns ``{"run_id", "status"}``."""
        params = {
            "selector": self.selector(),
            "runConfigData": {"ops": {ASSET_NAME: {"config": {"batch_size": batch_size}}}},
            "executionMetadata": {"tags": [{"key": PARTITION_TAG, "value": partition_key},
                                           *({"key": k, "value": v} for k, v in (tags or {}).items())]},
        }
        result = self._graphql(_LAUNCH_MUTATION, {"executionParams": params})["launchRun"]
        kind = result["__typename"]
        if kind == "LaunchRunSuccess":
            return {"run_id": result["run"]["runId"], "status": result["run"]["status"]}
        if kind == "RunConfigValidationInvalid":
            raise LaunchRejected("; ".join(e["message"] for e in result["errors"]))
        if kind in ("PythonError", "PipelineNotFoundError", "RepositoryLocationNotFound"):
            self._selector = None  # the location may have been reloaded or renamed
            raise DagsterUnavailable(f"Dagster could not launch the run ({kind}): {result.get('message')}")
        raise LaunchRejected(f"Dagster refused the run ({kind}): {result.get('message')}")

    def run_url(self, run_id: str) -> str:
        """The run's page in the Dagster UI."""
        return f"{self.base_url}/runs/{run_id}"

    def run(self, run_id: str) -> dict:
        """Status of a run and, once it succeeded, the metrics of its materialization."""
        result = self._graphql(_RUN_QUERY, {"runId": run_id})["runOrError"]
        kind = result["__typename"]
        if kind == "RunNotFoundError":
            raise RunNotFound(run_id)
        if kind != "Run":
            raise DagsterUnavailable(f"Dagster could not read run {run_id}: {result.get('message')}")
        tags = {t["key"]: t["value"] for t in result["tags"]}
        out = {
            "run_id": result["runId"],
            "job_name": result["jobName"],
            "status": result["status"],
            "done": result["status"] in DONE_STATUSES,
            "partition": tags.get(PARTITION_TAG),
            "start_time": result["startTime"],
            "end_time": result["endTime"],
            "metrics": None,
            "progress": None,
            "error": None,
            "run_url": self.run_url(result["runId"]),
        }
        events = result["eventConnection"]["events"]
        if not out["done"]:
            out["progress"] = _progress(events)
        for materialization in result["assetMaterializations"]:
            if materialization["assetKey"]["path"] == [ASSET_NAME]:
                out["metrics"] = {entry["label"]: _metadata_value(entry) for entry in materialization["metadataEntries"]}
        if result["status"] == "FAILURE":
            messages = [_error_message(e.get("error")) or e.get("message") for e in events
                        if e["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent")]
            out["error"] = next((m.strip() for m in messages if m), "the run failed; see its logs in the Dagster UI")
        return out


def _error_message(error: dict | None) -> str | None:
    """The innermost message of a step failure (Dagster wraps the asset's exception)."""
    while error and error.get("cause") and "Error occurred while executing" in (error.get("message") or ""):
        error = error["cause"]
    return error.get("message") if error else None


def _progress(events: list[dict]) -> dict | None:
    """Rows so far and the rate, from the latest progress line the asset logged (None before the first)."""
    for event in reversed(events):
        message = event.get("message") or ""
        if event["__typename"].endswith("LogMessageEvent") and _PROGRESS.search(message):
            fields = dict(_FIELD.findall(message))
            try:
                rows = int(fields["rows"])
            except (KeyError, ValueError):
                continue
            rate = fields.get("snapshots_per_second")
            at = event.get("timestamp")
            return {"rows": rows, "snapshots_per_second": float(rate) if rate else None,
                    "at": float(at) / 1000 if at else None}
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
    return None  # tables and other kinds are shown in the Dagster UI
