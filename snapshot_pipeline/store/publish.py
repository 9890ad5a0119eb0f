"""Crash-safe publication of a snapshot partition, and cleaning up after runs that died.

The Parquet directory and the Postgres manifest (``snapshot_index.partitions``) are two stores;
no single operation changes both. The publish is therefore *logged and resolved*:

1. the new file is written to ``<root>/.staging/snapshot-<D>-<uuid>.parquet`` (outside the dataset);
2. inside the index transaction, after the manifest row is written, :meth:`Publication.make_visible`
   writes a durable **intent record** ``<root>/.publish/snapshot-<D>.intent.json`` (staging path,
   backup path, the new file's sha256), hard-links the current file to a backup, and renames the
   staging file over ``snapshot_date=D/part-00000.parquet``;
3. the index transaction COMMITs (the commit point); :meth:`Publication.finish` deletes the backup
   and the intent record.

A crash between 2 and 3 leaves the new file visible while the manifest still names the old one.
Whoever next holds the partition's lock (the next run of ``D``, any run through :func:`claim`, the
``crash_recovery_sensor`` tick, ``snapshot-pipeline doctor``) resolves the intent against the
manifest's checksum before anything else of that run reads or writes the partition: manifest =
new checksum -> roll forward (the new file stays, the backup goes); otherwise -> roll back (the
backup goes back over the final name, or the file is removed when there was none before).

Each run holding a partition lock also leaves a **holder record**
``<root>/.publish/snapshot-<D>.holder.json`` (run id, pid, host, its work directory), removed when
it ends. A holder record found by the next lock holder means that run died: it is reported (the
Dagster side marks the run failed) and its work directory and staging files are removed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pyarrow.fs as pafs

from snapshot_pipeline.store import index
from snapshot_pipeline.store import parquet as store

logger = logging.getLogger(__name__)

CONTROL_DIR = ".publish"
STAGING_DIR = ".staging"
RECORD_VERSION = 1
_RECORD_NAME = re.compile(r"^snapshot-(\d{4}-\d{2}-\d{2})\.(intent|holder)\.json$")
_STAGING_NAME = re.compile(r"^snapshot-(\d{4}-\d{2}-\d{2})-[0-9a-f]+\.(parquet|previous)$")


# ------------------------------------------------------------------------------------------------ locations


def control_dir(storage_uri: str) -> str:
    """``<root>/.publish``: intent and holder records (outside the dataset directory)."""
    return f"{store.resolve(storage_uri)[1]}/{CONTROL_DIR}"


def staging_dir(storage_uri: str) -> str:
    """``<root>/.staging``, where :class:`~snapshot_pipeline.store.parquet.PartitionWriter` stages files."""
    return f"{store.resolve(storage_uri)[1]}/{STAGING_DIR}"


def intent_path(storage_uri: str, date: dt.date) -> str:
    return f"{control_dir(storage_uri)}/snapshot-{date.isoformat()}.intent.json"


def holder_path(storage_uri: str, date: dt.date) -> str:
    return f"{control_dir(storage_uri)}/snapshot-{date.isoformat()}.holder.json"


# ------------------------------------------------------------------------------------------- small file ops


def _is_file(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.File


def _delete(fs: pafs.FileSystem, path: str | None) -> bool:
    if path and _is_file(fs, path):
        fs.delete_file(path)
        return True
    return False


def _local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move(fs: pafs.FileSystem, source: str, target: str) -> None:
    """Replace ``target`` by ``source`` in one rename (local: ``os.replace`` + directory fsync)."""
    if _local(fs):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(source, target)
        _fsync_dir(os.path.dirname(target))
    else:
        fs.move(source, target)


def _write_record(fs: pafs.FileSystem, path: str, record: dict) -> None:
    """Write a JSON record durably and atomically (temp file, fsync, rename; one PUT on object stores)."""
    data = json.dumps(record, sort_keys=True).encode()
    if _local(fs):
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        _fsync_dir(directory)
    else:
        with fs.open_output_stream(path) as out:
            out.write(data)


def _read_record(fs: pafs.FileSystem, path: str) -> dict | None:
    if not _is_file(fs, path):
        return None
    with fs.open_input_stream(path) as stream:
        return json.loads(stream.read())


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# -------------------------------------------------------------------------------------------------- publish


class Publication:
    """One publish of a staged snapshot file, resolvable after a crash (see the module docstring).

    Use::

        publication = Publication(writer, checksum, run_id=run_id)
        try:
            with conn.transaction():
                ...  # index rows, manifest row
                publication.make_visible()
        except BaseException:
            publication.abandon(conn)
            raise
        publication.finish()
    """

    def __init__(self, writer: store.PartitionWriter, checksum: str, *, run_id: str | None = None,
                 log: Callable[[str], None] | None = None):
        self.fs = writer.fs
        self.storage_uri = writer.storage_uri
        self.date = writer.date
        self.staging_path = writer.staging_path
        self.final_path = writer.final_path
        self.checksum = checksum
        self.run_id = run_id
        self.log = log or logger.info
        self.intent_path = intent_path(writer.storage_uri, writer.date)
        self.intent: dict | None = None

    def make_visible(self) -> None:
        """Record the intent, back up the current file, rename the staging file into the dataset.

        Call inside the index transaction, after the manifest row is written, as its last step.
        """
        had_previous = _is_file(self.fs, self.final_path)
        backup = (f"{staging_dir(self.storage_uri)}/snapshot-{self.date.isoformat()}-{uuid.uuid4().hex}.previous"
                  if had_previous else None)
        self.intent = {
            "version": RECORD_VERSION,
            "snapshot_date": self.date.isoformat(),
            "staging_path": self.staging_path,
            "final_path": self.final_path,
            "backup_path": backup,
            "had_previous": had_previous,
            "checksum": self.checksum,
            "run_id": self.run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "written_at": _now(),
        }
        _write_record(self.fs, self.intent_path, self.intent)
        if backup is not None:
            if _local(self.fs):
                os.link(self.final_path, backup)
            else:
                self.fs.copy_file(self.final_path, backup)
        _move(self.fs, self.staging_path, self.final_path)

    def finish(self) -> None:
        """After the COMMIT: drop the backup of the previous file, then the intent record."""
        if self.intent is None:
            return
        _delete(self.fs, self.intent["backup_path"])
        _delete(self.fs, self.intent_path)
        self.intent = None

    def abandon(self, conn: psycopg.Connection) -> str:
        """After a failure: resolve against the manifest now if it can be read, else leave it to the next holder."""
        if self.intent is None:
            return "none"
        try:
            entry = index.manifest(conn, self.date)
        except Exception as exc:  # noqa: BLE001 - the index is unreachable; the next lock holder resolves it
            self.log(f"partition {self.date}: publish left for the next holder of its lock to resolve ({exc})")
            return "unresolved"
        outcome = resolve_intent(self.fs, self.intent_path, self.intent, entry.checksum if entry else None, self.log)
        self.intent = None
        return outcome


def resolve_intent(fs: pafs.FileSystem, path: str, intent: dict, manifest_checksum: str | None,
                   log: Callable[[str], None]) -> str:
    """Make the visible file the one the manifest names; returns ``completed`` or ``rolled_back``.

    The caller holds the partition's lock (or is the publishing run itself, after its transaction ended).
    """
    date = intent["snapshot_date"]
    final, staging, backup = intent["final_path"], intent["staging_path"], intent["backup_path"]
    if manifest_checksum is not None and manifest_checksum == intent["checksum"]:
        if _is_file(fs, staging):  # committed, the rename interrupted (object stores: copy then delete)
            _move(fs, staging, final)
        _delete(fs, backup)
        outcome = "completed"
    else:
        if manifest_checksum is None:  # the manifest names no file: none may be visible
            _delete(fs, final)
            _delete(fs, backup)
        elif backup and _is_file(fs, backup):
            _move(fs, backup, final)
        elif not intent["had_previous"]:
            _delete(fs, final)
        _delete(fs, staging)
        outcome = "rolled_back"
    _delete(fs, path)
    log(f"partition {date}: interrupted publish of run {intent.get('run_id')} {outcome}"
        f" (manifest checksum {manifest_checksum or 'none'}, new file {intent['checksum']})")
    return outcome


# ------------------------------------------------------------------------------------------ dead runs, sweep


@dataclasses.dataclass(frozen=True)
class DeadRun:
    """A run that held a partition's lock and died without releasing its holder record."""

    snapshot_date: str
    run_id: str | None
    pid: int
    host: str
    started_at: str
    work_dir: str | None

    def reason(self) -> str:
        return (f"the process running this materialization of partition {self.snapshot_date} (pid {self.pid} on"
                f" {self.host}, lock taken at {self.started_at}) died without finishing; found by the next"
                f" holder of the partition's lock at {_now()}, which cleaned up after it")


@dataclasses.dataclass
class Recovery:
    """What :func:`recover` found and did for one partition."""

    snapshot_date: dt.date
    dead_run: DeadRun | None = None
    publish: str = "none"  # none | completed | rolled_back
    removed: list[str] = dataclasses.field(default_factory=list)

    @property
    def acted(self) -> bool:
        return self.dead_run is not None or self.publish != "none" or bool(self.removed)

    def as_dict(self) -> dict:
        return {
            "snapshot_date": self.snapshot_date.isoformat(),
            "dead_run": dataclasses.asdict(self.dead_run) if self.dead_run else None,
            "publish": self.publish,
            "removed": self.removed,
        }


def recover(storage_uri: str, conn: psycopg.Connection, date: dt.date, *,
            log: Callable[[str], None] | None = None,
            on_dead_run: Callable[[DeadRun], None] | None = None) -> Recovery:
    """Under ``date``'s partition lock: resolve an interrupted publish, report a dead holder, sweep leftovers.

    Everything under the lock's name is dead: a live run of ``date`` would hold the lock. Removed:
    the dead holder's work directory, every ``snapshot-<date>-*`` staging file and backup, and
    temporary record files of ``date``.
    """
    log = log or logger.info
    fs, _ = store.resolve(storage_uri)
    result = Recovery(date)
    intent_file = intent_path(storage_uri, date)
    intent = _read_record(fs, intent_file)
    if intent is not None:
        entry = index.manifest(conn, date)
        result.publish = resolve_intent(fs, intent_file, intent, entry.checksum if entry else None, log)
    holder_file = holder_path(storage_uri, date)
    holder = _read_record(fs, holder_file)
    if holder is not None:
        result.dead_run = DeadRun(
            snapshot_date=date.isoformat(), run_id=holder.get("run_id"), pid=int(holder.get("pid", 0)),
            host=str(holder.get("host", "")), started_at=str(holder.get("started_at", "")),
            work_dir=holder.get("work_dir"),
        )
        log(f"partition {date}: run {result.dead_run.run_id} (pid {result.dead_run.pid}) died holding its lock")
        if on_dead_run is not None:
            try:
                on_dead_run(result.dead_run)
            except Exception as exc:  # noqa: BLE001 - reporting must not stop the recovery
                log(f"partition {date}: could not report dead run {result.dead_run.run_id}: {exc}")
        work_dir = result.dead_run.work_dir
        if work_dir and os.path.isdir(work_dir) and _is_work_dir(Path(work_dir), date):
            shutil.rmtree(work_dir, ignore_errors=True)
            result.removed.append(work_dir)
    result.removed.extend(_sweep_store(fs, storage_uri, date))
    _delete(fs, holder_file)
    if result.removed:
        log(f"partition {date}: removed {len(result.removed)} leftover(s) of dead runs: {', '.join(result.removed)}")
    return result


def _is_work_dir(path: Path, date: dt.date) -> bool:
    """Only directories this module names (never a path a corrupted record could point anywhere)."""
    return path.name.startswith(f"snapshot-{date.isoformat()}-") and path.parent == Path(tempfile.gettempdir())


def _sweep_store(fs: pafs.FileSystem, storage_uri: str, date: dt.date) -> list[str]:
    removed = []
    prefix = f"snapshot-{date.isoformat()}"
    for directory, pattern in ((staging_dir(storage_uri), _STAGING_NAME), (control_dir(storage_uri), None)):
        for info in fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True)):
            if info.type != pafs.FileType.File:
                continue
            name = info.base_name
            stale = (pattern.match(name) and name.startswith(prefix + "-")) if pattern else (
                name.startswith(prefix + ".") and ".json.tmp-" in name)
            if stale:
                fs.delete_file(info.path)
                removed.append(info.path)
    return removed


def pending_dates(storage_uri: str) -> list[dt.date]:
    """Partitions with an intent record, a holder record or a snapshot staging file (one listing each)."""
    fs, _ = store.resolve(storage_uri)
    found = set()
    for directory, pattern in ((control_dir(storage_uri), _RECORD_NAME), (staging_dir(storage_uri), _STAGING_NAME)):
        for info in fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True)):
            match = pattern.match(info.base_name)
            if match:
                found.add(dt.date.fromisoformat(match.group(1)))
    return sorted(found)


def recover_all(storage_uri: str, conn: psycopg.Connection, *, skip: dt.date | None = None,
                log: Callable[[str], None] | None = None,
                on_dead_run: Callable[[DeadRun], None] | None = None) -> list[Recovery]:
    """:func:`recover` every pending partition whose lock is free (a held lock means a live run)."""
    results = []
    for date in pending_dates(storage_uri):
        if date == skip or not index.try_lock_partition(conn, date):
            continue
        try:
            results.append(recover(storage_uri, conn, date, log=log, on_dead_run=on_dead_run))
        finally:
            index.unlock_partition(conn, date)
    return results


@dataclasses.dataclass
class Claim:
    """A run's hold on a partition: its work directory and holder record (see :func:`claim`)."""

    storage_uri: str
    snapshot_date: dt.date
    run_id: str | None
    token: str
    work_dir: Path
    recovery: Recovery

    def release(self) -> None:
        """At the run's end, before the lock is released: remove the work directory and the holder record."""
        shutil.rmtree(self.work_dir, ignore_errors=True)
        fs, _ = store.resolve(self.storage_uri)
        path = holder_path(self.storage_uri, self.snapshot_date)
        record = _read_record(fs, path)
        if record is not None and record.get("token") == self.token:
            fs.delete_file(path)


def claim(storage_uri: str, conn: psycopg.Connection, date: dt.date, *, run_id: str | None = None,
          log: Callable[[str], None] | None = None,
          on_dead_run: Callable[[DeadRun], None] | None = None) -> Claim:
    """Right after taking ``date``'s partition lock: recover, then record this run as the holder.

    Also recovers every other partition left pending by a dead run (their locks free), so that this
    run never reads a base partition whose publish was interrupted. Returns the run's work directory
    (created here, named in the holder record so the next holder can remove it if this run dies).
    """
    for other in recover_all(storage_uri, conn, skip=date, log=log, on_dead_run=on_dead_run):
        logger.debug("recovered %s", other.as_dict())
    recovery = recover(storage_uri, conn, date, log=log, on_dead_run=on_dead_run)
    token = uuid.uuid4().hex
    work_dir = Path(tempfile.gettempdir()) / f"snapshot-{date.isoformat()}-{token[:12]}"
    fs, _ = store.resolve(storage_uri)
    _write_record(fs, holder_path(storage_uri, date), {
        "version": RECORD_VERSION,
        "snapshot_date": date.isoformat(),
        "run_id": run_id,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": _now(),
        "work_dir": str(work_dir),
        "token": token,
    })
    work_dir.mkdir()
    return Claim(storage_uri, date, run_id, token, work_dir, recovery)
