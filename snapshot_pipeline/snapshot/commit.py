"""Publishing a computed partition: index rows, roll-forward state and manifest in one transaction.

Under the global commit lock, in one index transaction: the partition's index rows
(re-diffed when its predecessor changed while it was computed), the re-diff of the
next partition's index rows, the manifest row, the roll-forward state, then the
rename of the Parquet file into place as the last step before COMMIT, behind a durable intent record
(:mod:`snapshot_pipeline.store.publish`): a failure undoes it, and a crash is resolved against the
manifest by whoever next takes the partition's lock.
"""

from __future__ import annotations

import datetime as dt
import time

from snapshot_pipeline import faults
from snapshot_pipeline.snapshot import ROLL_VERSION, Pass, SnapshotResult
from snapshot_pipeline.store import diff as store_diff
from snapshot_pipeline.store import index
from snapshot_pipeline.store import parquet as store
from snapshot_pipeline.store import publish
from snapshot_pipeline.store.spool import IndexSpool


def _same_partition(a: index.ManifestEntry | None, b: index.ManifestEntry | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.snapshot_date == b.snapshot_date and a.checksum == b.checksum


def published_before(settings, conn, snapshot_date: dt.date) -> index.ManifestEntry | None:
    """The partition the index rows of ``snapshot_date`` are changes against: the nearest earlier with a file."""
    entry = index.nearest_before(conn, snapshot_date)
    return entry if entry is not None and store.exists(settings.storage_uri, entry.snapshot_date) else None


def commit(settings, index_conn, snapshot_date: dt.date, cutoff: dt.datetime, batch_size: int, run_id, p: Pass,
           work_dir, log, started: float) -> SnapshotResult:
    faults.pause_point("read")
    writer = p.writer
    mark = time.monotonic()
    bytes_written, checksum = writer.close({"mode": p.mode})
    faults.pause_point("staged")
    spool_path = p.spool.close()
    fs = writer.fs
    publication = publish.Publication(writer, checksum, run_id=run_id, log=log)
    try:
        with index_conn.transaction():
            index.lock_commits(index_conn)
            predecessor = published_before(settings, index_conn, snapshot_date)
            changed_count = p.spool.rows
            if not _same_partition(predecessor, p.base):
                # the index holds changes against the partition before; recompute them from the files
                p.spool = IndexSpool(work_dir / "rediff", snapshot_date)
                store_diff.diff_files(
                    fs,
                    store.partition_file(settings.storage_uri, predecessor.snapshot_date) if predecessor else None,
                    writer.staging_path,
                    p.spool,
                )
                spool_path = p.spool.close()
                changed_count = p.spool.rows
            index_rows = index.replace_rows(index_conn, snapshot_date, spool_path)
            successor = index.nearest_after(index_conn, snapshot_date)
            if successor is not None and store.exists(settings.storage_uri, successor.snapshot_date):
                succ_spool = IndexSpool(work_dir / "successor", successor.snapshot_date)
                store_diff.diff_files(fs, writer.staging_path,
                                      store.partition_file(settings.storage_uri, successor.snapshot_date),
                                      succ_spool)
                succ_rows = index.replace_rows(index_conn, successor.snapshot_date, succ_spool.close())
                index.set_index_rows(index_conn, successor.snapshot_date, succ_rows)
                log(f"re-diffed index rows of the next partition {successor.snapshot_date}: {succ_rows} rows")
            view = p.step.view
            path = store.display_uri(settings.storage_uri, writer.final_path)
            entry = index.ManifestEntry(
                snapshot_date=snapshot_date,
                cutoff_at=cutoff,
                timezone=settings.timezone,
                max_transaction_id=view.max_transaction_id,
                transaction_count=view.transaction_count,
                max_balance_id=view.max_balance_id,
                pg_snapshot=view.pg_snapshot,
                read_at=view.read_at,
                row_count=writer.rows,
                changed_count=changed_count,
                index_rows=index_rows,
                files=[path],
                bytes=bytes_written,
                checksum=checksum,
                mode=p.mode,
                base_date=p.base.snapshot_date if p.base else None,
                batch_size=batch_size,
                duration_ms=int((time.monotonic() - started) * 1000),
                dagster_run_id=run_id,
                roll_version=ROLL_VERSION,
                reread_transaction_id=view.reread_transaction_id,
                reread_balance_id=view.reread_balance_id,
            )
            index.upsert_manifest(index_conn, entry)
            index.replace_roll_state(index_conn, snapshot_date, p.step.state)
            publication.make_visible()  # intent record, backup, rename: the last step before COMMIT
            faults.pause_point("visible")
        faults.pause_point("committed")
    except BaseException:
        publication.abandon(index_conn)  # resolved against the manifest, or left to the next lock holder
        writer.abort()
        raise
    publication.finish()
    p.phases_ms["commit_ms"] = int((time.monotonic() - mark) * 1000)
    seconds = max(time.monotonic() - started, 1e-9)
    return SnapshotResult(
        snapshot_date=snapshot_date,
        cutoff=cutoff,
        watermark=view.as_dict(),
        rows=writer.rows,
        balances_changed=changed_count,
        index_rows_written=index_rows,
        batches=p.batches,
        batch_size=batch_size,
        duration_ms=int(seconds * 1000),
        snapshots_per_second=round(writer.rows / seconds, 1),
        bytes_written=bytes_written,
        path=path,
        checksum=checksum,
        mode=p.mode,
        base_date=p.base.snapshot_date if p.base else None,
        currency_totals=p.totals.as_rows(),
        journal_rows=p.step.counted_rows,
        pending=p.step.state_counts(),
        phases_ms=p.phases_ms,
    )
