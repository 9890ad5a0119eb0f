"""A deterministic generator of realistic, adversarial Blnk ledgers, loaded with COPY.

Same ``seed`` and sizes give the same ledger. Every case the snapshot semantics
care about is produced: APPLIED, QUEUED, REJECTED, SCHEDULED and INFLIGHT rows;
inflight holds committed in full, in parts, voided, or partly committed then
voided; backdated and future-dated ``effective_date``; effective times exactly
at midnight (UTC and America/New_York); amounts above 2^63; one hot balance with
thousands of legs; balances created mid-day during the period.

Live ``blnk.balances`` rows are then set the way Blnk keeps them: every APPLIED
leg counts as soon as it is recorded, whatever its effective date, and inflight
columns hold what is still open.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
from importlib import resources
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.csv as pcsv
from tqdm import tqdm

from snapshot_pipeline import db

CURRENCIES = ("USD", "EUR", "NGN", "GBP")
CURRENCY_WEIGHTS = (0.5, 0.2, 0.2, 0.1)
LEDGERS = ("ldg_customers", "ldg_merchants", "ldg_treasury")
CHUNK_ROWS = 200_000
SECOND = 1_000_000  # microseconds
DAY = 86_400 * SECOND
HUGE = 2**63
MIN_BALANCES = 2 * len(CURRENCIES) + 1
SECONDARY_INDEXES = tuple(  # every secondary index of schema.sql, dropped during the bulk load
    line.split(" IF NOT EXISTS ", 1)[1].split()[0]
    for line in resources.files("snapshot_pipeline.ledger").joinpath("schema.sql").read_text().splitlines()
    if line.startswith(("CREATE INDEX", "CREATE UNIQUE INDEX"))
)


@dataclasses.dataclass(frozen=True)
class LedgerSpec:
    balances: int
    transactions: int
    days: int
    seed: int
    start_date: dt.date

    @property
    def start(self) -> dt.datetime:
        return dt.datetime.combine(self.start_date, dt.time(0))

    @property
    def end(self) -> dt.datetime:
        return self.start + dt.timedelta(days=self.days)


class LedgerNotEmpty(RuntimeError):
    """seed-ledger refuses to add to a ledger that already has transactions (unless asked to replace)."""


def schema_sql() -> str:
    return resources.files("snapshot_pipeline.ledger").joinpath("schema.sql").read_text()


def create_schema(conn: psycopg.Connection) -> None:
    """Create Blnk's tables (demo and tests only; never run on a user's ledger)."""
    with conn.transaction():
        conn.execute(schema_sql())


def ledger_counts(conn: psycopg.Connection) -> tuple[int, int] | None:
    """(balances, transactions) of the ledger, or None when the Blnk schema does not exist."""
    exists = db.scalar(conn, "SELECT to_regclass('blnk.transactions') IS NOT NULL")
    if not exists:
        return None
    return conn.execute(
        "SELECT (SELECT count(*) FROM blnk.balances), (SELECT count(*) FROM blnk.transactions)"
    ).fetchone()


def _epoch_us(value: dt.datetime) -> int:
    return int((value - dt.datetime(1970, 1, 1)).total_seconds()) * SECOND


def _hex_ids(rng: np.random.Generator, prefix: str, n: int) -> list[str]:
    words = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64)
    return [f"{prefix}{a:016x}{b:016x}" for a, b in words.tolist()]


def _timestamps(us: np.ndarray) -> pa.Array:
    return pa.array(us.astype("datetime64[us]"), pa.timestamp("us"))


def _copy(conn: psycopg.Connection, table_name: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pcsv.write_csv(table, buffer, pcsv.WriteOptions(include_header=True))
    columns = ", ".join(table.column_names)
    copy = f"COPY {table_name} ({columns}) FROM STDIN WITH (FORMAT csv, HEADER true)"
    with conn.cursor() as cur, cur.copy(copy) as cp:
        cp.write(buffer.getvalue())


def generate(conn: psycopg.Connection, spec: LedgerSpec, *, replace: bool = False, progress: bool = True) -> dict:
    """Create the schema if needed and load a ledger described by ``spec``. Returns counts."""
    if spec.balances < MIN_BALANCES or spec.transactions < 0 or spec.days < 1:
        raise ValueError(f"need at least {MIN_BALANCES} balances, 0 transactions and 1 day")
    create_schema(conn)
    counts = ledger_counts(conn)
    if counts and (counts[0] or counts[1]):
        if not replace:
            raise LedgerNotEmpty(
                f"the ledger already has {counts[0]} balances and {counts[1]} transactions; pass --replace to wipe it"
            )
        with conn.transaction():
            conn.execute("TRUNCATE blnk.transactions, blnk.balances, blnk.ledgers RESTART IDENTITY CASCADE")

    rng = np.random.default_rng(spec.seed)
    start_us, end_us = _epoch_us(spec.start), _epoch_us(spec.end)
    with conn.transaction():
        # Bulk load into an empty journal without its secondary indexes; they are rebuilt once at the end.
        for name in SECONDARY_INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS blnk.{name}")
        _copy(conn, "blnk.ledgers", pa.table({
            "ledger_id": list(LEDGERS),
            "name": [name.removeprefix("ldg_").title() for name in LEDGERS],
            "created_at": _timestamps(np.full(len(LEDGERS), start_us - 60 * DAY)),
        }))
        balances = _balances(conn, rng, spec, start_us, end_us)
        total = _transactions(conn, rng, spec, balances, start_us, end_us, progress)
        conn.execute(schema_sql())  # recreates the secondary indexes
        _set_live_balances(conn)
    conn.execute("ANALYZE blnk.balances")
    conn.execute("ANALYZE blnk.transactions")
    return {"balances": spec.balances, "transactions": total, "start_date": spec.start_date.isoformat(),
            "end_date": (spec.start_date + dt.timedelta(days=spec.days)).isoformat(), "seed": spec.seed}


@dataclasses.dataclass
class _Balances:
    ids: np.ndarray  # object array of str
    currency: np.ndarray  # int index into CURRENCIES
    created_us: np.ndarray
    by_currency: list[np.ndarray]
    hot: int


def _balances(conn, rng, spec: LedgerSpec, start_us: int, end_us: int) -> _Balances:
    n = spec.balances
    ids = np.array(_hex_ids(rng, "bln_", n), dtype=object)
    currency = rng.choice(len(CURRENCIES), size=n, p=CURRENCY_WEIGHTS)
    # Anchors: balances 0..3 and 5..8 are two per currency (index 4 is the hot USD balance).
    currency[: len(CURRENCIES)] = np.arange(len(CURRENCIES))
    currency[len(CURRENCIES) + 1: 2 * len(CURRENCIES) + 1] = np.arange(len(CURRENCIES))
    during = rng.random(n) < 0.3
    created = np.where(
        during,
        start_us + (rng.random(n) * (end_us - start_us)).astype(np.int64),  # mid-day, during the period
        start_us - (rng.random(n) * 30 * DAY).astype(np.int64) - SECOND,
    )
    created[: 2 * len(CURRENCIES) + 1] = start_us - 40 * DAY  # anchors and the hot balance are old
    ledger = rng.integers(0, len(LEDGERS), size=n)
    # np.where(condition, strings, None) is an object array with None where the condition is false;
    # numpy's type stubs do not list that form, hence the ignores.
    identity = np.where(rng.random(n) < 0.7, np.char.add("idt_", (rng.integers(0, n, size=n)).astype(str)),  # type: ignore[call-overload]
                        None)
    # Blnk keeps indicators unique per currency (its unique_indicator_currency constraint)
    indicator = np.where(rng.random(n) < 0.2, np.char.add("@acct_", np.arange(n).astype(str)), None)  # type: ignore[call-overload]
    hot = len(CURRENCIES)  # the hot balance: USD, old, takes a large share of USD legs
    currency[hot] = 0
    by_creation = np.argsort(created, kind="stable")  # ids follow creation time, as in a live ledger
    table = pa.table({
        "balance_id": pa.array(ids.tolist(), pa.string()),
        "currency": pa.array([CURRENCIES[i] for i in currency.tolist()], pa.string()),
        "ledger_id": pa.array([LEDGERS[i] for i in ledger.tolist()], pa.string()),
        "identity_id": pa.array(identity.tolist(), pa.string()),
        "indicator": pa.array(indicator.tolist(), pa.string()),
        "created_at": _timestamps(created),
        "meta_data": pa.array(["{}"] * n, pa.string()),
    }).take(pa.array(by_creation))
    _copy(conn, "blnk.balances", table)
    by_currency = [np.flatnonzero(currency == i) for i in range(len(CURRENCIES))]
    return _Balances(ids, currency, created, by_currency, hot)


def _pick_pairs(rng, bal: _Balances, currency: np.ndarray, hot_share: float, created_before: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Source and destination of each row among the balances of its currency created before ``created_before``."""
    n = currency.size
    src = np.empty(n, dtype=np.int64)
    dst = np.empty(n, dtype=np.int64)
    for c, members in enumerate(bal.by_currency):
        members = members[bal.created_us[members] < created_before]  # the currency's anchors always qualify
        rows = np.flatnonzero(currency == c)
        if rows.size == 0:
            continue
        src[rows] = members[rng.integers(0, members.size, size=rows.size)]
        dst[rows] = members[rng.integers(0, members.size, size=rows.size)]
    usd_rows = np.flatnonzero((currency == 0) & (rng.random(n) < hot_share))
    flip = rng.random(usd_rows.size) < 0.5
    src[usd_rows[flip]] = bal.hot
    dst[usd_rows[~flip]] = bal.hot
    same = np.flatnonzero(src == dst)
    if same.size:  # never a self-transfer: use one of the currency's two anchor balances instead
        first, second = currency[same], currency[same] + len(CURRENCIES) + 1
        dst[same] = np.where(src[same] == first, second, first)
    return src, dst


def _effective_dates(rng, created: np.ndarray) -> np.ndarray:
    """NULL (-1) for most rows; backdated, future-dated (some 20-60 days ahead) and exact-midnight dates for the
    rest."""
    n = created.size
    kind = rng.random(n)
    eff = np.full(n, -1, dtype=np.int64)
    back = kind < 0.06
    eff[back] = created[back] - (rng.random(back.sum()) * 10 * DAY).astype(np.int64)
    future = (kind >= 0.06) & (kind < 0.10)
    eff[future] = created[future] + (rng.random(future.sum()) * 5 * DAY).astype(np.int64)
    utc_midnight = (kind >= 0.10) & (kind < 0.13)
    eff[utc_midnight] = (created[utc_midnight] // DAY) * DAY
    ny_midnight = (kind >= 0.13) & (kind < 0.16)
    eff[ny_midnight] = [_ny_midnight(v) for v in created[ny_midnight].tolist()]
    far = (kind >= 0.16) & (kind < 0.17)  # pending across many partitions
    eff[far] = created[far] + ((20 + rng.random(far.sum()) * 40) * DAY).astype(np.int64)
    return eff


_NY = ZoneInfo("America/New_York")


def _ny_midnight(us: int) -> int:
    """Start of the America/New_York day holding ``us`` (naive UTC microseconds), as naive UTC microseconds."""
    local = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)).astimezone(_NY)
    midnight = dt.datetime.combine(local.date(), dt.time(0), tzinfo=_NY)
    return _epoch_us(midnight.astimezone(dt.UTC).replace(tzinfo=None))


def _amounts(rng, n: int) -> np.ndarray:
    """Integer minor units as Python ints (object array): log-uniform, with some above 2^63."""
    small = np.floor(10 ** (rng.random(n) * 7)).astype(np.int64) + 1
    out = small.astype(object)
    huge = rng.random(n) < 0.015
    out[huge] = [HUGE + int(x) for x in rng.integers(0, 10**18, size=int(huge.sum())).tolist()]
    return out


# Longer than 60 lines: one vectorized pass that draws every column of a chunk from the same random
# stream in a fixed order (the order is what makes the ledger deterministic for a seed).
def _transactions(conn, rng, spec: LedgerSpec, bal: _Balances, start_us: int, end_us: int, progress: bool) -> int:
    statuses = np.array(["APPLIED", "QUEUED", "REJECTED", "SCHEDULED", "INFLIGHT"], dtype=object)
    status_p = (0.80, 0.04, 0.03, 0.01, 0.12)
    hot_share = min(0.25, max(0.02, 3000 / max(spec.transactions, 1)))
    written = 0
    bar = tqdm(total=spec.transactions, unit="txn", desc="seeding transactions",
               disable=None if progress else True)  # None: drawn on a terminal only (no \r lines in logs)
    chunks = max(1, -(-spec.transactions // CHUNK_ROWS))
    for k, offset in enumerate(range(0, spec.transactions, CHUNK_ROWS)):
        # Chunk k records the rows of its own time window, so ids follow recording time across the journal.
        window_start = start_us + (end_us - start_us) * k // chunks
        window_end = start_us + (end_us - start_us) * (k + 1) // chunks
        n = min(CHUNK_ROWS, spec.transactions - offset)
        currency = rng.choice(len(CURRENCIES), size=n, p=CURRENCY_WEIGHTS)
        src, dst = _pick_pairs(rng, bal, currency, hot_share, window_end)
        lo = np.maximum(np.maximum(bal.created_us[src], bal.created_us[dst]), window_start)
        created = lo + (rng.random(n) * np.maximum(window_end - lo, SECOND)).astype(np.int64)
        status = statuses[rng.choice(len(statuses), size=n, p=status_p)]
        amount = _amounts(rng, n)
        eff = _effective_dates(rng, created)
        tx_ids = np.array(_hex_ids(rng, "txn_", n), dtype=object)
        parent = np.full(n, None, dtype=object)

        # Children of inflight holds: full commit, partial commits, void, partial commit + void remainder.
        inflight = np.flatnonzero(status == "INFLIGHT")
        fate = rng.random(inflight.size)
        child_parent, child_amount, child_status = [], [], []
        for row, f in zip(inflight.tolist(), fate.tolist(), strict=True):
            total = amount[row]
            children: list[tuple[int, str]] = []  # (amount, status) of each child of this hold
            if f < 0.30:
                children = [(total, "APPLIED")]
            elif f < 0.45:
                part = max(total // 3, 1)
                children = [(part, "APPLIED"), (part, "APPLIED")]
            elif f < 0.60:
                children = [(total, "VOID")]
            elif f < 0.75:
                part = max(total // 4, 1)
                children = [(part, "APPLIED"), (total - part, "VOID")]
            for child_total, child in children:
                child_parent.append(row)
                child_amount.append(child_total)
                child_status.append(child)
        cp = np.array(child_parent, dtype=np.int64)
        m = cp.size
        c_created = np.minimum(created[cp] + (rng.random(m) * 3 * DAY).astype(np.int64), window_end - SECOND)
        c_created = np.maximum(c_created, created[cp])
        c_eff = np.where(rng.random(m) < 0.1, _effective_dates(rng, c_created), -1)

        all_ids = np.concatenate([tx_ids, np.array(_hex_ids(rng, "txn_", m), dtype=object)])
        all_parent = np.concatenate([parent, tx_ids[cp]]) if m else parent
        all_src = np.concatenate([src, src[cp]])
        all_dst = np.concatenate([dst, dst[cp]])
        all_amount = np.concatenate([amount, np.array(child_amount, dtype=object)]) if m else amount
        all_status = np.concatenate([status, np.array(child_status, dtype=object)]) if m else status
        all_created = np.concatenate([created, c_created])
        all_eff = np.concatenate([eff, c_eff])
        all_currency = np.concatenate([currency, currency[cp]])
        order = np.argsort(all_created, kind="stable")  # ids follow recording time, as in a live ledger

        precise = pa.array([str(v) for v in all_amount[order].tolist()], pa.string())
        eff_sorted = all_eff[order]
        table = pa.table({
            "transaction_id": pa.array(all_ids[order].tolist(), pa.string()),
            "parent_transaction": pa.array(all_parent[order].tolist(), pa.string()),
            "source": pa.array(bal.ids[all_src[order]].tolist(), pa.string()),
            "destination": pa.array(bal.ids[all_dst[order]].tolist(), pa.string()),
            "reference": pa.array(["ref_" + t[4:16] for t in all_ids[order].tolist()], pa.string()),
            "amount": pa.array([f"{int(v) // 100}.{int(v) % 100:02d}" for v in all_amount[order].tolist()],
                               pa.string()),
            "precise_amount": precise,
            "precision": pa.array(np.full(all_ids.size, 100, dtype=np.int64)),
            "currency": pa.array([CURRENCIES[i] for i in all_currency[order].tolist()], pa.string()),
            "status": pa.array(all_status[order].tolist(), pa.string()),
            "created_at": _timestamps(all_created[order]),
            "effective_date": pa.array(eff_sorted.astype("datetime64[us]"), pa.timestamp("us"),
                                       mask=eff_sorted == -1),
            "meta_data": pa.array(["{}"] * all_ids.size, pa.string()),
        })
        _copy(conn, "blnk.transactions", table)
        written += table.num_rows
        bar.update(n)
    bar.close()
    return written


def _set_live_balances(conn: psycopg.Connection) -> None:
    """Live rows as Blnk keeps them: all APPLIED legs whatever their effective date, open inflight holds."""
    conn.execute(
        """
        WITH legs AS (
            SELECT destination AS balance_id, precise_amount AS credit, 0 AS debit, 0 AS ic, 0 AS idb
              FROM blnk.transactions WHERE status = 'APPLIED'
            UNION ALL SELECT source, 0, precise_amount, 0, 0 FROM blnk.transactions WHERE status = 'APPLIED'
            UNION ALL SELECT destination, 0, 0, precise_amount, 0 FROM blnk.transactions WHERE status = 'INFLIGHT'
            UNION ALL SELECT source, 0, 0, 0, precise_amount FROM blnk.transactions WHERE status = 'INFLIGHT'
            UNION ALL SELECT p.destination, 0, 0, -c.precise_amount, 0
              FROM blnk.transactions c JOIN blnk.transactions p ON p.transaction_id = c.parent_transaction
              WHERE c.status IN ('APPLIED', 'VOID') AND p.status = 'INFLIGHT'
            UNION ALL SELECT p.source, 0, 0, 0, -c.precise_amount
              FROM blnk.transactions c JOIN blnk.transactions p ON p.transaction_id = c.parent_transaction
              WHERE c.status IN ('APPLIED', 'VOID') AND p.status = 'INFLIGHT'
        ), sums AS (
            SELECT balance_id, sum(credit) AS credit, sum(debit) AS debit, sum(ic) AS ic, sum(idb) AS idb,
                   count(*) AS legs
            FROM legs GROUP BY balance_id
        )
        UPDATE blnk.balances b
           SET credit_balance = s.credit, debit_balance = s.debit, balance = s.credit - s.debit,
               inflight_credit_balance = s.ic, inflight_debit_balance = s.idb, inflight_balance = s.ic - s.idb,
               version = s.legs
          FROM sums s
         WHERE s.balance_id = b.balance_id
        """
    )
