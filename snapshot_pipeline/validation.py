"""Data-quality checks of one published snapshot partition (plain Python; ``defs/checks.py`` wraps them).

Each function returns a :class:`Outcome`: whether it passed, numbers worth plotting, and a
short explanation. Parquet is read in record batches (Arrow compute, no Python object per row);
set comparisons run inside PostgreSQL.

* :func:`row_count` -- rows = balances existing at the cutoff (ledger) = manifest row_count;
* :func:`balance_identity` -- ``balance = credit - debit`` and ``inflight = in - out`` on every row;
* :func:`double_entry` -- per currency, Σ credit = Σ debit over all balances (a ledger property);
* :func:`parquet_matches_index` -- Parquet file = manifest (sha256, rows) and the index rows of the
  partition = the rows that changed since the previous published partition, recomputed;
* :func:`sampled_recomputation` -- k random balances recomputed from genesis in SQL equal the snapshot;
* :func:`live_drift` -- latest partition only: snapshot + legs dated at/after the cutoff = the live
  ``blnk.balances`` row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import random
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from snapshot_pipeline import amounts, db, snapshot
from snapshot_pipeline.ledger import asof
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import index
from snapshot_pipeline.store import parquet as store

WIDE = amounts.WIDE
SAMPLE_IDS = 10
DEFAULT_SAMPLE_SIZE = 20


@dataclasses.dataclass
class Outcome:
    """Result of one check: ``passed``, numeric ``metrics`` (plotted in the UI) and ``details``."""

    passed: bool
    description: str
    metrics: dict[str, int | float] = dataclasses.field(default_factory=dict)
    details: dict[str, object] = dataclasses.field(default_factory=dict)


class NotPublished(RuntimeError):
    """The partition has no manifest row or no Parquet file."""


def _entry(settings: Settings, date: dt.date) -> index.ManifestEntry:
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        index.migrate(conn)
        entry = index.manifest(conn, date)
    if entry is None:
        raise NotPublished(f"partition {date} is not published (no manifest row in snapshot_index.partitions)")
    if not store.exists(settings.storage_uri, date):
        raise NotPublished(f"partition {date} has a manifest row but no Parquet file in {settings.storage_uri}")
    return entry


def _batches(settings: Settings, date: dt.date, columns: list[str]):
    yield from store.iter_partition(settings.storage_uri, date, columns)


def _wide(array) -> pa.Array:
    return pc.cast(array, WIDE)


# ------------------------------------------------------------------------------------------------ row count


def row_count(settings: Settings, date: dt.date) -> Outcome:
    """Every balance existing at the cutoff has a row; extra rows are balances touched before their creation."""
    entry = _entry(settings, date)
    fs, _ = store.resolve(settings.storage_uri)
    with fs.open_input_file(store.partition_file(settings.storage_uri, date)) as f:
        rows = pq.ParquetFile(f).metadata.num_rows
    cutoff = pa.scalar(entry.cutoff_at.replace(tzinfo=dt.timezone.utc), store.UTC_TS)
    created_before = 0
    for batch in _batches(settings, date, ["balance_created_at"]):
        created_before += pc.sum(pc.fill_null(pc.less(batch["balance_created_at"], cutoff), False)).as_py() or 0
    with db.connect(db.ledger_url(settings), autocommit=True, what="ledger database") as ledger:
        existing = ledger.execute(
            "SELECT count(*) FROM blnk.balances WHERE created_at < %s", (entry.cutoff_at,)
        ).fetchone()[0]
    passed = created_before == existing and rows == entry.row_count
    return Outcome(
        passed,
        f"{rows:,} rows; {existing:,} balances exist at the cutoff and {created_before:,} of the rows are theirs"
        f" ({rows - created_before:,} balances touched by legs dated before their creation);"
        f" manifest says {entry.row_count:,}",
        {"parquet_rows": rows, "ledger_balances_at_cutoff": existing, "manifest_rows": entry.row_count,
         "missing_rows": existing - created_before, "rows_before_creation": rows - created_before},
    )


# ---------------------------------------------------------------------------------------- balance identity


def balance_identity(settings: Settings, date: dt.date) -> Outcome:
    _entry(settings, date)
    columns = ["balance_id", *store.AMOUNT_COLUMNS]
    rows = bad = 0
    examples: list[str] = []
    for batch in _batches(settings, date, columns):
        wrong = pc.or_(
            pc.not_equal(_wide(batch["balance"]),
                         pc.subtract(_wide(batch["credit_balance"]), _wide(batch["debit_balance"]))),
            pc.not_equal(_wide(batch["inflight_balance"]),
                         pc.subtract(_wide(batch["inflight_credit_balance"]), _wide(batch["inflight_debit_balance"]))),
        )
        count = pc.sum(wrong).as_py() or 0
        rows += batch.num_rows
        if count:
            bad += count
            if len(examples) < SAMPLE_IDS:
                examples += batch["balance_id"].filter(wrong).to_pylist()[: SAMPLE_IDS - len(examples)]
    return Outcome(
        bad == 0,
        f"{bad:,} of {rows:,} rows break balance = credit - debit (or inflight = in - out)",
        {"rows_checked": rows, "rows_violating": bad},
        {"violating_balance_ids": examples},
    )


# -------------------------------------------------------------------------------------------- double entry


def double_entry(settings: Settings, date: dt.date) -> Outcome:
    _entry(settings, date)
    totals: dict[str | None, list[int]] = {}
    for batch in _batches(settings, date, ["currency", "credit_balance", "debit_balance"]):
        table = pa.table({"currency": batch["currency"], "credit": _wide(batch["credit_balance"]),
                          "debit": _wide(batch["debit_balance"])})
        for row in table.group_by("currency").aggregate([("credit", "sum"), ("debit", "sum")]).to_pylist():
            entry = totals.setdefault(row["currency"], [0, 0])
            entry[0] += int(row["credit_sum"])
            entry[1] += int(row["debit_sum"])
    per_currency = [
        {"currency": c or "", "credit": v[0], "debit": v[1], "imbalance": v[0] - v[1]}
        for c, v in sorted(totals.items(), key=lambda kv: kv[0] or "")
    ]
    unbalanced = [r for r in per_currency if r["imbalance"]]
    return Outcome(
        not unbalanced,
        ("every currency balances (Σ credit = Σ debit)" if not unbalanced else
         "Σ credit ≠ Σ debit in " + ", ".join(f"{r['currency']} (credit − debit = {r['imbalance']})"
                                              for r in unbalanced)),
        {"currencies": len(per_currency), "unbalanced_currencies": len(unbalanced),
         "total_absolute_imbalance": sum(abs(r["imbalance"]) for r in per_currency)},
        # exact amounts as strings: they can exceed what a JSON number holds exactly
        {"per_currency": [{k: str(v) if k != "currency" else v for k, v in r.items()} for r in per_currency]},
    )


# ------------------------------------------------------------------------------------ parquet <-> index


def file_checksum(settings: Settings, date: dt.date) -> str:
    fs, _ = store.resolve(settings.storage_uri)
    digest = hashlib.sha256()
    with fs.open_input_stream(store.partition_file(settings.storage_uri, date)) as stream:
        while chunk := stream.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def parquet_matches_index(settings: Settings, date: dt.date) -> Outcome:
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
            spool = snapshot.IndexSpool(work_dir, date)
            snapshot.diff_files(
                fs,
                store.partition_file(settings.storage_uri, previous.snapshot_date) if previous else None,
                previous.cutoff_at if previous else None,
                path,
                spool,
            )
            csv_path = spool.close()
            missing, extra, examples, indexed = _compare_index_rows(conn, date, csv_path)
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
         "index_rows_missing": missing, "index_rows_unexpected": extra, "checksum_matches": int(checksum == entry.checksum)},
        {"previous_partition": previous.snapshot_date.isoformat() if previous else None,
         "differing_balance_ids": examples},
    )


_INDEX_VALUES = ("balance_id, balance, credit_balance, debit_balance, inflight_balance, inflight_credit_balance,"
                 " inflight_debit_balance, currency")


def _compare_index_rows(conn, date: dt.date, csv_path: Path | None) -> tuple[int, int, list[str], int]:
    """(missing, unexpected, example ids, indexed rows): index rows of ``date`` vs the recomputed spool."""
    conn.execute(
        "CREATE TEMP TABLE expected_index_rows (LIKE snapshot_index.balance_snapshots) ON COMMIT DROP"
    )
    if csv_path is not None:
        columns = ", ".join(index.INDEX_COLUMNS)
        with conn.cursor() as cur:
            with cur.copy(f"COPY expected_index_rows ({columns}) FROM STDIN WITH (FORMAT csv, HEADER true)") as copy, \
                    open(csv_path, "rb") as source:
                while chunk := source.read(4 << 20):
                    copy.write(chunk)
    actual = f"SELECT {_INDEX_VALUES} FROM snapshot_index.balance_snapshots WHERE snapshot_date = %(d)s"
    expected = f"SELECT {_INDEX_VALUES} FROM expected_index_rows"
    missing_sql = f"{expected} EXCEPT ALL {actual}"
    extra_sql = f"{actual} EXCEPT ALL {expected}"
    missing, extra, indexed = conn.execute(
        f"SELECT (SELECT count(*) FROM ({missing_sql}) m), (SELECT count(*) FROM ({extra_sql}) e),"
        " (SELECT count(*) FROM snapshot_index.balance_snapshots WHERE snapshot_date = %(d)s)",
        {"d": date},
    ).fetchone()
    examples = [r[0] for r in conn.execute(
        f"SELECT DISTINCT balance_id FROM (({missing_sql}) UNION ALL ({extra_sql})) x ORDER BY 1 LIMIT {SAMPLE_IDS}",
        {"d": date},
    )]
    return int(missing), int(extra), examples, int(indexed)


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
    entry = _entry(settings, date)
    ids = store.read_partition(settings.storage_uri, date, ["balance_id"])["balance_id"]
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
WITH late AS (  -- journal rows dated at or after the cutoff (index scans on effective_date / created_at)
    SELECT t.transaction_id, t.parent_transaction, t.source, t.destination, t.status,
           COALESCE(t.precise_amount, 0) AS amount
      FROM blnk.transactions t
     WHERE (t.effective_date >= $1::timestamp OR (t.effective_date IS NULL AND t.created_at >= $1::timestamp))
       AND t.status IN ('APPLIED', 'INFLIGHT', 'VOID')
),
after AS (
    SELECT destination AS balance_id, amount AS credit, 0 AS debit, 0 AS held_in, 0 AS held_out
      FROM late WHERE status = 'APPLIED'
    UNION ALL SELECT source, 0, amount, 0, 0 FROM late WHERE status = 'APPLIED'
    UNION ALL SELECT destination, 0, 0, amount, 0 FROM late WHERE status = 'INFLIGHT'
    UNION ALL SELECT source, 0, 0, 0, amount FROM late WHERE status = 'INFLIGHT'
    -- releases the snapshot did not count: the commit/void is at or after the cutoff ...
    UNION ALL SELECT x.balance_id, 0, 0, x.held_in, x.held_out
      FROM late c JOIN blnk.transactions p ON p.transaction_id = c.parent_transaction
     CROSS JOIN LATERAL (VALUES (p.destination, -c.amount, 0), (p.source, 0, -c.amount)) AS x(balance_id, held_in, held_out)
     WHERE c.status IN ('APPLIED', 'VOID') AND p.status = 'INFLIGHT'
    -- ... or it is before the cutoff but its hold is at or after it
    UNION ALL SELECT x.balance_id, 0, 0, x.held_in, x.held_out
      FROM late p JOIN blnk.transactions c ON c.parent_transaction = p.transaction_id
     CROSS JOIN LATERAL (VALUES (p.destination, -COALESCE(c.precise_amount, 0), 0),
                                (p.source, 0, -COALESCE(c.precise_amount, 0))) AS x(balance_id, held_in, held_out)
     WHERE p.status = 'INFLIGHT' AND c.status IN ('APPLIED', 'VOID')
       AND COALESCE(c.effective_date, c.created_at) < $1::timestamp
),
sums AS (
    SELECT balance_id, sum(credit) AS credit, sum(debit) AS debit, sum(held_in) AS held_in,
           sum(held_out) AS held_out
      FROM after GROUP BY balance_id
)
SELECT b.balance_id,
       b.balance::text AS live_balance, b.credit_balance::text AS live_credit_balance,
       b.debit_balance::text AS live_debit_balance, b.inflight_balance::text AS live_inflight_balance,
       b.inflight_credit_balance::text AS live_inflight_credit_balance,
       b.inflight_debit_balance::text AS live_inflight_debit_balance,
       COALESCE(s.credit, 0)::text AS after_credit, COALESCE(s.debit, 0)::text AS after_debit,
       COALESCE(s.held_in, 0)::text AS after_held_in, COALESCE(s.held_out, 0)::text AS after_held_out,
       b.created_at < $1::timestamp AS live_existed
  FROM blnk.balances b LEFT JOIN sums s ON s.balance_id = b.balance_id
"""


def live_drift(settings: Settings, date: dt.date) -> Outcome:
    """Snapshot + legs dated at or after the cutoff = live ``blnk.balances``, for the latest partition only."""
    entry = _entry(settings, date)
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        later = index.nearest_after(conn, date)
    if later is not None:
        return Outcome(True, f"not evaluated: {later.snapshot_date} is a later published partition"
                             " (live drift is checked on the latest partition only)",
                       {"evaluated": 0}, {})
    ledger = db.connect_arrow(db.ledger_url(settings))
    try:
        cur = ledger.cursor()
        cur.execute(_LIVE_SQL, parameters=(asof.ts(entry.cutoff_at),))
        live = cur.fetch_arrow_table()
        cur.close()
    finally:
        ledger.close()
    snap = store.read_partition(settings.storage_uri, date, ["balance_id", *store.AMOUNT_COLUMNS])
    joined = snap.join(live, "balance_id", join_type="full outer")
    # balances created after the cutoff belong to the comparison only when the snapshot has them
    joined = joined.filter(pc.or_(pc.is_valid(joined["balance"]), pc.fill_null(joined["live_existed"], False)))
    zero = pa.scalar(0, WIDE)
    w = {name: pc.fill_null(_wide(joined[name]), zero)
         for name in [*store.AMOUNT_COLUMNS,
                      *[c for c in live.column_names if c not in ("balance_id", "live_existed")]]}
    expected = {
        "credit_balance": pc.add(w["credit_balance"], w["after_credit"]),
        "debit_balance": pc.add(w["debit_balance"], w["after_debit"]),
        "inflight_credit_balance": pc.add(w["inflight_credit_balance"], w["after_held_in"]),
        "inflight_debit_balance": pc.add(w["inflight_debit_balance"], w["after_held_out"]),
    }
    expected["balance"] = pc.subtract(expected["credit_balance"], expected["debit_balance"])
    expected["inflight_balance"] = pc.subtract(expected["inflight_credit_balance"], expected["inflight_debit_balance"])
    drift = pa.array([False] * joined.num_rows)
    for name, value in expected.items():
        drift = pc.or_(drift, pc.not_equal(pc.cast(value, WIDE), w[f"live_{name}"]))
    # a balance present on one side only is drift too
    drift = pc.or_(drift, pc.or_(pc.is_null(joined["live_balance"]), pc.is_null(joined["balance"])))
    count = pc.sum(drift).as_py() or 0
    ids = pc.sort_indices(joined.filter(drift), [("balance_id", "ascending")])
    drifting = pc.take(joined.filter(drift)["balance_id"], ids).to_pylist()
    balance_drift = pc.subtract(w["live_balance"], pc.cast(expected["balance"], WIDE)).filter(drift)
    total = sum(abs(int(v)) for v in balance_drift.to_pylist()) if count else 0
    return Outcome(
        count == 0,
        ("snapshot + later legs equals every live balance" if not count else
         f"{count} balance(s) drift from snapshot + later legs: {', '.join(drifting[:SAMPLE_IDS])}"),
        {"evaluated": 1, "balances_compared": joined.num_rows, "drifting_balances": count,
         "total_absolute_balance_drift": total},
        {"drifting_balance_ids": drifting[:100]},
    )

