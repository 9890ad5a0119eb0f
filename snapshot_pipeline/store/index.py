"""The Postgres index of snapshots: versioned migrations, manifest, COPY loads, lookups.

Lives in its own schema (``snapshot_index``) of ``SNAPSHOT_DATABASE_URL``. The
manifest row of a partition is its commit point: per-balance rows and the
manifest row are written in one transaction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

import psycopg
from psycopg import sql

from snapshot_pipeline import calendar, db
from snapshot_pipeline.store.spool import SPOOL_SCHEMA

SCHEMA = "snapshot_index"
_LOCK_NAMESPACE = 0x534E4150  # "SNAP"
_COMMIT_LOCK = -1
_MIGRATION_LOCK = -2


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped in ``store/migrations``, in order."""
    found = []
    for entry in resources.files("snapshot_pipeline.store").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply pending migrations (idempotent, serialized by an advisory lock). Returns the names applied."""
    applied_now: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_NAMESPACE, _MIGRATION_LOCK))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS snapshot_index.schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'))"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM snapshot_index.schema_migrations")}
        for version, name, text in migrations():
            if version in done:
                continue
            conn.execute(text)
            conn.execute(
                "INSERT INTO snapshot_index.schema_migrations (version, name) VALUES (%s, %s)", (version, name)
            )
            applied_now.append(name)
    return applied_now


class IndexOutdated(RuntimeError):
    """The index schema is older than this code: a writer (any snapshot run, ``snapshot-pipeline migrate``)
    must migrate it first."""


def ready(conn: psycopg.Connection) -> bool:
    """For read paths (checks, sensors, queries), which never migrate: True when the index is at this code's
    version, False when it was never created (nothing published yet); :class:`IndexOutdated` when older."""
    if db.scalar(conn, "SELECT to_regclass('snapshot_index.schema_migrations')") is None:
        return False
    applied = {row[0] for row in conn.execute("SELECT version FROM snapshot_index.schema_migrations")}
    pending = [name for version, name, _ in migrations() if version not in applied]
    if pending:
        raise IndexOutdated(f"the snapshot index needs migrations {', '.join(pending)}: run `snapshot-pipeline"
                            " migrate` (any snapshot run also applies them)")
    return True


def lock_partition(conn: psycopg.Connection, date: dt.date) -> None:
    """Session-level lock serializing materializations of one partition (blocks until free)."""
    conn.execute("SELECT pg_advisory_lock(%s, %s)", (_LOCK_NAMESPACE, date.toordinal()))


def try_lock_partition(conn: psycopg.Connection, date: dt.date) -> bool:
    """Non-blocking :func:`lock_partition`: True when the lock was taken (release with :func:`unlock_partition`)."""
    return bool(db.scalar(conn, "SELECT pg_try_advisory_lock(%s, %s)", (_LOCK_NAMESPACE, date.toordinal())))


def unlock_partition(conn: psycopg.Connection, date: dt.date) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_LOCK_NAMESPACE, date.toordinal()))


def lock_commits(conn: psycopg.Connection) -> None:
    """Transaction-level lock serializing the commit phase of all partitions."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_NAMESPACE, _COMMIT_LOCK))


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    """One published partition, as recorded in ``snapshot_index.partitions``."""

    snapshot_date: dt.date
    cutoff_at: dt.datetime
    timezone: str
    max_transaction_id: int
    transaction_count: int
    max_balance_id: int
    pg_snapshot: str
    read_at: dt.datetime
    row_count: int
    changed_count: int
    index_rows: int
    files: list
    bytes: int
    checksum: str
    mode: str
    base_date: dt.date | None
    batch_size: int
    duration_ms: int
    dagster_run_id: str | None
    materialized_at: dt.datetime | None = None
    roll_version: int | None = None
    reread_transaction_id: int | None = None
    reread_balance_id: int | None = None
    generation: int = 0  # the publish of this partition the row describes (partition_versions)
    delta_version: int | None = None  # the Delta table version carrying it (None: not recorded yet)
    reason: str | None = None  # schedule | repair | backfill | manual | sensor | retention


_FIELDS = [f.name for f in dataclasses.fields(ManifestEntry)]


def _entry(row) -> ManifestEntry:
    return ManifestEntry(**dict(zip(_FIELDS, row, strict=True)))


def _select(where: str, order: str = "") -> sql.Composed:
    return sql.SQL("SELECT {} FROM snapshot_index.partitions {} {}").format(
        sql.SQL(", ").join(map(sql.Identifier, _FIELDS)), sql.SQL(where), sql.SQL(order)
    )


def manifest(conn: psycopg.Connection, date: dt.date) -> ManifestEntry | None:
    row = conn.execute(_select("WHERE snapshot_date = %s"), (date,)).fetchone()
    return _entry(row) if row else None


def published_dates(conn: psycopg.Connection) -> set[dt.date]:
    """Every partition with a manifest row (empty before the index exists)."""
    if not ready(conn):
        return set()
    return {row[0] for row in conn.execute("SELECT snapshot_date FROM snapshot_index.partitions")}


def delete_manifests(conn: psycopg.Connection, dates: list[dt.date]) -> int:
    """Within the caller's transaction: drop the manifest rows of ``dates``; returns how many."""
    conn.execute("DELETE FROM snapshot_index.roll_state WHERE snapshot_date = ANY(%s)", (dates,))
    return conn.execute("DELETE FROM snapshot_index.partitions WHERE snapshot_date = ANY(%s)", (dates,)).rowcount


def nearest_before(conn: psycopg.Connection, date: dt.date) -> ManifestEntry | None:
    row = conn.execute(_select("WHERE snapshot_date < %s", "ORDER BY snapshot_date DESC LIMIT 1"), (date,)).fetchone()
    return _entry(row) if row else None


def nearest_after(conn: psycopg.Connection, date: dt.date) -> ManifestEntry | None:
    row = conn.execute(_select("WHERE snapshot_date > %s", "ORDER BY snapshot_date LIMIT 1"), (date,)).fetchone()
    return _entry(row) if row else None


def all_partitions(conn: psycopg.Connection) -> list[ManifestEntry]:
    return [_entry(r) for r in conn.execute(_select("", "ORDER BY snapshot_date"))]


_ANCHOR_SQL = """
SELECT p.snapshot_date, p.cutoff_at, p.max_transaction_id,
       r.snapshot_date, r.credit_balance, r.debit_balance, r.inflight_credit_balance, r.inflight_debit_balance
FROM (SELECT snapshot_date, cutoff_at, max_transaction_id FROM snapshot_index.partitions
      WHERE cutoff_at <= %(t)s::timestamp ORDER BY cutoff_at DESC LIMIT 1) p
LEFT JOIN LATERAL (
    SELECT s.snapshot_date, s.credit_balance, s.debit_balance, s.inflight_credit_balance, s.inflight_debit_balance
    FROM snapshot_index.balance_snapshots s
    WHERE s.balance_id = %(b)s AND s.snapshot_date <= p.snapshot_date
    ORDER BY s.snapshot_date DESC LIMIT 1
) r ON true
"""



def anchor_row(conn: psycopg.Connection, balance_id: str, at: dt.datetime):
    """The latest partition with cutoff <= ``at`` (naive UTC) and ``balance_id``'s newest index row at or before
    it, in one statement: (date, cutoff, watermark, row date or None, credit, debit, inflight credit, inflight
    debit), or None when no partition has a cutoff at or before ``at``."""
    return conn.execute(_ANCHOR_SQL, {"t": at, "b": balance_id}).fetchone()


def roll_forward_dates_at_or_before(conn: psycopg.Connection, at: dt.datetime, roll_version: int) -> list[dt.date]:
    """Partitions of roll-forward format ``roll_version`` with cutoff <= ``at`` (naive UTC), newest first."""
    rows = conn.execute(
        "SELECT snapshot_date FROM snapshot_index.partitions WHERE cutoff_at <= %s AND roll_version = %s"
        " ORDER BY cutoff_at DESC",
        (at, roll_version),
    ).fetchall()
    return [row[0] for row in rows]


def month_partition_name(date: dt.date) -> str:
    """Name of the monthly partition of ``balance_snapshots`` holding ``date``."""
    return f"balance_snapshots_{date:%Y_%m}"


class IndexBusy(RuntimeError):
    """A month's partition of ``balance_snapshots`` could not be created: writers of index rows held the table."""


# Creating or dropping a month's partition takes ACCESS EXCLUSIVE on balance_snapshots: it waits for every open
# transaction writing index rows (a run streaming its rows holds one through its merge) and, while it waits,
# every reader queues behind it. So such a statement waits at most BRIEF_LOCK_TIMEOUT at a time.
BRIEF_LOCK_TIMEOUT = "200ms"
BRIEF_RETRY_SECONDS = 0.2
HOLDERS = "runs writing index rows, a migration, a long reader"  # what keeps a month's partition from being created
MONTH_WAIT_SECONDS = 3600.0  # how long a run tries to create its month's partition before it gives up


@contextlib.contextmanager
def brief_locks(conn: psycopg.Connection) -> Iterator[None]:
    """A transaction (a savepoint inside one) whose lock waits last at most :data:`BRIEF_LOCK_TIMEOUT` each: a
    wait longer than that raises ``LockNotAvailable`` out of it, rolled back."""
    previous = db.scalar(conn, "SELECT current_setting('lock_timeout')")
    with conn.transaction():
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (BRIEF_LOCK_TIMEOUT,))
        yield
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (previous,))


def try_briefly(conn: psycopg.Connection, statement: sql.Composed) -> bool:
    """Run ``statement`` (it needs ACCESS EXCLUSIVE on ``balance_snapshots``) in :func:`brief_locks`; whether it
    ran (False: a lock wait timed out). Other errors are the caller's."""
    try:
        with brief_locks(conn):
            conn.execute(statement)
    except psycopg.errors.LockNotAvailable:
        return False
    return True


def drop_empty_months(conn: psycopg.Connection) -> list[str]:
    """Outside any transaction: drop the monthly partitions of ``balance_snapshots`` that hold no row and no
    published day and whose days no run holds (a run creates its month's partition before it writes into it,
    holding its day's lock from before until after its commit), each under its own lock taken in
    :func:`brief_locks`; a month in use is left for a later call. Returns the names dropped."""
    names = [row[0] for row in conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace"
        " WHERE n.nspname = %s AND p.relname = 'balance_snapshots' ORDER BY 1", (SCHEMA,))]
    dropped = []
    for name in names:
        try:
            start = dt.datetime.strptime(name.removeprefix("balance_snapshots_"), "%Y_%m").date()
        except ValueError:  # not one of ours (a partition an operator added)
            continue
        try:
            if not _month_in_use(conn, start, name) and _drop_unclaimed_month(conn, start, name):
                dropped.append(name)
        except psycopg.errors.UndefinedTable:  # dropped meanwhile by another sweep
            continue
    return dropped


def _drop_unclaimed_month(conn: psycopg.Connection, start: dt.date, name: str) -> bool:
    """Drop month ``name`` if every one of its days' locks is free (held meanwhile) and, under the month's lock,
    it is still unused; whether it was dropped."""
    held: list[dt.date] = []
    try:
        for day in calendar.days(start, calendar.next_month(start) - dt.timedelta(days=1)):
            if not try_lock_partition(conn, day):
                return False  # a run of that day is under way: it may be about to write into the month
            held.append(day)
        table = sql.Identifier(SCHEMA, name)
        with brief_locks(conn):
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table))
            if _month_in_use(conn, start, name):  # a run published into it meanwhile
                return False
            conn.execute(sql.SQL("DROP TABLE {}").format(table))
        return True
    except psycopg.errors.LockNotAvailable:
        return False
    finally:
        for day in held:
            unlock_partition(conn, day)


def _month_in_use(conn: psycopg.Connection, start: dt.date, name: str) -> bool:
    """Whether the month's partition ``name`` holds a row, or a published day falls in its month."""
    table = sql.Identifier(SCHEMA, name)
    published = db.scalar(conn, "SELECT EXISTS (SELECT 1 FROM snapshot_index.partitions"
                                " WHERE snapshot_date >= %s AND snapshot_date < %s)",
                          (start, calendar.next_month(start)))
    return bool(published or db.scalar(conn, sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(table)))


def partition_exists(conn: psycopg.Connection, name: str) -> bool:
    """Whether the monthly partition ``name`` of ``balance_snapshots`` (:func:`month_partition_name`) exists."""
    return bool(db.scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.{name}",)))


def ensure_month_partition(conn: psycopg.Connection, date: dt.date,
                           log: Callable[[str], None] | None = None) -> str:
    """Create the monthly partition of ``balance_snapshots`` holding ``date`` if missing.

    Outside a transaction it tries every :data:`BRIEF_RETRY_SECONDS` (readers pass in between) until the
    writers holding the table are done, for up to :data:`MONTH_WAIT_SECONDS`. Inside one (a commit, holding the
    commit lock) it tries once and raises :class:`IndexBusy`: a commit never waits for a writer that may be
    waiting for the commit lock. Runs create their month's partition before their commit, so that case is
    only a month dropped by retention meanwhile. ``log`` hears once that a wait began."""
    start = date.replace(day=1)
    name = month_partition_name(start)
    if partition_exists(conn, name):
        return name
    statement = sql.SQL(
        "CREATE TABLE IF NOT EXISTS {schema}.{name} PARTITION OF {schema}.balance_snapshots"
        " FOR VALUES FROM ({start}) TO ({end})"
    ).format(schema=sql.Identifier(SCHEMA), name=sql.Identifier(name), start=sql.Literal(start),
             end=sql.Literal(calendar.next_month(start)))
    outside = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    deadline = time.monotonic() + MONTH_WAIT_SECONDS
    told = False
    while True:
        try:
            if try_briefly(conn, statement):
                return name
        except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
            # another run created it between our check and our lock (IF NOT EXISTS looked before waiting)
            if partition_exists(conn, name):
                return name
            raise
        if not outside or time.monotonic() > deadline:
            raise IndexBusy(f"the index partition {SCHEMA}.{name} could not be created: other sessions ({HOLDERS})"
                            f" held {SCHEMA}.balance_snapshots; run again")
        if log is not None and not told:
            told = True
            log(f"waiting to create the index partition {SCHEMA}.{name}: other sessions ({HOLDERS}) hold"
                f" {SCHEMA}.balance_snapshots (retrying every {BRIEF_RETRY_SECONDS:g} s, up to"
                f" {MONTH_WAIT_SECONDS / 60:g} min)")
        time.sleep(BRIEF_RETRY_SECONDS)


def _copy_spool(conn: psycopg.Connection, table: sql.Composable, spool_path: Path) -> int:
    """COPY a spooled index file (binary COPY data, :mod:`snapshot_pipeline.store.spool`) into ``table``, its
    columns named in the spool's own order; returns the rows loaded."""
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT binary)").format(
        table, sql.SQL(", ").join(map(sql.Identifier, SPOOL_SCHEMA.names)))
    with conn.cursor() as cur:
        with cur.copy(copy_sql) as copy, open(spool_path, "rb") as source:
            while chunk := source.read(4 << 20):
                copy.write(chunk)
        return cur.rowcount


def replace_rows(conn: psycopg.Connection, date: dt.date, spool_path: Path | None) -> int:
    """Within the caller's transaction: drop the index rows of ``date`` and COPY the spooled rows in."""
    ensure_month_partition(conn, date)
    conn.execute("DELETE FROM snapshot_index.balance_snapshots WHERE snapshot_date = %s", (date,))
    if spool_path is None:
        return 0
    return _copy_spool(conn, sql.SQL("snapshot_index.balance_snapshots"), spool_path)


def count_rows(conn: psycopg.Connection, date: dt.date) -> int:
    """Index rows of partition ``date`` (a primary-key range count)."""
    return db.scalar(conn, "SELECT count(*) FROM snapshot_index.balance_snapshots WHERE snapshot_date = %s",
                        (date,))


_EXPECTED_MINUS_ACTUAL = """
SELECT balance_id, balance, credit_balance, debit_balance, inflight_balance, inflight_credit_balance,
       inflight_debit_balance, currency FROM expected_index_rows
EXCEPT ALL
SELECT balance_id, balance, credit_balance, debit_balance, inflight_balance, inflight_credit_balance,
       inflight_debit_balance, currency FROM snapshot_index.balance_snapshots WHERE snapshot_date = %(d)s
"""
_ACTUAL_MINUS_EXPECTED = """
SELECT balance_id, balance, credit_balance, debit_balance, inflight_balance, inflight_credit_balance,
       inflight_debit_balance, currency FROM snapshot_index.balance_snapshots WHERE snapshot_date = %(d)s
EXCEPT ALL
SELECT balance_id, balance, credit_balance, debit_balance, inflight_balance, inflight_credit_balance,
       inflight_debit_balance, currency FROM expected_index_rows
"""


def compare_rows(conn: psycopg.Connection, date: dt.date, spool_path: Path | None, examples: int
                 ) -> tuple[int, int, list[str], int]:
    """Within the caller's transaction: the index rows of ``date`` against a recomputed spool.

    Returns (missing, unexpected, up to ``examples`` differing balance ids, index rows of ``date``).
    """
    conn.execute("CREATE TEMP TABLE expected_index_rows (LIKE snapshot_index.balance_snapshots) ON COMMIT DROP")
    if spool_path is not None:
        _copy_spool(conn, sql.Identifier("expected_index_rows"), spool_path)
    missing = db.scalar(conn, f"SELECT count(*) FROM ({_EXPECTED_MINUS_ACTUAL}) m", {"d": date})
    extra = db.scalar(conn, f"SELECT count(*) FROM ({_ACTUAL_MINUS_EXPECTED}) e", {"d": date})
    ids = [row[0] for row in conn.execute(
        f"SELECT DISTINCT balance_id FROM (({_EXPECTED_MINUS_ACTUAL}) UNION ALL ({_ACTUAL_MINUS_EXPECTED})) x"
        " ORDER BY 1 LIMIT %(n)s", {"d": date, "n": examples})]
    return int(missing), int(extra), ids, count_rows(conn, date)


def upsert_manifest(conn: psycopg.Connection, entry: ManifestEntry) -> None:
    values = dataclasses.asdict(entry)
    values.pop("materialized_at")
    values["files"] = json.dumps(values["files"])
    columns = list(values)
    conn.execute(
        sql.SQL(
            "INSERT INTO snapshot_index.partitions ({cols}) VALUES ({vals})"
            " ON CONFLICT (snapshot_date) DO UPDATE SET ({cols}) = ({excluded}),"
            " materialized_at = (now() AT TIME ZONE 'UTC')"
        ).format(
            cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
            vals=sql.SQL(", ").join(sql.Placeholder(c) for c in columns),
            excluded=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in columns),
        ),
        values,
    )


def set_index_rows(conn: psycopg.Connection, date: dt.date, index_rows: int) -> None:
    conn.execute(
        "UPDATE snapshot_index.partitions SET index_rows = %s WHERE snapshot_date = %s", (index_rows, date)
    )
