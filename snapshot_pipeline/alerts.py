"""Deliver a JSON alert to a webhook: bounded retries, a timeout per attempt, never raises.

Standard library only (``urllib``), so a broken or slow webhook cannot take anything else down:
the caller gets a :class:`Delivery` saying what happened.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request

from snapshot_pipeline.db import redact

TIMEOUT_SECONDS = 5.0
ATTEMPTS = 3
BACKOFF_SECONDS = 0.5


@dataclasses.dataclass(frozen=True)
class Delivery:
    """Outcome of :func:`post_json`."""

    delivered: bool
    attempts: int
    status: int | None
    error: str | None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def post_json(url: str, payload: dict, *, timeout: float = TIMEOUT_SECONDS, attempts: int = ATTEMPTS,
              backoff: float = BACKOFF_SECONDS) -> Delivery:
    """POST ``payload`` as JSON; retry on connection errors, timeouts and 5xx/429 answers, up to ``attempts``."""
    body = json.dumps(payload, default=str).encode()
    status: int | None = None
    error: str | None = None
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(
            url, data=body, method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "snapshot-pipeline-alerts"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only (settings)
                status = response.status
            return Delivery(True, attempt, status, None)
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"HTTP {exc.code} {exc.reason}"
            if exc.code < 500 and exc.code != 429:
                return Delivery(False, attempt, status, error)  # the request itself is wrong: retrying won't help
        except Exception as exc:  # noqa: BLE001 - URLError, timeouts, resets: all mean "not delivered"
            status, error = None, f"{type(exc).__name__}: {exc}"
        if attempt < attempts:
            time.sleep(backoff * 2 ** (attempt - 1))
    return Delivery(False, attempts, status, f"{error} (webhook {redact(url)}, {attempts} attempts)")
