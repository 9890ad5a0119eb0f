"""The sharded job's step outputs in the store: a run's outputs, once removed, stay removed."""

import dagster as dg

from snapshot_pipeline.defs.common.resources import (
    PLAN_OUTPUT,
    PLAN_STEP,
    SnapshotStoreResource,
    StepOutputsInStoreIOManager,
    remove_step_outputs,
)

RUN = "1b3c5d7e-0000-4000-8000-000000000001"


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _write(io_manager, step: str, name: str, obj, mapping_key: str | None = None) -> None:
    context = dg.build_output_context(run_id=RUN, step_key=step, name=name, mapping_key=mapping_key)
    io_manager.handle_output(context, obj)


def test_outputs_pass_between_steps_and_go_with_the_run(tmp_path):
    store = tmp_path / "store"
    io_manager = StepOutputsInStoreIOManager(snapshot_store=SnapshotStoreResource(storage_uri=str(store)))
    _write(io_manager, PLAN_STEP, PLAN_OUTPUT, {"shards": 2})
    _write(io_manager, "merge_shard[shard_0]", "result", {"shard": 0})
    upstream = dg.build_output_context(run_id=RUN, step_key="merge_shard[shard_0]", name="result")
    assert io_manager.load_input(dg.build_input_context(upstream_output=upstream)) == {"shard": 0}
    assert len(_files(store)) == 2

    remove_step_outputs(str(store), RUN)
    assert _files(store) == []


def test_an_output_written_after_its_run_was_removed_removes_itself(tmp_path):
    """The race a failing shard meets: another shard returns while the run's outputs are being removed."""
    store = tmp_path / "store"
    io_manager = StepOutputsInStoreIOManager(snapshot_store=SnapshotStoreResource(storage_uri=str(store)))
    _write(io_manager, PLAN_STEP, PLAN_OUTPUT, {"shards": 2})
    remove_step_outputs(str(store), RUN)

    _write(io_manager, "merge_shard[shard_1]", "result", {"shard": 1})
    assert _files(store) == []
