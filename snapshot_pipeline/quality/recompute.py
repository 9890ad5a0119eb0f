"""From-genesis recomputation in SQL of a set of balances, and the sampled check built on it."""

from __future__ import annotations

import datetime as dt
import random

import pyarrow as pa
import pyarrow.compute as pc

from snapshot_pipeline import db, names
from snapshot_pipeline.quality.outcome import SAMPLE_IDS, Outcome, entry_files, published_entry
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import parquet as store

DEFAULT_SAMPLE_SIZE = names.SAMPLE_SIZE_DEFAULT
MAX_SAMPLE_SIZE = names.SAMPLE_SIZE_MAX


_RECOMPUTE_SQL = """
WITH ids AS (SELECT unnest(%(ids)s::text[]) AS balance_id),
tx AS (
    SELECT t.transaction_id, t.source, t.destination, t.status, COALESCE(t.precise_amount, 0) AS amount
      FROM blnk.transactions t
     WHERE COALESCE(t.effective_date, t.created_at) < %(cutoff)s AND t.id <= %(watermark)s
       AND t.status IN ('APPLIED', 'INFLIGHT')
       AND (t.source = ANY(%(ids)s::text[]) OR t.destination = ANY(%(ids)s::text[]))  -- BitmapOr of two indexes
),
released AS (
    SELECT c.parent_transaction, sum(COALESCE(c.precise_amount, 0)) AS amount
      FROM blnk.transactions c
     WHERE c.parent_transaction IN (SELECT transaction_id FROM tx WHERE status = 'INFLIGHT')
       AND c.status IN ('APPLIED', 'VOID') AND c.id <= %(watermark)s
       AND COALESCE(c.effective_date, c.created_at) < %(cutoff)s
     GROUP BY 1
),
holds AS (
    SELECT p.source, p.destination, p.amount - COALESCE(r.amount, 0) AS amount
      FROM tx p LEFT JOIN released r ON r.parent_transaction = p.transaction_id
     WHERE p.status = 'INFLIGHT'
),
legs AS (
    SELECT destination AS balance_id, amount AS credit, 0 AS debit, 0 AS held_in, 0 AS held_out
      FROM tx WHERE status = 'APPLIED'
    UNION ALL SELECT source, 0, amount, 0, 0 FROM tx WHERE status = 'APPLIED'
    UNION ALL SELECT destination, 0, 0, amount, 0 FROM holds
    UNION ALL SELECT source, 0, 0, 0, amount FROM holds
)
SELECT i.balance_id, COALESCE(sum(l.credit), 0), COALESCE(sum(l.debit), 0),
       COALESCE(sum(l.held_in), 0), COALESCE(sum(l.held_out), 0)
  FROM ids i LEFT JOIN legs l ON l.balance_id = i.balance_id
 GROUP BY i.balance_id
"""

_SNAPSHOT_FIELDS = ("credit_balance", "debit_balance", "inflight_credit_balance", "inflight_debit_balance")


def recompute(ledger_url: str, balance_ids: list[str], cutoff: dt.datetime, watermark: int | None = None
              ) -> dict[str, dict[str, int]]:
    """From-genesis values of ``balance_ids`` as of ``cutoff`` (only journal ids <= ``watermark`` if given)."""
    with db.connect(ledger_url, autocommit=True, what="ledger database") as ledger:
        rows = ledger.execute(
            _RECOMPUTE_SQL,
            {"ids": balance_ids, "cutoff": cutoff, "watermark": watermark if watermark is not None else 2**62},
        ).fetchall()
    out = {}
    for balance_id, credit, debit, held_in, held_out in rows:
        credit, debit, held_in, held_out = int(credit), int(debit), int(held_in), int(held_out)
        out[balance_id] = {"balance": credit - debit, "credit_balance": credit, "debit_balance": debit,
                           "inflight_balance": held_in - held_out, "inflight_credit_balance": held_in,
                           "inflight_debit_balance": held_out}
    return out


def sampled_recomputation(settings: Settings, date: dt.date, sample_size: int = DEFAULT_SAMPLE_SIZE,
                          seed: int | None = None) -> Outcome:
    """Recompute ``sample_size`` random balances of the partition from genesis and compare every amount."""
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1:
        raise ValueError(f"sample_size must be a positive integer, got {sample_size!r}")
    if sample_size > MAX_SAMPLE_SIZE:
        raise ValueError(f"sample_size must be at most {MAX_SAMPLE_SIZE:,}, got {sample_size:,}")
    entry = published_entry(settings, date)
    fs, _ = store.resolve(settings.storage_uri)
    paths = entry_files(settings, entry)
    ids = store.read_files(fs, paths, ["balance_id"])["balance_id"]
    if len(ids) == 0:
        return Outcome(True, "empty partition: no balances to recompute",
                       {"sampled": 0, "mismatches": 0, "mismatches_from_late_rows": 0},
                       {"mismatching_balance_ids": [], "seed": seed})
    rng = random.Random(seed)
    positions = sorted(rng.sample(range(len(ids)), min(sample_size, len(ids))))
    sample = pc.take(ids, pa.array(positions, pa.int64())).to_pylist()
    table = store.read_files(fs, paths, ["balance_id", *store.AMOUNT_COLUMNS],
                             filters=pc.field("balance_id").isin(sample))  # row groups pruned by balance_id
    got = {r["balance_id"]: {k: int(r[k]) for k in store.AMOUNT_COLUMNS} for r in table.to_pylist()}
    expected = recompute(db.ledger_url(settings), sample, entry.cutoff_at)
    wrong = sorted(b for b in sample if expected[b] != got.get(b))
    stale = []
    if wrong:  # is it the pipeline's arithmetic, or rows the partition's read could not see?
        as_read = recompute(db.ledger_url(settings), wrong, entry.cutoff_at, entry.max_transaction_id)
        stale = [b for b in wrong if as_read[b] == got.get(b)]
    if not wrong:
        text = f"{len(sample)} random balances recomputed from genesis match the snapshot exactly"
    else:
        text = (f"{len(wrong)} of {len(sample)} sampled balances differ from a from-genesis recomputation"
                f" ({len(stale)} explained by journal rows added after the partition's read: repair pending)")
    return Outcome(
        not wrong,
        text,
        {"sampled": len(sample), "mismatches": len(wrong), "mismatches_from_late_rows": len(stale)},
        {"mismatching_balance_ids": wrong[:SAMPLE_IDS], "seed": seed},
    )
