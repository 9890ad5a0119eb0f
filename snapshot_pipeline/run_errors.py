"""The user's exception behind a failed Dagster step: the one unwrapper, for the CLI's summary, the
failure alert and the HTTP run status.

No dagster import: it works on Dagster's serialized error records (``SerializableErrorInfo``) and on the
same records as the GraphQL API returns them (``{"message", "className", "cause"}``), by shape.
"""

from __future__ import annotations

STEP_WRAPPER = "DagsterExecutionStepExecutionError"


def user_error(error):
    """``error`` without Dagster's step-execution wrappers: the exception the asset or check raised."""
    while error is not None and error.cause is not None and STEP_WRAPPER in (error.cls_name or ""):
        error = error.cause
    return error


def user_error_message(error: dict | None) -> str | None:
    """The message of :func:`user_error` for an error record as the GraphQL API returns it."""
    while error and error.get("cause") and STEP_WRAPPER in (error.get("className") or ""):
        error = error["cause"]
    return error.get("message") if error else None
