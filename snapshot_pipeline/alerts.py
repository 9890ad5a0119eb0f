"""Deliver a JSON alert to a webhook: bounded retries, a timeout per attempt, never raises.

httpx sends it; tenacity is the retry policy (``ATTEMPTS`` attempts, exponential backoff from
``BACKOFF_SECONDS``). Connection errors, timeouts and 5xx/429 answers are retried; any other 4xx is
final (the request itself is wrong). A broken or slow webhook cannot take anything else down: the
caller gets a :class:`Delivery` saying what happened.
"""

from __future__ import annotations

import dataclasses
import json

import httpx
import tenacity

from snapshot_pipeline.db import redact

TIMEOUT_SECONDS = 5.0
ATTEMPTS = 3
BACKOFF_SECONDS = 0.5
HEADERS = {"Content-Type": "application/json", "User-Agent": "snapshot-pipeline-alerts"}


@dataclasses.dataclass(frozen=True)
class Delivery:
    """Outcome of :func:`post_json`."""

    delivered: bool
    attempts: int
    status: int | None
    error: str | None

    def as_dict(self) -> dict:
        """The outcome as a JSON-able dict (logged by the failure sensor)."""
        return dataclasses.asdict(self)


class _RetryableAnswer(Exception):
    """A 5xx or 429 answer: the webhook may accept the alert on a later attempt."""

    def __init__(self, response: httpx.Response):
        super().__init__(f"HTTP {response.status_code} {response.reason_phrase}")
        self.status = response.status_code


def _retry_policy(attempts: int, backoff: float) -> tenacity.Retrying:
    """Up to ``attempts`` attempts on any failure, waiting ``backoff * 2**(n-1)`` s after the n-th."""
    return tenacity.Retrying(stop=tenacity.stop_after_attempt(attempts),
                             wait=tenacity.wait_exponential(multiplier=backoff), reraise=True)


def post_json(url: str, payload: dict, *, timeout: float = TIMEOUT_SECONDS, attempts: int = ATTEMPTS,
              backoff: float = BACKOFF_SECONDS) -> Delivery:
    """POST ``payload`` as JSON; retry on connection errors, timeouts and 5xx/429 answers, up to ``attempts``."""
    body = json.dumps(payload, default=str).encode()
    made = 0
    try:
        with httpx.Client(timeout=timeout, headers=HEADERS, follow_redirects=True) as client:
            for attempt in _retry_policy(attempts, backoff):
                with attempt:
                    made = attempt.retry_state.attempt_number
                    response = client.post(url, content=body)
                    if response.status_code >= 500 or response.status_code == 429:
                        raise _RetryableAnswer(response)
    except _RetryableAnswer as exc:
        status, error = exc.status, str(exc)
    except Exception as exc:  # noqa: BLE001 - connection errors, timeouts, resets: all mean "not delivered"
        status, error = None, f"{type(exc).__name__}: {exc}"
    else:
        if response.status_code < 400:
            return Delivery(True, made, response.status_code, None)
        # the request itself is wrong: retrying won't help
        return Delivery(False, made, response.status_code, f"HTTP {response.status_code} {response.reason_phrase}")
    return Delivery(False, made, status, f"{error} (webhook {redact(url)}, {made} attempts)")
