"""Phase 1 of a sharded partition (:mod:`snapshot_pipeline.snapshot.shards`): the plan, one cut for K shards.

Under the partition's lock: choose the base and K-1 boundaries (from the base partition's row-group
statistics; at genesis, quantiles of the balances the read adds), open the one REPEATABLE READ view of
the ledger, stage the step once, export the view's snapshot (``pg_export_snapshot()``) and compute the K
per-shard deltas at once in K sessions that import it (``SET TRANSACTION SNAPSHOT``,
:mod:`snapshot_pipeline.ledger.sessions`), so the cut stays one cut; each session gets its range's legs
from the staging session and probes only its range's balances. Writes ``delta-0000k.parquet`` per shard
(in ``balance_id`` order), the roll-forward state and ``plan.json`` to the run's work prefix
``<root>/.staging/shards-<D>-<token>/``. Shard k covers ``[boundary[k-1], boundary[k])``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from snapshot_pipeline import calendar, db, names
from snapshot_pipeline.ledger import asof, journal, sessions
from snapshot_pipeline.settings import Settings
from snapshot_pipeline.snapshot.results import (
    SnapshotError,
    validate_batch_size,
)
from snapshot_pipeline.snapshot.roll import (
    holding_partition,
    origin_of,
    usable_base,
)
from snapshot_pipeline.store import catalog, index, parquet, ranges, records, recovery
from snapshot_pipeline.store.location import Store

logger = logging.getLogger(__name__)

MAX_SHARDS = names.SHARDS_MAX
PLAN_VERSION = 2  # 2: one delta file per shard, computed in its own session


def validate_shards(shards: int) -> int:
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise SnapshotError(f"shards must be an integer from 1 to {MAX_SHARDS}, got {shards!r}")
    return shards


@dataclasses.dataclass(frozen=True)
class Plan:
    """What every shard and the commit need, written as ``plan.json`` in the work prefix."""

    storage_uri: str
    snapshot_date: dt.date
    cutoff: dt.datetime
    shards: int
    boundaries: list[str]  # K-1 balance ids, increasing
    batch_size: int
    token: str  # the publish token: files are part-0000k-<token>.parquet
    work_prefix: str
    base_date: dt.date | None
    base_checksum: str | None
    base_files: list[str]  # the base's files as planned: shards read exactly these (the delta is against them)
    view: journal.View
    counts: dict  # the step's counted/released/resolved/entering numbers
    phases_ms: dict
    replaces_checksum: str | None = None  # D's manifest checksum at the plan: the commit refuses if it changed

    @property
    def store(self) -> Store:
        return Store.at(self.storage_uri)

    def bounds(self, shard: int) -> tuple[str | None, str | None]:
        """``[low, high)`` of shard ``shard`` (None: unbounded)."""
        edges: list[str | None] = [None, *self.boundaries, None]
        return edges[shard], edges[shard + 1]

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(version=PLAN_VERSION, snapshot_date=self.snapshot_date.isoformat(),
                   cutoff=self.cutoff.isoformat(), base_date=self.base_date.isoformat() if self.base_date else None,
                   view={**self.view.as_dict()})
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> Plan:
        if raw.get("version") != PLAN_VERSION:
            raise SnapshotError(f"shard plan format {raw.get('version')!r} is not {PLAN_VERSION}: re-run the partition")
        view = dict(raw["view"], read_at=dt.datetime.fromisoformat(raw["view"]["read_at"]))
        fields = {k: v for k, v in raw.items() if k != "version"}
        return cls(**{**fields, "snapshot_date": dt.date.fromisoformat(raw["snapshot_date"]),
                      "cutoff": dt.datetime.fromisoformat(raw["cutoff"]),
                      "base_date": dt.date.fromisoformat(raw["base_date"]) if raw["base_date"] else None,
                      "view": journal.View(**view)})

    # locations in the work prefix
    def delta_path(self, shard: int) -> str:
        """Shard ``shard``'s delta: its ``balance_id`` range only, computed in its own session."""
        return f"{self.work_prefix}/delta-{shard:05d}.parquet"

    @property
    def state_path(self) -> str:
        return f"{self.work_prefix}/state.parquet"

    def shard_record_path(self, shard: int) -> str:
        return f"{self.work_prefix}/shard-{shard:05d}.json"

    def changed_path(self, shard: int) -> str:
        return f"{self.work_prefix}/shard-{shard:05d}.changed.parquet"


def work_prefix(store: Store, date: dt.date, token: str) -> str:
    """``<root>/.staging/shards-<D>-<token>``: a sharded run's plan, deltas and shard records."""
    return f"{store.staging_dir}/shards-{date.isoformat()}-{token}"


def load_plan(store: Store, prefix: str) -> Plan:
    raw = records.read_json(store.fs, f"{prefix}/plan.json")
    if raw is None:
        raise SnapshotError(f"no shard plan at {prefix}: the run's work was removed; re-run the partition")
    return Plan.from_dict(raw)


# ------------------------------------------------------------------------------------------------ 1. plan


def plan(settings: Settings, snapshot_date: dt.date, shards: int, batch_size: int = names.BATCH_SIZE_DEFAULT, *,
         run_id: str | None = None, full_refresh: bool = False, log: Callable[[str], None] | None = None,
         on_dead_run: Callable[[recovery.DeadRun], None] | None = None,
         boundaries: list[str] | None = None) -> Plan:
    """The consistent read, once, under one cut: K per-shard deltas computed in K sessions sharing that
    cut, written to the run's work prefix.

    ``boundaries`` (K-1 increasing balance ids) overrides the cut points chosen from the base.
    """
    validate_batch_size(batch_size)
    validate_shards(shards)
    log = log or logger.info
    cutoff = calendar.cutoff(snapshot_date, settings.timezone)
    store = Store.at(settings.storage_uri)
    fs = store.fs
    with holding_partition(settings, snapshot_date, run_id=run_id, log=log, on_dead_run=on_dead_run) as (
            index_conn, claim):
        base = None if full_refresh else usable_base(settings, index_conn, snapshot_date, log)
        prefix = work_prefix(store, snapshot_date, claim.publish_token)
        fs.create_dir(prefix, recursive=True)
        phases: dict[str, int] = {}
        base_files = catalog.entry_paths(store, base) if base is not None else []
        # cut points from the base's footers; at genesis, from the balances the step adds (in the read)
        cuts = _cut_points(fs, base_files, shards, boundaries) if base is not None or boundaries else None
        view, counts, cuts = _read_deltas(settings, index_conn, snapshot_date, cutoff, base, prefix, shards, cuts,
                                          phases, log)
        if len(cuts) + 1 < shards:
            log(f"partition {snapshot_date}: {len(cuts) + 1} shards instead of {shards} (too few distinct ids)")
        current = index.manifest(index_conn, snapshot_date)
        result = Plan(settings.storage_uri, snapshot_date, cutoff, len(cuts) + 1,
                      cuts, batch_size, claim.publish_token, prefix,
                      base.snapshot_date if base else None, base.checksum if base else None,
                      base_files, view, counts, phases, current.checksum if current else None)
        records.write_json(fs, f"{prefix}/plan.json", result.as_dict())
        log(f"operation=balance_snapshot snapshot_date={snapshot_date} status=planned shards={result.shards}"
            f" boundaries={len(result.boundaries)} delta_sessions={result.shards}"
            f" work_prefix={store.display(prefix)}")
        return result


def _cut_points(fs, paths: list[str], shards: int, explicit: list[str] | None) -> list[str]:
    if explicit is None:
        return ranges.choose_boundaries(fs, paths, shards)
    if len(explicit) != shards - 1 or explicit != sorted(set(explicit)):
        raise SnapshotError(f"boundaries must be {shards - 1} strictly increasing balance ids, got {explicit!r}")
    return list(explicit)


def _start_delta_sessions(cur, settings, future, snapshot_id: str, edges: list, prefix: str, store: Store,
                          started: list[DeltaSession]) -> None:
    """One delta session per shard on the connections ``future`` opens (or new ones), each joining the
    exported snapshot ``snapshot_id`` and starting its range's delta; appended to ``started`` (the caller
    closes them), a connection no session took is closed here."""
    connections = future.result() if future is not None else _open_sessions(settings, len(edges) - 1)
    for k, conn in enumerate(connections):
        try:
            started.append(DeltaSession(conn, f"{prefix}/delta-{k:05d}.parquet", store))
        except BaseException:
            for unused in connections[k:]:
                unused.close()
            raise
    for shard, session in enumerate(started):  # each joins the cut, gets its legs, starts its delta
        session.start(cur, snapshot_id, edges[shard], edges[shard + 1])


def _read_deltas(settings, index_conn, snapshot_date, cutoff, base, prefix: str, shards: int,
                 cuts: list[str] | None, phases: dict, log) -> tuple[journal.View, dict, list[str]]:
    """One REPEATABLE READ view stages the step; each shard's delta is computed in a session of its own
    that imports the view's exported snapshot (one cut), all at once; the view stays open until they end.

    The staging session ships each shard session the legs of its ``balance_id`` range (temp tables are
    per session); a shard session sums them and probes the attributes of its range's balances only.
    One shard: the staging session computes the delta itself. Returns the view, the step's counts and
    the cut points (chosen here at genesis: quantiles of the balances the step adds)."""
    store = Store.at(settings.storage_uri)
    fs = store.fs
    connecting = _connect_sessions(settings, len(cuts) + 1 if cuts else 0)  # meanwhile: the staging
    ledger = db.connect_arrow(db.ledger_url(settings))
    cur = ledger.cursor()
    delta_sessions: list[DeltaSession] = []
    try:
        mark = time.monotonic()
        view = journal.open_view(cur)
        origin = origin_of(index_conn, base)
        journal.stage_step(cur, cutoff, origin)
        if cuts is None:
            cuts = sessions.balance_quantiles(cur, shards)
        phases["journal_ms"] = int((time.monotonic() - mark) * 1000)
        mark = time.monotonic()
        edges: list[str | None] = [None, *cuts, None]
        if len(edges) > 2:
            snapshot_id = sessions.export_snapshot(cur)
            future, connecting = connecting, None  # from here on, the connections are the sessions' to close
            _start_delta_sessions(cur, settings, future, snapshot_id, edges, prefix, store, delta_sessions)
        step = journal.finish_step(cur, view, cutoff, origin)  # the next state, while the shards' deltas run
        if delta_sessions:
            for session in delta_sessions:
                session.wait()
        else:
            _write_delta(fs, f"{prefix}/delta-00000.parquet", journal.delta_reader(cur))
        cur.execute("COMMIT")
        with fs.open_output_stream(f"{prefix}/state.parquet") as sink:
            pq.write_table(step.state, sink)
        phases["delta_ms"] = int((time.monotonic() - mark) * 1000)
        log(f"operation=balance_snapshot snapshot_date={snapshot_date}"
            f" mode={'incremental' if base is not None else 'genesis'}"
            f" base={base.snapshot_date if base else None}"
            f" watermark_transaction_id={step.view.max_transaction_id} journal_rows={step.counted_rows}"
            f" entering_balances={step.entering_balances} delta_sessions={len(edges) - 1}"
            f" journal_ms={phases['journal_ms']} delta_ms={phases['delta_ms']} status=planned_delta")
        counts = {"counted_rows": step.counted_rows, "released_rows": step.released_rows,
                  "resolved_gaps": step.resolved_gaps, "entering_balances": step.entering_balances}
        return step.view, counts, cuts
    except BaseException:
        asof.rollback_quietly(cur)
        raise
    finally:
        for session in delta_sessions:
            session.close()
        if connecting is not None:  # opened for nothing (the plan failed first); a failure to open is not news
            with contextlib.suppress(Exception):
                for conn in connecting.result():
                    conn.close()
        cur.close()
        ledger.close()


def _open_sessions(settings: Settings, count: int) -> list:
    connections: list = []
    try:
        for _ in range(count):
            connections.append(db.connect_arrow(db.ledger_url(settings)))
    except BaseException:
        for conn in connections:
            conn.close()
        raise
    return connections


def _connect_sessions(settings: Settings, count: int) -> concurrent.futures.Future | None:
    """The shard sessions' connections, opened in the background (None: one shard, or not known yet)."""
    if count <= 1:
        return None
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="delta-sessions")
    try:
        return pool.submit(_open_sessions, settings, count)
    finally:
        pool.shutdown(wait=False)  # returns at once; the thread ends when the connections are open


def _write_delta(fs, path: str, reader) -> None:
    """The delta as one Parquet file of whole row groups (the stream comes in ~1 MB batches, each of which
    would otherwise become a row group of its own)."""
    with fs.open_output_stream(path) as sink, pq.ParquetWriter(sink, reader.schema, compression="zstd") as writer:
        writer.write_table(reader.read_all(), row_group_size=parquet.ROW_GROUP_ROWS)


class DeltaSession:
    """One shard's delta: a ledger session on the exported snapshot, its query run in a thread (the database
    does the work) and streamed to ``path``."""

    def __init__(self, conn, path: str, store: Store):
        self.conn, self.path, self.store = conn, path, store
        self.cur = conn.cursor()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self, staging_cur, snapshot_id: str, low: str | None, high: str | None) -> None:
        """Join the cut (while the staging session is open), take the legs of ``[low, high)`` (held in
        memory: the day's legs of one range, not the ledger's), and start the delta in a thread."""
        sessions.join_view(self.cur, snapshot_id)
        legs = sessions.legs_reader(staging_cur, low, high).read_all()
        self.thread = threading.Thread(target=self._run, args=(legs,), name=f"delta {self.path}",
                                       daemon=True)
        self.thread.start()

    def _run(self, legs: pa.Table) -> None:
        try:
            sessions.load_legs(self.cur, legs.to_reader())
            del legs
            _write_delta(self.store.fs, self.path, sessions.shard_delta_reader(self.cur))
            self.cur.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001 - handed to the planning thread by wait()
            self.error = exc

    def wait(self) -> None:
        if self.thread is not None:
            self.thread.join()
        if self.error is not None:
            raise SnapshotError(f"a shard's delta session failed: {self.error}") from self.error

    def close(self) -> None:
        if self.thread is not None and self.thread.is_alive():  # the plan failed meanwhile: stop the query
            with contextlib.suppress(Exception):
                self.cur.adbc_cancel()
            self.thread.join()
        asof.rollback_quietly(self.cur)
        self.cur.close()
        self.conn.close()
