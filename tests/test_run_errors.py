"""One unwrapper of Dagster's step errors, for serialized errors (CLI, alerts) and GraphQL records (HTTP)."""

from __future__ import annotations

import types

from snapshot_pipeline import run_errors

WRAPPER = "dagster._core.errors.DagsterExecutionStepExecutionError"


def test_the_users_exception_is_found_behind_the_step_wrappers():
    inner = {"message": "SnapshotError: partition 2026-11-02 is not published\n", "className": "SnapshotError",
             "cause": None}
    wrapped = {"message": "Error occurred while executing op \"balance_snapshots\":", "className": WRAPPER,
               "cause": inner}
    assert run_errors.user_error_message(wrapped) == inner["message"]
    assert run_errors.user_error_message(inner) == inner["message"]
    assert run_errors.user_error_message(None) is None
    # a wrapper-shaped message of another class is the user's own: not unwrapped
    assert run_errors.user_error_message({**wrapped, "className": "ValueError"}) == wrapped["message"]

    cause = types.SimpleNamespace(cls_name="SnapshotError", message="inner", cause=None)
    serialized = types.SimpleNamespace(cls_name=WRAPPER, message="wrapper", cause=cause)
    assert run_errors.user_error(serialized).message == "inner"
