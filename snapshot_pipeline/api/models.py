"""The HTTP API's response bodies (Pydantic): every route declares one as ``response_model``, which FastAPI
enforces on each answer (a body that does not fit is a 500, never a silent change of the contract)."""

from __future__ import annotations

from pydantic import BaseModel, Field

SNAPSHOT_STARTED = "Snapshotting in progress. should be completed shortly"  # Blnk's own message, verbatim


class ErrorBody(BaseModel):
    """Every error: ``{"code", "message"}`` with a one-line message."""

    code: str = Field(description="machine-readable error code")
    message: str


class HealthBody(BaseModel):
    """``GET /health``: both databases answered."""

    status: str
    ledger: str
    index: str


class BlnkBalance(BaseModel):
    """Blnk's balance object, with exact integer amounts (minor units)."""

    balance: int = Field(description="credit_balance - debit_balance, minor units (exact integer)")
    debit_balance: int
    credit_balance: int
    currency: str
    balance_id: str


class Inflight(BaseModel):
    """Open holds (INFLIGHT legs) as of the instant."""

    inflight_balance: int
    inflight_credit_balance: int
    inflight_debit_balance: int


class AnchorBody(BaseModel):
    """The snapshot an answer started from."""

    snapshot_date: str = Field(description="the snapshot partition the answer started from")
    cutoff: str = Field(description="its cutoff (UTC); legs with effective time >= cutoff were replayed")
    watermark_transaction_id: int = Field(description="highest transactions.id its read could see")


class BalanceAtBody(BaseModel):
    """``GET /balances/{balance_id}/at``: Blnk's response shape plus our additions."""

    balance: BlnkBalance
    timestamp: str = Field(description="the instant asked for, in UTC")
    from_source: bool
    inflight: Inflight
    existed: bool = Field(description="whether the balance existed (created_at <= timestamp); amounts are 0 if not")
    anchor: AnchorBody | None = Field(description="null: no snapshot at or before the instant; replayed from genesis")
    replayed_transactions: int = Field(description="journal rows read to complete the answer")


class BalanceChangeBody(BaseModel):
    """``GET /balances/{balance_id}/change``: movement over ``[start, end)``."""

    balance_id: str
    start: str
    end: str
    currency: str
    opening_balance: int = Field(description="balance over effective time < start")
    closing_balance: int = Field(description="balance over effective time < end")
    credits: int = Field(description="APPLIED credits with effective time in [start, end)")
    debits: int = Field(description="APPLIED debits with effective time in [start, end)")
    net_change: int


class SnapshotTriggerBody(BaseModel):
    """``POST /balances-snapshots``: what Blnk answers, plus where to follow the run."""

    message: str = Field(description="Blnk's message, verbatim: " + repr(SNAPSHOT_STARTED))
    run_id: str = Field(description="the Dagster run id")
    partition: str
    batch_size: int
    status_url: str = Field(description="absolute URL of GET /balances-snapshots/{run_id}")
    run_url: str = Field(description="the run's page in the Dagster UI")


class ProgressBody(BaseModel):
    """A running snapshot's latest progress report."""

    rows: int = Field(description="balances written so far")
    snapshots_per_second: float | None = Field(description="rate so far")
    at: float | None = Field(description="Unix time of the progress report")


class RunBody(BaseModel):
    """``GET /balances-snapshots/{run_id}``: a snapshot run's status, progress, metrics or error."""

    run_id: str
    job_name: str
    status: str = Field(description="Dagster run status: QUEUED, STARTING, STARTED, SUCCESS, FAILURE, CANCELED...")
    done: bool
    partition: str | None
    start_time: float | None
    end_time: float | None
    metrics: dict | None = Field(description="the materialization's metadata (rows, duration_ms, ...) once done")
    progress: ProgressBody | None = Field(description="while running: rows written so far and the rate")
    error: str | None = Field(description="why the run failed (FAILURE)")
    run_url: str | None = Field(None, description="the run's page in the Dagster UI")
