"""SNAPSHOT_EXECUTOR picks the executor of every job; the Kubernetes one is configured and validated at load."""

from __future__ import annotations

import pytest

from snapshot_pipeline.definitions import build_definitions
from snapshot_pipeline.defs.common.resources import SnapshotStoreResource
from snapshot_pipeline.names import SNAPSHOT_JOB
from snapshot_pipeline.parsing import SettingsError
from snapshot_pipeline.settings import load_settings


def settings_with(tmp_path, **env):
    return load_settings({"SNAPSHOT_HOME": str(tmp_path), "SNAPSHOT_START_DATE": "2026-10-01", **env})


def job_executor(settings):
    defs = build_definitions(settings, SnapshotStoreResource())
    return defs.resolve_job_def(SNAPSHOT_JOB).executor_def


def resolved_config(executor) -> dict:
    """The executor's configuration as Dagster resolves it for a run, validated against its schema."""
    result = executor.config_schema.resolve_config({})
    assert result.success, result.errors
    return result.value["config"]


def test_the_default_runs_every_step_in_the_run_process(tmp_path):
    assert job_executor(settings_with(tmp_path)).name == "in_process"


def test_multiprocess_is_bounded_by_the_configured_concurrency(tmp_path):
    executor = job_executor(settings_with(tmp_path, SNAPSHOT_EXECUTOR="multiprocess",
                                          SNAPSHOT_MAX_CONCURRENT_STEPS="3"))
    assert executor.name == "multiprocess"
    assert resolved_config(executor)["max_concurrent"] == 3


def test_the_kubernetes_executor_gets_the_namespace_and_the_environment_secret(tmp_path):
    pytest.importorskip("dagster_k8s")
    executor = job_executor(settings_with(tmp_path, SNAPSHOT_EXECUTOR="k8s", SNAPSHOT_K8S_NAMESPACE="ledger",
                                          SNAPSHOT_K8S_ENV_SECRET="snapshots-env"))
    assert executor.name == "k8s"
    config = resolved_config(executor)  # validated against dagster-k8s's own schema
    assert config["job_namespace"] == "ledger" and config["env_secrets"] == ["snapshots-env"]
    assert config["step_k8s_config"]["container_config"]["resources"]["limits"]["memory"] == "2Gi"


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("SNAPSHOT_EXECUTOR", "celery", "must be one of in_process, multiprocess, k8s"),
    ("SNAPSHOT_K8S_NAMESPACE", "Ledger_NS", "is not a Kubernetes name"),
    ("SNAPSHOT_MAX_CONCURRENT_STEPS", "0", "SNAPSHOT_MAX_CONCURRENT_STEPS"),
])
def test_bad_executor_settings_are_refused_with_the_variable_named(tmp_path, variable, value, message):
    with pytest.raises(SettingsError, match=message):
        settings_with(tmp_path, **{variable: value})
