"""The user's exception behind a failed Dagster step (the CLI's summary and the failure alert show it).

No dagster import: it works on Dagster's serialized error records (``SerializableErrorInfo``) by shape.
"""

from __future__ import annotations

STEP_WRAPPER = "DagsterExecutionStepExecutionError"


def user_error(error):
    """``error`` without Dagster's step-execution wrappers: the exception the asset or check raised."""
    while error is not None and error.cause is not None and STEP_WRAPPER in (error.cls_name or ""):
        error = error.cause
    return error
