"""Data-quality checks of one published snapshot partition (plain Python; ``defs/checks.py`` wraps them).

Each function returns a :class:`Outcome`: whether it passed, numbers worth plotting, and a
short explanation. Parquet is read in record batches (Arrow compute, no Python object per row);
set comparisons run inside PostgreSQL.

* :func:`integrity` -- one sequential pass over the Parquet file for three outcomes:
  :func:`row_count` (every balance existing at the cutoff has a row; rows = manifest),
  :func:`balance_identity` (``balance = credit - debit`` and ``inflight = in - out`` on every row) and
  :func:`double_entry` (per currency Σ balance = 0 and Σ credit = Σ debit: DESIGN §3);
* :func:`parquet_matches_manifest` -- Parquet file = manifest (sha256, rows) and the partition's index row
  count = manifest (cheap: one sequential read of the file, one count on the index);
* :func:`parquet_matches_index` -- the above plus the index rows recomputed by diffing the partition
  against its predecessor (two full Parquet reads: an audit, run by its own job, not in every snapshot);
* :func:`sampled_recomputation` -- k random balances recomputed from genesis in SQL equal the snapshot
  (k is bounded; the journal is reached through Blnk's ``(source)``, ``(destination)`` and
  ``(parent_transaction)`` indexes only);
* :func:`live_drift` -- latest partition only: for the balances that changed in the partition (its index
  rows), snapshot + legs dated at/after the cutoff = the live ``blnk.balances`` row.

Cost per snapshot run: one sequential read of the partition's file (integrity and checksum), an indexed
count of balances, and work proportional to the partition's changed balances and to k. Every function
handles an empty partition (0 rows) and passes on it when the ledger agrees.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from snapshot_pipeline import amounts, db, names
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import index
from snapshot_pipeline.store import parquet as store
from snapshot_pipeline.store.diff import diff_files
from snapshot_pipeline.store.spool import IndexSpool

WIDE = amounts.WIDE
SAMPLE_IDS = 10
DEFAULT_SAMPLE_SIZE = names.SAMPLE_SIZE_DEFAULT
MAX_SAMPLE_SIZE = names.SAMPLE_SIZE_MAX


@dataclasses.dataclass
class Outcome:
    """Result of one check: ``passed``, numeric ``metrics`` (plotted in the UI) and ``details``."""

    passed: bool
    description: str
    metrics: dict[str, int | float] = dataclasses.field(default_factory=dict)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


class NotPublished(RuntimeError):
    """The partition has no manifest row or no Parquet file."""


def _entry(settings: Settings, date: dt.date) -> index.ManifestEntry:
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        entry = index.manifest(conn, date) if index.ready(conn) else None
    if entry is None:
        raise NotPublished(f"partition {date} is not published (no manifest row in snapshot_index.partitions)")
    if not store.exists(settings.storage_uri, date):
        raise NotPublished(f"partition {date} has a manifest row but no Parquet file in {settings.storage_uri}")
    return entry


def _batches(settings: Settings, date: dt.date, columns: list[str]):
    yield from store.iter_partition(settings.storage_uri, date, columns)


def _wide(array) -> pa.Array:
    return pc.cast(array, WIDE)


# ------------------------------------------------------------------------- integrity (one pass over the file)


INTEGRITY_COLUMNS = ["balance_id", "currency", *store.AMOUNT_COLUMNS, "balance_created_at"]


@dataclasses.dataclass
class _Totals:
    """Per-currency sums of one partition, exact (Python ints)."""

    balances: int = 0
    balance: int = 0
    credit: int = 0
    debit: int = 0


def integrity(settings: Settings, date: dt.date) -> dict[str, Outcome]:
    """``row_count``, ``balance_identity`` and ``double_entry`` from one sequential read of the file."""
    entry = _entry(settings, date)
    rows = bad = existing_rows = 0
    examples: list[str] = []
    totals: dict[str, _Totals] = {}
    cutoff = pa.scalar(entry.cutoff_at.replace(tzinfo=dt.timezone.utc), pa.timestamp("us", tz="UTC"))
    for batch in _batches(settings, date, INTEGRITY_COLUMNS):
        rows += batch.num_rows
        created = pc.cast(batch["balance_created_at"], pa.timestamp("us", tz="UTC"))
        existing_rows += pc.sum(pc.less(created, cutoff)).as_py() or 0
        wrong = pc.or_(
            pc.not_equal(_wide(batch["balance"]),
                         pc.subtract(_wide(batch["credit_balance"]), _wide(batch["debit_balance"]))),
            pc.not_equal(_wide(batch["inflight_balance"]),
                         pc.subtract(_wide(batch["inflight_credit_balance"]), _wide(batch["inflight_debit_balance"]))),
        )
        count = pc.sum(wrong).as_py() or 0
        if count:
            bad += count
            if len(examples) < SAMPLE_IDS:
                examples += batch["balance_id"].filter(wrong).to_pylist()[: SAMPLE_IDS - len(examples)]
        table = pa.table({"currency": pc.fill_null(batch["currency"], ""), "balance": _wide(batch["balance"]),
                          "credit": _wide(batch["credit_balance"]), "debit": _wide(batch["debit_balance"])})
        grouped = table.group_by("currency").aggregate(
            [("balance", "count"), ("balance", "sum"), ("credit", "sum"), ("debit", "sum")])
        for row in grouped.to_pylist():
            t = totals.setdefault(row["currency"], _Totals())
            t.balances += row["balance_count"]
            t.balance += int(row["balance_sum"])
            t.credit += int(row["credit_sum"])
            t.debit += int(row["debit_sum"])
    with db.connect(db.ledger_url(settings), autocommit=True, what="ledger database") as ledger:
        # served by Blnk's (created_at DESC) index on blnk.balances
        existing = db.scalar(
            ledger,
            "SELECT count(*) FROM blnk.balances WHERE created_at < %s", (entry.cutoff_at,)
        )
    return {
        "row_count": _row_count_outcome(rows, existing_rows, existing, entry.row_count),
        "balance_identity": Outcome(
            bad == 0,
            f"{bad:,} of {rows:,} rows break balance = credit - debit (or inflight = in - out)",
            {"rows_checked": rows, "rows_violating": bad},
            {"violating_balance_ids": examples},
        ),
        "double_entry": _double_entry_outcome(totals),
    }


def _row_count_outcome(rows: int, existing_rows: int, existing: int, manifest_rows: int) -> Outcome:
    """Every balance existing at the cutoff has a row; rows beyond those are balances created later but
    touched by legs dated before the cutoff (DESIGN §3); the file holds what the manifest says."""
    passed = existing_rows == existing and rows == manifest_rows
    return Outcome(
        passed,
        f"{rows:,} rows ({existing_rows:,} of balances created before the cutoff, {rows - existing_rows:,} of"
        f" balances created later but touched by earlier-dated legs); {existing:,} balances exist at the"
        f" cutoff; manifest says {manifest_rows:,}",
        {"parquet_rows": rows, "ledger_balances_at_cutoff": existing, "manifest_rows": manifest_rows,
         "missing_rows": existing - existing_rows, "rows_created_after_cutoff": rows - existing_rows},
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


# ------------------------------------------------------------------------------------ parquet <-> index


def file_checksum(settings: Settings, date: dt.date) -> str:
    fs, _ = store.resolve(settings.storage_uri)
    return store.size_and_checksum(fs, store.partition_file(settings.storage_uri, date))[1]


def parquet_matches_manifest(settings: Settings, date: dt.date) -> Outcome:
    """Parquet file = manifest (sha256, rows) and the partition's index row count = manifest ``index_rows``.

    The in-run counterpart of :func:`parquet_matches_index`: one sequential read of the file and one
    primary-key range count on the index, no diff against the predecessor.
    """
    entry = _entry(settings, date)
    fs, _ = store.resolve(settings.storage_uri)
    with fs.open_input_file(store.partition_file(settings.storage_uri, date)) as f:
        rows = pq.ParquetFile(f).metadata.num_rows
    checksum = file_checksum(settings, date)
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        indexed = index.count_rows(conn, date)
    problems = []
    if checksum != entry.checksum:
        problems.append("sha256 of the Parquet file differs from the manifest")
    if rows != entry.row_count:
        problems.append(f"Parquet has {rows:,} rows, manifest {entry.row_count:,}")
    if indexed != entry.index_rows:
        problems.append(f"index holds {indexed:,} rows for the partition, manifest {entry.index_rows:,}")
    return Outcome(
        not problems,
        "; ".join(problems) or f"checksum, {rows:,} rows and {indexed:,} index rows match the manifest",
        {"parquet_rows": rows, "index_rows": int(indexed), "manifest_index_rows": entry.index_rows},
        {"checksum_matches": checksum == entry.checksum},
    )


def parquet_matches_index(settings: Settings, date: dt.date) -> Outcome:
    """Manifest agreement plus the partition's index rows = its changes since the previous published
    partition, recomputed by diffing the two Parquet files (an audit: two full reads)."""
    entry = _entry(settings, date)
    fs, _ = store.resolve(settings.storage_uri)
    path = store.partition_file(settings.storage_uri, date)
    with fs.open_input_file(path) as f:
        rows = pq.ParquetFile(f).metadata.num_rows
    checksum = file_checksum(settings, date)
    work_dir = Path(tempfile.mkdtemp(prefix=f"snapshot-check-{date}-"))
    try:
        with db.connect(db.snapshot_url(settings), what="snapshot index database") as conn:
            previous = index.nearest_before(conn, date)
            if previous is not None and not store.exists(settings.storage_uri, previous.snapshot_date):
                previous = None  # the snapshot core diffs against nothing in that case, too
            spool = IndexSpool(work_dir, date)
            diff_files(fs, store.partition_file(settings.storage_uri, previous.snapshot_date) if previous else None,
                       path, spool)
            csv_path = spool.close()
            missing, extra, examples, indexed = index.compare_rows(conn, date, csv_path, SAMPLE_IDS)
            conn.rollback()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    problems = []
    if checksum != entry.checksum:
        problems.append("sha256 of the Parquet file differs from the manifest")
    if rows != entry.row_count:
        problems.append(f"Parquet has {rows:,} rows, manifest {entry.row_count:,}")
    if missing or extra:
        problems.append(f"index rows differ from the recomputed changes: {missing:,} missing, {extra:,} unexpected")
    if indexed != entry.index_rows:
        problems.append(f"index holds {indexed:,} rows for the partition, manifest {entry.index_rows:,}")
    return Outcome(
        not problems,
        "; ".join(problems) or (f"checksum and {rows:,} rows match the manifest; {indexed:,} index rows = changes"
                                f" since {previous.snapshot_date if previous else 'nothing (full anchor)'}"),
        {"parquet_rows": rows, "index_rows": indexed, "expected_index_rows": spool.rows,
         "index_rows_missing": missing, "index_rows_unexpected": extra},
        {"checksum_matches": checksum == entry.checksum, "previous_partition": previous.snapshot_date.isoformat() if previous else None,
         "differing_balance_ids": examples},
    )


# ------------------------------------------------------------------------------------ sampled recompute


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
    entry = _entry(settings, date)
    ids = store.read_partition(settings.storage_uri, date, ["balance_id"])["balance_id"]
    if len(ids) == 0:
        return Outcome(True, "empty partition: no balances to recompute",
                       {"sampled": 0, "mismatches": 0, "mismatches_from_late_rows": 0},
                       {"mismatching_balance_ids": [], "seed": seed})
    rng = random.Random(seed)
    positions = sorted(rng.sample(range(len(ids)), min(sample_size, len(ids))))
    sample = pc.take(ids, pa.array(positions, pa.int64())).to_pylist()
    fs, _ = store.resolve(settings.storage_uri)
    table = pq.read_table(store.partition_file(settings.storage_uri, date), filesystem=fs,
                          columns=["balance_id", *store.AMOUNT_COLUMNS],
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


# ------------------------------------------------------------------------------------------ live drift


_LIVE_SQL = """
WITH ids AS (SELECT unnest(%(ids)s::text[]) AS balance_id),
late AS (  -- legs of the given balances dated at or after the cutoff: Blnk's (source) and (destination) indexes
    SELECT t.transaction_id, t.parent_transaction, t.source, t.destination, t.status,
           COALESCE(t.precise_amount, 0) AS amount
      FROM blnk.transactions t
     WHERE (t.source = ANY(%(ids)s::text[]) OR t.destination = ANY(%(ids)s::text[]))
       AND COALESCE(t.effective_date, t.created_at) >= %(cutoff)s
       AND t.status IN ('APPLIED', 'INFLIGHT', 'VOID')
),
after AS (
    SELECT destination AS balance_id, amount AS credit, 0 AS debit, 0 AS held_in, 0 AS held_out
      FROM late WHERE status = 'APPLIED'
    UNION ALL SELECT source, 0, amount, 0, 0 FROM late WHERE status = 'APPLIED'
    UNION ALL SELECT destination, 0, 0, amount, 0 FROM late WHERE status = 'INFLIGHT'
    UNION ALL SELECT source, 0, 0, 0, amount FROM late WHERE status = 'INFLIGHT'
    -- releases the snapshot did not count: the commit/void is at or after the cutoff ... (unique transaction_id)
    UNION ALL SELECT x.balance_id, 0, 0, x.held_in, x.held_out
      FROM late c JOIN blnk.transactions p ON p.transaction_id = c.parent_transaction
     CROSS JOIN LATERAL (VALUES (p.destination, -c.amount, 0), (p.source, 0, -c.amount)) AS x(balance_id, held_in, held_out)
     WHERE c.status IN ('APPLIED', 'VOID') AND p.status = 'INFLIGHT'
    -- ... or it is before the cutoff but its hold is at or after it ((parent_transaction) index)
    UNION ALL SELECT x.balance_id, 0, 0, x.held_in, x.held_out
      FROM late p JOIN blnk.transactions c ON c.parent_transaction = p.transaction_id
     CROSS JOIN LATERAL (VALUES (p.destination, -COALESCE(c.precise_amount, 0), 0),
                                (p.source, 0, -COALESCE(c.precise_amount, 0))) AS x(balance_id, held_in, held_out)
     WHERE p.status = 'INFLIGHT' AND c.status IN ('APPLIED', 'VOID')
       AND COALESCE(c.effective_date, c.created_at) < %(cutoff)s
),
sums AS (
    SELECT balance_id, sum(credit) AS credit, sum(debit) AS debit, sum(held_in) AS held_in,
           sum(held_out) AS held_out
      FROM after GROUP BY balance_id
)
SELECT i.balance_id, b.balance_id IS NOT NULL,
       b.balance, b.credit_balance, b.debit_balance, b.inflight_balance, b.inflight_credit_balance,
       b.inflight_debit_balance,
       COALESCE(s.credit, 0), COALESCE(s.debit, 0), COALESCE(s.held_in, 0), COALESCE(s.held_out, 0)
  FROM ids i
  LEFT JOIN blnk.balances b ON b.balance_id = i.balance_id  -- unique (balance_id)
  LEFT JOIN sums s ON s.balance_id = i.balance_id
"""

LIVE_CHUNK = 10_000  # balance ids per ledger statement


def changed_balances(settings: Settings, date: dt.date) -> dict[str, tuple[int, ...]]:
    """The partition's index rows: exactly the balances that changed since the previous partition
    (all balances for a full anchor), with their six snapshot amounts."""
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        return index.changed_rows(conn, date)


def live_drift(settings: Settings, date: dt.date) -> Outcome:
    """For the latest partition: snapshot + legs dated at or after the cutoff = live ``blnk.balances``,
    over the partition's changed balances only (its index rows).

    A balance that did not change in the partition had the same values in the previous one, where
    it was compared when that one was the latest; the cost follows the day's activity.
    """
    entry = _entry(settings, date)
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        later = index.nearest_after(conn, date)
    if later is not None:
        return Outcome(True, f"not evaluated: {later.snapshot_date} is a later published partition"
                             " (live drift is checked on the latest partition only)",
                       {"balances_compared": 0}, {"evaluated": False})
    snap = changed_balances(settings, date)
    ids = sorted(snap)
    drifting: list[str] = []
    total = 0
    with db.connect(db.ledger_url(settings), autocommit=True, what="ledger database") as ledger:
        for start in range(0, len(ids), LIVE_CHUNK):
            chunk = ids[start:start + LIVE_CHUNK]
            for row in ledger.execute(_LIVE_SQL, {"ids": chunk, "cutoff": entry.cutoff_at}):
                balance_id, present = row[0], row[1]
                if not present:  # in the snapshot, not in blnk.balances
                    drifting.append(balance_id)
                    continue
                live = tuple(int(v) for v in row[2:8])
                after_credit, after_debit, held_in, held_out = (int(v) for v in row[8:12])
                _, credit, debit, _, inflight_in, inflight_out = snap[balance_id]
                credit, debit = credit + after_credit, debit + after_debit
                inflight_in, inflight_out = inflight_in + held_in, inflight_out + held_out
                expected = (credit - debit, credit, debit, inflight_in - inflight_out, inflight_in, inflight_out)
                if expected != live:
                    drifting.append(balance_id)
                    total += abs(live[0] - expected[0])
    drifting.sort()
    count = len(drifting)
    return Outcome(
        count == 0,
        (f"snapshot + later legs equals the live row of every one of the {len(ids):,} balances changed in the"
         " partition" if not count else
         f"{count} balance(s) drift from snapshot + later legs: {', '.join(drifting[:SAMPLE_IDS])}"),
        {"balances_compared": len(ids), "drifting_balances": count, "total_absolute_balance_drift": total},
        {"evaluated": True, "drifting_balance_ids": drifting[:100]},
    )
