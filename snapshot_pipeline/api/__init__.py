"""The HTTP service: Blnk-compatible balance-at-time queries and the snapshot trigger (FastAPI).

``snapshot-pipeline serve`` runs it with uvicorn; OpenAPI docs are at ``/docs``.

* ``GET /balances/{balance_id}/at?timestamp=&from_source=``: Blnk's response shape with exact
  integer amounts, plus ``inflight``, ``anchor``, ``replayed_transactions`` and ``existed``;
* ``GET /balances/{balance_id}/change?start=&end=``: opening, closing, credits and debits over [start, end);
* ``POST /balances-snapshots?batch_size=N``: Blnk's trigger; launches a Dagster run of
  ``balance_snapshots_job`` for the latest closed partition through the Dagster webserver's GraphQL
  API and returns at once, as Blnk does (HTTP 200, Blnk's ``message``), plus ``run_id``, an absolute
  ``status_url`` and ``run_url`` (the run in the Dagster UI);
* ``GET /balances-snapshots/{run_id}``: that run's status, progress (rows so far, rate) while it
  runs, its metrics when done, the error when it failed;
* ``GET /health``: both databases reachable.

With ``SNAPSHOT_API_KEY`` set, every endpoint but ``/health`` and the docs needs
``Authorization: Bearer <key>`` (constant-time comparison). Errors are JSON
``{"code": ..., "message": ...}``: 400 bad input, 401, 404 unknown balance or run, 422 an amount that cannot
be represented (balance and value named), 503 when the
database or Dagster is unreachable.

One module per concern: :mod:`.app` (the factory), the routers :mod:`.balances`, :mod:`.snapshots` and
:mod:`.health`, :mod:`.params` (query parameters), :mod:`.models` (response bodies, enforced),
:mod:`.errors` and :mod:`.deps` (the API key, the engine and the Dagster client of the app).
"""

from snapshot_pipeline.api.app import create_app

__all__ = ["create_app"]
