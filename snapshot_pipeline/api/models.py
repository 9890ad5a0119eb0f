"""The HTTP API's response bodies (Pydantic): every route declares one as ``response_model``, which FastAPI
enforces on each answer (a body that does not fit is a 500, never a silent change of the contract)."""

from __future__ import annotations

from pydantic import BaseModel, Field

SNAPSHOT_STARTED = "Snapshotting in progress. should be completed shortly"  # Blnk's own message, verbatim


class BlnkErrorDetail(BaseModel):
    """Blnk's ``error_detail``."""

    code: str = Field(description="Blnk's code (BAL_NOT_FOUND, BAL_INVALID_TIMESTAMP, AUTH_INVALID_API_KEY, ...)")
    message: str


class ErrorBody(BaseModel):
    """Every error: our ``{"code", "message"}`` with a one-line message, plus Blnk's ``error``/``error_detail``."""

    code: str = Field(description="machine-readable error code")
    message: str
    error: str = Field(description="Blnk's field: the message")
    error_detail: BlnkErrorDetail


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
    timestamp: str = Field(description="the instant asked for, as Blnk echoes it: RFC 3339 to the second in the"
                                       " caller's offset (Z when none was given)")
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
    """``POST /balances-snapshots``: what Blnk answers, plus where to follow the run (``existing``: a run of the
    day was already queued or running, and this is it: no second run is launched)."""

    message: str = Field(description="Blnk's message, verbatim: " + repr(SNAPSHOT_STARTED))
    run_id: str = Field(description="the Dagster run id")
    partition: str
    batch_size: int
    status_url: str = Field(description="absolute URL of GET /balances-snapshots/{run_id}")
    run_url: str = Field(description="the run's page in the Dagster UI")
    existing: bool = Field(False, description="true: the day's run was already queued or running; this is it")


class ProgressBody(BaseModel):
    """A running snapshot's latest progress report."""

    rows: int = Field(description="rows of the partition merged and written so far")
    total: int | None = Field(None, description="the partition's row count: the run's estimate while it merges,"
                                                " exact on its final report (rows = total); null when unknown")
    percent: float | None = Field(None, description="rows out of total, 0-100 (100 on the final report)")
    snapshots_per_second: float | None = Field(description="rate so far")
    at: str | None = Field(description="when the progress was reported (RFC 3339, UTC)")


class RunBody(BaseModel):
    """``GET /balances-snapshots/{run_id}``: a snapshot run's status, progress, metrics or error."""

    run_id: str
    job_name: str
    status: str = Field(description="Dagster run status: QUEUED, STARTING, STARTED, SUCCESS, FAILURE, CANCELED...")
    done: bool
    partition: str | None
    start_time: str | None = Field(description="RFC 3339, UTC, microseconds")
    end_time: str | None = Field(description="RFC 3339, UTC, microseconds")
    metrics: dict | None = Field(description="once materialized: the JSON `snapshot-pipeline snapshot` prints for the"
                                             " run, field for field (rows, batch_size, currency_totals, checks, ...)")
    progress: ProgressBody | None = Field(description="while running: rows written so far and the rate")
    error: str | None = Field(description="why the run failed (FAILURE)")
    run_url: str | None = Field(None, description="the run's page in the Dagster UI")


class EndOfDayBody(BaseModel):
    """One day of ``GET /balances/{balance_id}/history``: the balance at the end of the day."""

    date: str
    cutoff: str = Field(description="the day's end (start of the next day in SNAPSHOT_TIMEZONE), RFC 3339 UTC")
    balance_id: str
    currency: str
    balance: int
    credit_balance: int
    debit_balance: int
    inflight_balance: int
    inflight_credit_balance: int
    inflight_debit_balance: int
    existed: bool
    snapshot_date: str | None = Field(description="the snapshot the value started from (null: the journal alone)")
    replayed_transactions: int


class HistoryBody(BaseModel):
    """``GET /balances/{balance_id}/history``: end-of-day balances, one row per day, oldest first."""

    balance_id: str
    from_: str = Field(alias="from")
    to: str
    timezone: str
    days: list[EndOfDayBody]
