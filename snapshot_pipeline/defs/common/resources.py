"""Dagster resources: where the ledger is read and where snapshots are written."""

from __future__ import annotations

import json
import os

import dagster as dg
from pydantic import Field

from snapshot_pipeline.settings import Settings, load_settings

# resource field -> the environment variable it reads (docs/configuration.md)
ENVIRONMENT_FIELDS = {
    "ledger_database_url": "LEDGER_DATABASE_URL",
    "snapshot_database_url": "SNAPSHOT_DATABASE_URL",
    "storage_uri": "SNAPSHOT_STORAGE_URI",
}


class SnapshotStoreResource(dg.ConfigurableResource):
    """The ledger to read and the snapshot store (Parquet root and Postgres index) to write.

    Every field defaults to the environment (``LEDGER_DATABASE_URL``,
    ``SNAPSHOT_DATABASE_URL``, ``SNAPSHOT_STORAGE_URI``); unset database URLs mean
    the embedded PostgreSQL in ``.data/``. Values set here override the environment.
    """

    ledger_database_url: str | None = Field(default=None, description="Source ledger URL; unset = environment")
    snapshot_database_url: str | None = Field(default=None, description="Index database URL; unset = ledger's")
    storage_uri: str | None = Field(default=None, description="Parquet root (path or object-store URI)")

    @classmethod
    def from_environment(cls) -> SnapshotStoreResource:
        """The resource of the code location: each variable that is set becomes an ``EnvVar`` field, so the
        UI (Deployment > Resources) shows which variable configures what, without showing its value; an
        unset variable keeps its default (the embedded PostgreSQL, ``.data/snapshots``)."""
        return cls(**{field: dg.EnvVar(name) for field, name in ENVIRONMENT_FIELDS.items() if os.environ.get(name)})

    def settings(self, timezone: str | None = None) -> Settings:
        """The resolved settings of this run, with the partitions' time zone."""
        base = load_settings()
        ledger, index_url, storage = (_resolved(self.ledger_database_url), _resolved(self.snapshot_database_url),
                                      _resolved(self.storage_uri))
        overrides = {
            "ledger_database_url": ledger,
            "snapshot_database_url": index_url or ledger,
            "storage_uri": storage,
            "timezone": timezone,
        }
        return base.with_overrides(**overrides)


def _resolved(value: str | None) -> str | None:
    """A field's value: Dagster resolves ``EnvVar`` fields for runs and sensors; called on the definitions'
    own resource outside them, an ``EnvVar`` still holds the variable's name, so read the variable."""
    if isinstance(value, dg.EnvVar):
        return value.get_value()
    return value


STEP_IO = "step_outputs_in_store"  # the resource key of StepOutputsInStoreIOManager (the sharded job's step outputs)


class StepOutputsInStoreIOManager(dg.ConfigurableIOManager):
    """Step outputs of the sharded job as small JSON objects in the snapshot store.

    ``<root>/.staging/step-outputs/<run id>/<step>/<output>[.<mapping key>].json``: the plan and the
    shard records pass between steps that may run in other processes or Kubernetes pods, which share
    the store (local disk or a bucket) and nothing else. The commit step removes its run's outputs.

    A run's outputs live only while its plan's output (step ``plan_shards``, the run's first) does: a failed
    shard removes the plan's output first, then the rest (:func:`remove_step_outputs`), and every later
    output is checked after it is written and removed again if the plan's is gone. So a shard that returns
    while another removes the run's outputs leaves nothing behind, whichever comes first.
    """

    snapshot_store: SnapshotStoreResource

    def _root(self) -> tuple:
        from snapshot_pipeline.store.location import Store  # noqa: PLC0415 - pyarrow: only when a run needs it

        store = Store.at(self.snapshot_store.settings().storage_uri)
        return store.fs, store.path(STEP_OUTPUTS_DIR)

    def _path(self, context: dg.OutputContext) -> tuple:
        """(filesystem, the run's outputs directory, the output's path)."""
        fs, root = self._root()
        name = context.name + (f".{context.mapping_key}" if context.mapping_key else "")
        run_dir = f"{root}/{context.run_id}"
        return fs, run_dir, f"{run_dir}/{context.step_key}/{name}.json"

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        from snapshot_pipeline.store import records  # noqa: PLC0415 - pyarrow: only when a run needs it

        fs, run_dir, path = self._path(context)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)  # local disk; nothing on object stores
        with fs.open_output_stream(path) as out:
            out.write(json.dumps(obj, sort_keys=True, default=str).encode())
        if context.step_key != PLAN_STEP and not records.is_file(fs, _plan_output(run_dir)):
            fs.delete_file(path)  # the run's outputs were removed while this one was written: it goes too

    def load_input(self, context: dg.InputContext):
        assert context.upstream_output is not None  # every input of the sharded job is a step output
        fs, _, path = self._path(context.upstream_output)
        with fs.open_input_stream(path) as stream:
            return json.loads(stream.read())


def remove_step_outputs(storage_uri: str, run_id: str) -> None:
    """Delete a run's step outputs written by :class:`StepOutputsInStoreIOManager`, the plan's first."""
    from snapshot_pipeline.store import records  # noqa: PLC0415 - pyarrow: only when a run needs it
    from snapshot_pipeline.store.location import Store  # noqa: PLC0415

    store = Store.at(storage_uri)
    run_dir = store.path(STEP_OUTPUTS_DIR, run_id)
    records.delete_if_file(store.fs, _plan_output(run_dir))  # first: an output written from now on sees it gone
    store.remove_tree(run_dir)


def _plan_output(run_dir: str) -> str:
    """Where a run's plan output lies, in the run's outputs directory: while it is there, the run's outputs count."""
    return f"{run_dir}/{PLAN_STEP}/{PLAN_OUTPUT}.json"


STEP_OUTPUTS_DIR = ".staging/step-outputs"
PLAN_STEP, PLAN_OUTPUT = "plan_shards", "plan"  # the sharded run's first step and output (defs/snapshots/jobs.py)
