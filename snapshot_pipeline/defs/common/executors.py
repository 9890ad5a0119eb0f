"""How a run executes its steps, chosen by ``SNAPSHOT_EXECUTOR`` (default ``in_process``).

* ``in_process``: every step of a run in the run's own process (a snapshot run is one asset step and
  a few check steps; starting a process per step would cost more than the work);
* ``multiprocess``: one process per step, at most ``SNAPSHOT_MAX_CONCURRENT_STEPS`` (default 2) at once;
* ``k8s``: one Kubernetes Job per step (dagster-k8s ``k8s_job_executor``, the ``[k8s]`` extra), in
  ``SNAPSHOT_K8S_NAMESPACE`` (default ``dagster``), with the environment of the Secret named by
  ``SNAPSHOT_K8S_ENV_SECRET`` (default ``snapshot-pipeline-env``): the same variables as everywhere
  (LEDGER_DATABASE_URL, SNAPSHOT_STORAGE_URI=s3://..., AWS_*). docs/deploying.md shows the deployment.
"""

from __future__ import annotations

import dagster as dg

from snapshot_pipeline.parsing import SettingsError
from snapshot_pipeline.settings import Settings

STEP_RESOURCES = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}


def executor_for(settings: Settings) -> dg.ExecutorDefinition:
    """The executor of every job of the code location."""
    if settings.executor == "in_process":
        return dg.in_process_executor
    if settings.executor == "multiprocess":
        return dg.multiprocess_executor.configured({"max_concurrent": settings.max_concurrent_steps},
                                                   name="multiprocess")
    return k8s_executor(settings)


def k8s_executor(settings: Settings) -> dg.ExecutorDefinition:
    """``k8s_job_executor`` configured for this project (its config is validated here, at load)."""
    try:
        from dagster_k8s import k8s_job_executor  # noqa: PLC0415 - optional: the [k8s] extra
    except ImportError as exc:
        raise SettingsError("SNAPSHOT_EXECUTOR=k8s needs dagster-k8s: pip install 'snapshot_pipeline[k8s]'") from exc
    return k8s_job_executor.configured(
        {
            "job_namespace": settings.k8s_namespace,
            "env_secrets": [settings.k8s_env_secret],
            "max_concurrent": settings.max_concurrent_steps,
            "step_k8s_config": {"container_config": {"resources": STEP_RESOURCES}},
        },
        name="k8s",
    )
