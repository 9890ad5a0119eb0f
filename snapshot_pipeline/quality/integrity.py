"""Row count, balance identity and double entry of a partition, from one sequential pass over its file."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc

from snapshot_pipeline import db
from snapshot_pipeline.amounts import widen as wide
from snapshot_pipeline.quality.outcome import SAMPLE_IDS, Outcome, partition_batches, published_entry
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import parquet

# balance_id is read only when a row breaks the identity (to name it): decoding it was a fifth of the pass
INTEGRITY_COLUMNS = ["currency", *parquet.AMOUNT_COLUMNS, "balance_created_at"]


@dataclasses.dataclass
class _Totals:
    """Per-currency sums of one partition, exact (Python ints)."""

    balances: int = 0
    balance: int = 0
    credit: int = 0
    debit: int = 0


def _widened(batch) -> dict[str, pa.Array]:
    """The batch's six amounts as exact wide decimals, each converted once."""
    return {name: wide(batch[name]) for name in parquet.AMOUNT_COLUMNS}


def _breaking_identity(amounts: dict[str, pa.Array]) -> pa.Array:
    """Per row: ``balance != credit - debit`` or ``inflight_balance != inflight_credit - inflight_debit``."""
    return pc.or_(
        pc.not_equal(amounts["balance"], pc.subtract(amounts["credit_balance"], amounts["debit_balance"])),
        pc.not_equal(amounts["inflight_balance"],
                     pc.subtract(amounts["inflight_credit_balance"], amounts["inflight_debit_balance"])),
    )


def _breaking_ids(settings: Settings, date: dt.date, limit: int) -> list[str]:
    """The first ``limit`` balances whose row breaks the identity (a second pass, only when some do)."""
    examples: list[str] = []
    for batch in partition_batches(settings, date, ["balance_id", *parquet.AMOUNT_COLUMNS]):
        examples += batch["balance_id"].filter(_breaking_identity(_widened(batch))).to_pylist()
        if len(examples) >= limit:
            break
    return examples[:limit]


def integrity(settings: Settings, date: dt.date) -> dict[str, Outcome]:
    """``row_count``, ``balance_identity`` and ``double_entry`` from one sequential read of the file."""
    entry = published_entry(settings, date)
    rows = bad = existing_rows = 0
    totals: dict[str, _Totals] = {}
    cutoff = pa.scalar(entry.cutoff_at.replace(tzinfo=dt.UTC), pa.timestamp("us", tz="UTC"))
    for batch in partition_batches(settings, date, INTEGRITY_COLUMNS):
        rows += batch.num_rows
        created = pc.cast(batch["balance_created_at"], pa.timestamp("us", tz="UTC"))
        existing_rows += pc.sum(pc.less(created, cutoff)).as_py() or 0
        amounts = _widened(batch)
        bad += pc.sum(_breaking_identity(amounts)).as_py() or 0
        table = pa.table({"currency": pc.fill_null(batch["currency"], ""), "balance": amounts["balance"],
                          "credit": amounts["credit_balance"], "debit": amounts["debit_balance"]})
        grouped = table.group_by("currency").aggregate(
            [("balance", "count"), ("balance", "sum"), ("credit", "sum"), ("debit", "sum")])
        for row in grouped.to_pylist():
            t = totals.setdefault(row["currency"], _Totals())
            t.balances += row["balance_count"]
            t.balance += int(row["balance_sum"])
            t.credit += int(row["credit_sum"])
            t.debit += int(row["debit_sum"])
    examples = _breaking_ids(settings, date, SAMPLE_IDS) if bad else []
    with db.connect(db.ledger_url(settings), autocommit=True, what="ledger database") as ledger:
        # served by Blnk's (created_at DESC) index on blnk.balances
        existing = db.scalar(
            ledger,
            "SELECT count(*) FROM blnk.balances WHERE created_at < %s", (entry.cutoff_at,)
        )
        missing = existing - existing_rows
        if existing_rows != existing:  # rare: find out exactly (balance rows deleted since their legs, or missing)
            ids = {r[0] for r in ledger.execute("SELECT balance_id FROM blnk.balances WHERE created_at < %s",
                                                (entry.cutoff_at,))}
            for batch in partition_batches(settings, date, ["balance_id"]):
                ids.difference_update(batch["balance_id"].to_pylist())
            missing = len(ids)
    return {
        "row_count": _row_count_outcome(rows, existing_rows, existing, entry.row_count, missing),
        "balance_identity": Outcome(
            bad == 0,
            f"{bad:,} of {rows:,} rows break balance = credit - debit (or inflight = in - out)",
            {"rows_checked": rows, "rows_violating": bad},
            {"violating_balance_ids": examples},
        ),
        "double_entry": _double_entry_outcome(totals),
    }


def _row_count_outcome(rows: int, existing_rows: int, existing: int, manifest_rows: int, missing: int) -> Outcome:
    """Every balance existing at the cutoff has a row (``missing`` = 0); rows beyond those are balances created
    later but touched by legs dated before the cutoff, or balances whose ledger row is gone but whose legs
    count (DESIGN §3: the contract gives them a row); the file holds what the manifest says."""
    passed = missing == 0 and rows == manifest_rows
    return Outcome(
        passed,
        f"{rows:,} rows ({existing_rows:,} of balances created before the cutoff, {rows - existing_rows:,} of"
        f" balances created later but touched by earlier-dated legs); {existing:,} balances exist at the"
        f" cutoff; manifest says {manifest_rows:,}",
        {"parquet_rows": rows, "ledger_balances_at_cutoff": existing, "manifest_rows": manifest_rows,
         "missing_rows": missing, "rows_created_after_cutoff": rows - existing_rows,
         "rows_without_ledger_row": existing_rows - (existing - missing)},
    )


def _double_entry_outcome(totals: dict[str, _Totals]) -> Outcome:
    """Per currency Σ balance = 0 and Σ credit = Σ debit; the per-currency figures as details."""
    per_currency = []
    for currency in sorted(totals):
        t = totals[currency]
        per_currency.append({"currency": currency, "balances": t.balances, "balance": t.balance,
                             "credit": t.credit, "debit": t.debit, "imbalance": t.credit - t.debit})
    unbalanced = [r for r in per_currency if r["imbalance"] or r["balance"]]
    if not per_currency:
        text = "empty partition: no balances, nothing to balance"
    elif not unbalanced:
        text = f"every currency balances (Σ balance = 0, Σ credit = Σ debit) in {len(per_currency)} currencies"
    else:
        text = "unbalanced: " + ", ".join(
            f"{r['currency'] or '(none)'} (credit − debit = {r['imbalance']}, Σ balance = {r['balance']})"
            for r in unbalanced)
    return Outcome(
        not unbalanced,
        text,
        {"currencies": len(per_currency), "unbalanced_currencies": len(unbalanced),
         "total_absolute_imbalance": sum(abs(t.credit - t.debit) for t in totals.values())},
        # exact amounts as strings: they can exceed what a JSON number holds exactly
        {"per_currency": [{k: (v if k in ("currency", "balances") else str(v)) for k, v in r.items()}
                          for r in per_currency]},
    )


def row_count(settings: Settings, date: dt.date) -> Outcome:
    """Every balance existing at the cutoff has a row, and rows = manifest row_count."""
    return integrity(settings, date)["row_count"]


def balance_identity(settings: Settings, date: dt.date) -> Outcome:
    """``balance = credit - debit`` and ``inflight = in - out`` on every row."""
    return integrity(settings, date)["balance_identity"]


def double_entry(settings: Settings, date: dt.date) -> Outcome:
    """Per currency, Σ balance = 0 and Σ credit = Σ debit over the partition's rows."""
    return integrity(settings, date)["double_entry"]
