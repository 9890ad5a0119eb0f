"""Publishing a computed partition: index rows, roll-forward state and manifest in one transaction,
then the Delta commit.

Under the global commit lock, in one index transaction: the partition's index rows
(re-diffed when its predecessor changed while it was computed), the re-diff of the
next partition's index rows, the manifest row and the ``partition_versions`` row naming
the new files (the next generation), the roll-forward state, and (sharded runs) the move
of the staged shard files into the partition's directory. Its COMMIT is the commit point;
the Delta commit follows (:mod:`snapshot_pipeline.store.publication` has the protocol): a
failure before the COMMIT deletes the new files, a crash leaves orphans the next holder of
the partition's lock deletes, and a crash after it leaves a Delta commit to replay.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterator

from snapshot_pipeline import faults
from snapshot_pipeline.snapshot.results import ROLL_VERSION, Pass, RunFacts, SnapshotResult
from snapshot_pipeline.store import catalog, generations, index, roll_state
from snapshot_pipeline.store import diff as store_diff
from snapshot_pipeline.store.index_stream import IndexStream
from snapshot_pipeline.store.location import Store
from snapshot_pipeline.store.publication import Publication, version_record
from snapshot_pipeline.store.spool import IndexSpool


def _same_partition(a: index.ManifestEntry | None, b: index.ManifestEntry | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.snapshot_date == b.snapshot_date and a.checksum == b.checksum


def published_before(settings, conn, snapshot_date: dt.date) -> tuple[index.ManifestEntry | None, list[str] | None]:
    """The partition the index rows of ``snapshot_date`` are changes against (the nearest earlier with its
    files present), and its files."""
    entry = index.nearest_before(conn, snapshot_date)
    paths = catalog.present_paths(Store.at(settings.storage_uri), entry)
    return (entry, paths) if paths is not None else (None, None)


def _index_rows(settings, conn, snapshot_date: dt.date, p: Pass, work_dir) -> tuple[int, int, bool]:
    """Write the partition's index rows; returns (changed balances, index rows, whether they were re-diffed).

    The spooled changes are against the base; when the partition published before this one is no
    longer that base (it changed while this one was computed), they are recomputed from the files.
    """
    predecessor, predecessor_paths = published_before(settings, conn, snapshot_date)
    spool = p.spool
    rediffed = not _same_partition(predecessor, p.base)
    if isinstance(spool, IndexStream) and not rediffed:
        return spool.rows, spool.rows, False  # loaded by the stream (its COPY ended when the commit began)
    spool_path = spool.close() if isinstance(spool, IndexSpool) else None
    if rediffed:
        spool = IndexSpool(work_dir / "rediff", snapshot_date)
        store_diff.diff_files(p.fs, predecessor_paths, p.staging_paths, spool)
        spool_path = spool.close()
    return spool.rows, index.replace_rows(conn, snapshot_date, spool_path), rediffed


def _rediff_successor(settings, conn, snapshot_date: dt.date, p: Pass, work_dir, log) -> None:
    """The next published partition's index rows are changes against this one: recompute them."""
    successor = index.nearest_after(conn, snapshot_date)
    successor_paths = catalog.present_paths(p.store, successor)
    if successor is None or successor_paths is None:
        return
    spool = IndexSpool(work_dir / "successor", successor.snapshot_date)
    store_diff.diff_files(p.fs, p.staging_paths, successor_paths, spool)
    rows = index.replace_rows(conn, successor.snapshot_date, spool.close())
    index.set_index_rows(conn, successor.snapshot_date, rows)
    log(f"re-diffed index rows of the next partition {successor.snapshot_date}: {rows} rows")


def _manifest_entry(facts: RunFacts, p: Pass, files: list[str], changed_count: int, index_rows: int,
                    generation: int) -> index.ManifestEntry:
    view = p.step.view
    return index.ManifestEntry(
        snapshot_date=facts.snapshot_date,
        cutoff_at=facts.cutoff,
        timezone=facts.settings.timezone,
        max_transaction_id=view.max_transaction_id,
        transaction_count=view.transaction_count,
        max_balance_id=view.max_balance_id,
        pg_snapshot=view.pg_snapshot,
        read_at=view.read_at,
        row_count=p.rows,
        changed_count=changed_count,
        index_rows=index_rows,
        files=files,
        bytes=p.bytes,
        checksum=p.checksum,
        mode=p.mode,
        base_date=p.base.snapshot_date if p.base else None,
        batch_size=facts.batch_size,
        duration_ms=int((time.monotonic() - facts.started) * 1000),
        dagster_run_id=facts.run_id,
        roll_version=ROLL_VERSION,
        reread_transaction_id=view.reread_transaction_id,
        reread_balance_id=view.reread_balance_id,
        generation=generation,
        reason=facts.reason,
    )


def commit(facts: RunFacts, index_conn, p: Pass, work_dir) -> SnapshotResult:
    """Publish ``p``'s files as partition ``facts.snapshot_date``: all of them or none, in the index and then
    in the Delta table; then the in-run live comparison, its later legs staged while this committed (a failed
    publish waits for that session, so that none outlives the run). ``p`` is not changed."""
    try:
        result, rediffed = _publish(facts, index_conn, p, work_dir)
    except BaseException:
        if isinstance(p.spool, IndexStream):
            p.spool.reset()  # a publish that failed before its transaction: the stream's rows rolled back
        if p.live is not None:
            p.live.wait()
        raise
    if p.live is not None:
        found = p.live.outcome(facts.log, facts.snapshot_date, result.phases_ms)
        # the run compared the changes against its base; when re-diffed, the partition's are against another
        result.live_drift = None if rediffed else found
    return result


@contextlib.contextmanager
def _transaction(index_conn, p: Pass, snapshot_date: dt.date, log: Callable[[str], None]) -> Iterator:
    """The commit's index transaction, the commit lock taken: the stream's, already holding the index rows
    (:mod:`snapshot_pipeline.store.index_stream`), else one on ``index_conn``, the month's index partition
    created first (never under the commit lock: see :func:`index.ensure_month_partition`)."""
    if isinstance(p.spool, IndexStream):
        with p.spool.committing() as conn:
            yield conn
    else:
        index.ensure_month_partition(index_conn, snapshot_date, log)
        with index_conn.transaction():
            index.lock_commits(index_conn)
            yield index_conn


def _publish(facts: RunFacts, index_conn, p: Pass, work_dir) -> tuple[SnapshotResult, bool]:
    """The index transaction and the Delta commit; returns the result and whether the index rows were re-diffed."""
    settings, snapshot_date, log = facts.settings, facts.snapshot_date, facts.log
    mark = time.monotonic()
    publication = Publication(p.store, snapshot_date, p.files, log=log)
    committing = False  # once the COMMIT is sent, its outcome is the manifest's to tell, not ours
    try:
        with _transaction(index_conn, p, snapshot_date, log) as conn:
            changed_count, index_rows, rediffed = _index_rows(settings, conn, snapshot_date, p, work_dir)
            _rediff_successor(settings, conn, snapshot_date, p, work_dir, log)
            entry = _manifest_entry(facts, p, publication.names, changed_count, index_rows,
                                    generations.next_generation(conn, snapshot_date))
            index.upsert_manifest(conn, entry)
            generations.record_version(conn, version_record(entry))
            if not isinstance(p.spool, IndexStream):  # a stream wrote it when it opened
                roll_state.replace(conn, snapshot_date, p.step.state)
            publication.move_in()  # sharded: the moves into the partition's directory
            faults.pause_point("visible")
            committing = True
        faults.pause_point("committed")
    except BaseException:
        if not committing:
            publication.abandon()  # certainly not committed: deleted now
        # else the COMMIT may have happened: the next holder of the lock keeps what a generation names
        raise
    phases = {**p.phases_ms, "index_commit_ms": int((time.monotonic() - mark) * 1000)}
    delta_version = publication.finish(index_conn, settings.history_days)  # the Delta commit
    faults.pause_point("published")
    phases["commit_ms"] = int((time.monotonic() - mark) * 1000)
    result = _result(facts, p, publication.names, changed_count, index_rows, phases)
    result.delta_version, result.generation = delta_version, entry.generation
    return result, rediffed


def _result(facts: RunFacts, p: Pass, files: list[str], changed_count: int, index_rows: int, phases: dict
            ) -> SnapshotResult:
    seconds = max(time.monotonic() - facts.started, 1e-9)
    snapshot_date, batch_size = facts.snapshot_date, facts.batch_size
    return SnapshotResult(
        snapshot_date=snapshot_date,
        cutoff=facts.cutoff,
        watermark=p.step.view.as_dict(),
        rows=p.rows,
        balances_changed=changed_count,
        index_rows_written=index_rows,
        batches=p.batches,
        batch_size=batch_size,
        duration_ms=int(seconds * 1000),
        snapshots_per_second=round(p.rows / seconds, 1),
        bytes_written=p.bytes,
        path=files[0] if len(files) == 1 else p.store.display(p.store.partition_dir(snapshot_date)),
        files=files,
        checksum=p.checksum,
        mode=p.mode,
        base_date=p.base.snapshot_date if p.base else None,
        currency_totals=p.totals.as_rows(),
        journal_rows=p.step.counted_rows,
        pending=p.step.state_counts(),
        phases_ms=phases,
    )
