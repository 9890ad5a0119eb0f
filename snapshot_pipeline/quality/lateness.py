"""Which published partitions missed journal rows that count before their cutoff (late-transaction repair).

Partition ``D`` holds ``S_D = {journal rows with id <= W_D and effective time < C_D}`` (see
:mod:`snapshot_pipeline.ledger.asof`). It is stale when the journal now holds rows its read
could not see but that count before its cutoff:

* **late rows**: ``id > W_D`` and ``COALESCE(effective_date, created_at) < C_D`` (backdated or
  late-applied transactions);
* **late balances**: ``blnk.balances.id > max_balance_id_D`` and ``created_at < C_D``;
* **out-of-order commits**: rows with ``id <= W_D`` that committed after the read (the count
  of rows ``id <= W_D`` differs from the count the read saw).

:func:`scan` finds them incrementally, driven by a small JSON state (the sensor's cursor):

* it remembers the journal position already examined, so an unchanged journal costs one
  statement (two primary-key probes, no scan) plus reading the manifest;
* new rows are examined in ONE primary-key range scan above the examined position, grouped by
  ``width_bucket`` over the partitions' sorted watermarks and cutoffs, so the database returns
  at most a few groups however many rows and partitions there are;
* a partition published (or re-published) since the last scan is examined once from its own
  watermark upward (it is recognised by its identity among the partitions published within a day
  of the newest ``materialized_at``: a commit transaction never lasts that long);
* rows can appear below the examined position when their transaction commits out of id order;
  the position only becomes *final* once every ledger transaction in flight when it was read has
  finished (the in-progress list of ``pg_current_snapshot()``, matched with the running xids of
  the ledger's database), and until then the scan starts below it (plus a small id overlap for a
  writer that drew its id just before getting an xid);
* each newly published partition gets one prefix audit (``count(id <= W)``), run once all
  transactions in flight during its read have finished.

A finding names the partition, the manifest identity that was stale (watermark, count, balance
watermark) and why. The same identity is reported for repair once: re-materializing the
partition changes its identity.

This module never imports dagster; ``defs/snapshots/sensors.py`` turns findings into run requests.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import psycopg

from snapshot_pipeline import db
from snapshot_pipeline.ledger import asof
from snapshot_pipeline.quality.scan_state import Finding, Partition, ScanResult, ScanState
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.store import catalog, index
from snapshot_pipeline.store.location import Store

OVERLAP_IDS = 1000


def _parse(snapshot: str) -> tuple[int, int, set[int]]:
    """(xmin, xmax, in-progress xids) of a ``pg_snapshot`` text ``xmin:xmax:xip,...``."""
    xmin, xmax, xip = snapshot.split(":", 2)
    return int(xmin), int(xmax), {int(x) for x in xip.split(",") if x}


def finished(then: str | None, now: str, local_running: set[int] | None = None) -> bool:
    """True when every transaction in flight at snapshot ``then`` that could write the ledger has finished.

    Transactions that started after ``then`` cannot hold sequence values below what ``then``
    saw, so only ``then``'s in-progress list matters. xids are cluster-wide: with
    ``local_running`` (the xids, mod 2^32, of sessions of the ledger's database running now) only
    those count; without it (no privilege to see other sessions' xids) every still-running xid of
    the list does, which only delays, never skips, a scan.
    """
    if then is None:
        return False
    pending = _parse(then)[2]
    if local_running is not None:
        return not any(x & 0xFFFFFFFF in local_running for x in pending)
    now_xmin, now_xmax, now_xip = _parse(now)
    return all(x < now_xmin or (x < now_xmax and x not in now_xip) for x in pending)


_PROBE_SQL = """
SELECT (SELECT COALESCE(max(id), 0) FROM blnk.transactions)::bigint,
       (SELECT COALESCE(max(id), 0) FROM blnk.balances)::bigint,
       pg_current_snapshot()::text,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
           OR pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER'),
       ARRAY(SELECT backend_xid::text::bigint FROM pg_stat_activity
              WHERE datname = current_database() AND backend_xid IS NOT NULL)
"""


def activity(cur) -> tuple[int, int, str, set[int] | None]:
    """(max transactions.id, max balances.id, pg_current_snapshot, running ledger xids or None), one statement."""
    cur.execute(_PROBE_SQL)
    head_tx, head_balance, snapshot, can_see, running = cur.fetchone()
    return int(head_tx), int(head_balance), snapshot, set(running) if can_see else None


def _grouped(cur, table: str, id_col: str, time_expr: str, thresholds: list[int], cutoffs: list[dt.datetime],
             lo: int, hi: int) -> dict[str, np.ndarray]:
    """Rows with ``lo < id <= hi`` and time before the newest cutoff, grouped by (watermark bucket, cutoff bucket)."""
    cur.execute(
        f"SELECT width_bucket({id_col}, %s::bigint[]), width_bucket({time_expr}, %s::timestamp[]),"
        f" count(*), min({id_col}), max({id_col}), min({time_expr})"
        f" FROM {table} WHERE {id_col} > %s AND {id_col} <= %s AND {time_expr} < %s::timestamp"
        " GROUP BY 1, 2",
        (thresholds, cutoffs, lo, hi, cutoffs[-1]),
    )
    rows = cur.fetchall()
    return {
        "w": np.array([r[0] for r in rows], dtype=np.int64),
        "c": np.array([r[1] for r in rows], dtype=np.int64),
        "n": np.array([r[2] for r in rows], dtype=np.int64),
        "lo": np.array([r[3] for r in rows], dtype=np.int64),
        "hi": np.array([r[4] for r in rows], dtype=np.int64),
        "t": np.array([r[5] for r in rows], dtype="datetime64[us]"),
    }


def _late_for(groups: dict[str, np.ndarray], w_pos: int, c_pos: int):
    """Sum the groups with id bucket >= w_pos (id > W) and time bucket < c_pos (time < cutoff)."""
    if not len(groups["n"]):
        return 0, None, None
    mask = (groups["w"] >= w_pos) & (groups["c"] < c_pos)
    count = int(groups["n"][mask].sum())
    if not count:
        return 0, None, None
    earliest = groups["t"][mask].min().astype(dt.datetime)
    return count, (int(groups["lo"][mask].min()), int(groups["hi"][mask].max())), earliest


def _prefix_counts(cur, watermarks: list[int]) -> dict[int, int]:
    """count(id <= W) for each W, in one index-only range scan up to the largest."""
    ordered = sorted(set(watermarks))
    cur.execute(
        "SELECT width_bucket(id, %s::bigint[]), count(*) FROM blnk.transactions WHERE id <= %s GROUP BY 1",
        ([w + 1 for w in ordered], ordered[-1]),
    )
    per_bucket = dict(cur.fetchall())
    out, running = {}, 0
    for position, w in enumerate(ordered):
        running += per_bucket.get(position, 0)  # bucket k holds ids in [ordered[k-1]+1, ordered[k]]
        out[w] = running
    return out


def scan(settings: Settings, state: ScanState, *, overlap: int = OVERLAP_IDS) -> ScanResult:
    """Examine what changed in the journal since ``state`` against every published partition."""
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        partitions = [Partition.from_entry(e) for e in index.all_partitions(conn)] if index.ready(conn) else []
    with db.connect(db.ledger_url(settings), autocommit=True, what="ledger database") as ledger:
        with ledger.cursor() as cur:
            return _scan(cur, partitions, state, overlap)


def _scan(cur: psycopg.Cursor, partitions: list[Partition], state: ScanState, overlap: int) -> ScanResult:
    head_tx, head_balance, now_snapshot, local_running = activity(cur)
    new_state = dataclasses.replace(state, seen=set(state.seen), unaudited=dict(state.unaudited),
                                    requested=dict(state.requested))
    if finished(state.snapshot, now_snapshot, local_running):
        new_state.tx_final = state.tx_examined
        new_state.balance_final = state.balance_examined
    current = {p.date.isoformat(): p for p in partitions}
    new = [p for p in partitions if state.is_new(p)]
    # forget what no longer exists (re-materialized or removed partitions)
    new_state.unaudited = {d: i for d, i in new_state.unaudited.items() if d in current and current[d].identity == i}
    new_state.requested = {d: i for d, i in new_state.requested.items() if d in current and current[d].identity == i}
    for p in new:
        new_state.unaudited[p.date.isoformat()] = p.identity
    ready_audits = [current[d] for d in new_state.unaudited
                    if finished(current[d].pg_snapshot, now_snapshot, local_running)]
    journal_moved = (head_tx != state.tx_examined or head_balance != state.balance_examined
                     or new_state.tx_final < head_tx or new_state.balance_final < head_balance)
    stats = {"head_transaction_id": head_tx, "head_balance_id": head_balance, "partitions": len(partitions),
             "new_partitions": len(new), "rows_scanned_from": None, "audits": len(ready_audits)}
    findings: dict[dt.date, Finding] = {}
    examined = bool(partitions) and (journal_moved or bool(new))
    if examined:
        _examine_rows(cur, partitions, new, new_state, head_tx, head_balance, overlap, findings, stats)
    if ready_audits:
        counts = _prefix_counts(cur, [p.max_transaction_id for p in ready_audits])
        for p in ready_audits:
            changed = counts[p.max_transaction_id] - p.transaction_count
            if changed:
                findings.setdefault(p.date, Finding(p)).prefix_changed = changed
            del new_state.unaudited[p.date.isoformat()]
    new_state.tx_examined, new_state.balance_examined, new_state.snapshot = head_tx, head_balance, now_snapshot
    new_state.remember(partitions)
    ordered = [findings[d] for d in sorted(findings)]
    new_requests = []
    for finding in ordered:
        day = finding.date.isoformat()
        if new_state.requested.get(day) != finding.partition.identity:
            new_requests.append(finding)
            new_state.requested[day] = finding.partition.identity
    return ScanResult(ordered, new_requests, new_state, examined or bool(ready_audits), stats)


def _examine_rows(cur, partitions, new, state: ScanState, head_tx, head_balance, overlap, findings, stats) -> None:
    thresholds_tx = sorted({p.max_transaction_id + 1 for p in partitions})
    thresholds_balance = sorted({p.max_balance_id + 1 for p in partitions})
    cutoffs = sorted({p.cutoff for p in partitions})
    # Rows at or below every watermark are visible to every partition: never late.
    floor_tx = thresholds_tx[0] - 1
    floor_balance = thresholds_balance[0] - 1
    lo_tx = max(floor_tx, min([state.tx_final - overlap, *[p.max_transaction_id for p in new]]))
    lo_balance = max(floor_balance, min([state.balance_final - overlap, *[p.max_balance_id for p in new]]))
    stats["rows_scanned_from"] = lo_tx
    tx_groups = _grouped(cur, "blnk.transactions t", "t.id", asof.effective_time("t"), thresholds_tx, cutoffs,
                         lo_tx, head_tx)
    balance_groups = _grouped(cur, "blnk.balances b", "b.id", "b.created_at", thresholds_balance, cutoffs,
                              lo_balance, head_balance)
    stats["row_groups"] = int(len(tx_groups["n"]))
    # 1-based positions in the sorted thresholds: id > W  <=>  bucket >= position of W + 1;
    # time < C  <=>  bucket < position of C.
    tx_pos = {w: k + 1 for k, w in enumerate(thresholds_tx)}
    balance_pos = {w: k + 1 for k, w in enumerate(thresholds_balance)}
    cutoff_pos = {c: k + 1 for k, c in enumerate(cutoffs)}
    for p in partitions:
        c_pos = cutoff_pos[p.cutoff]
        count, id_range, earliest = _late_for(tx_groups, tx_pos[p.max_transaction_id + 1], c_pos)
        balances, balance_range, _ = _late_for(balance_groups, balance_pos[p.max_balance_id + 1], c_pos)
        if count or balances:
            finding = findings.setdefault(p.date, Finding(p))
            finding.late_transactions, finding.late_id_range, finding.earliest_effective = count, id_range, earliest
            finding.late_balances, finding.late_balance_id_range = balances, balance_range


def stale_partitions(settings: Settings) -> dict[dt.date, dict[str, int]]:
    """Every published partition that missed journal rows counting before its cutoff, with the counts of
    why (``late_transactions``, ``late_balances``, ``prefix_changed``; zeros left out): one :func:`scan`
    from an empty state, what the repair sensor finds on its first tick."""
    result = scan(settings, ScanState.from_json(None))
    return {finding.date: finding.counts() for finding in result.findings}


def staleness(settings: Settings, snapshot_date: dt.date) -> dict[str, int] | None:
    """Why a published partition no longer matches the journal (``{}`` when current; None when unpublished).
    ``parquet_missing`` = 1 when its manifest names a file that is gone."""
    with db.connect(db.snapshot_url(settings), autocommit=True, what="snapshot index database") as conn:
        entry = index.manifest(conn, snapshot_date) if index.ready(conn) else None
    if entry is None:
        return None
    reasons = dict(stale_partitions(settings).get(snapshot_date, {}))
    if catalog.present_paths(Store.at(settings.storage_uri), entry) is None:
        reasons["parquet_missing"] = 1
    return reasons
