"""The reports, computed from real snapshot Parquet of the adversarial ledger, against independent SQL.

The independent side never reads our Parquet or uses our cutoff code: it sums the
whole journal (tests/oracle.py) at cutoffs written out by hand, e.g. 2026-11-01 in
America/New_York lasts 25 hours, from 04:00 UTC to 05:00 UTC the next day.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from deltalake import DeltaTable

from snapshot_pipeline import snapshot
from snapshot_pipeline.reports import common, month_end, movements, reconciliation, totals
from snapshot_pipeline.store import catalog, location, parquet
from snapshot_pipeline.store.location import Store
from tests.conftest import make_settings
from tests.helpers import insert_transaction, two_balances
from tests.oracle import AMOUNTS, expected_snapshot

NY = "America/New_York"
DAYS = ("2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02", "2026-11-30")
# Cutoffs (start of the next New York day, as UTC), written out by hand.
UTC_CUTOFF = {
    "2026-10-29": dt.datetime(2026, 10, 30, 4),
    "2026-10-30": dt.datetime(2026, 10, 31, 4),
    "2026-10-31": dt.datetime(2026, 11, 1, 4),  # EDT
    "2026-11-01": dt.datetime(2026, 11, 2, 5),  # DST ended at 02:00 local: a 25-hour day
    "2026-11-02": dt.datetime(2026, 11, 3, 5),
    "2026-11-30": dt.datetime(2026, 12, 1, 5),  # EST
}


def d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


@pytest.fixture(scope="module")
def ny(adversarial_url, make_database, tmp_path_factory):
    """Snapshots of five New York days, every day's cutoff crossing the adversarial cases."""
    storage = tmp_path_factory.mktemp("reports") / "store"
    settings = make_settings(adversarial_url, storage, NY, index_url=make_database())
    for day in DAYS:
        snapshot.take_snapshot(settings, d(day), 400)
    return settings


def report_rows(path: str) -> list[dict]:
    return pd.read_parquet(path).to_dict("records")


# ------------------------------------------------------------------------------------------ movements

LEGS_ORACLE = """
SELECT balance_id, count(*) FILTER (WHERE side = 'c'), count(*) FILTER (WHERE side = 'd'),
       COALESCE(sum(amount) FILTER (WHERE side = 'c'), 0), COALESCE(sum(amount) FILTER (WHERE side = 'd'), 0)
  FROM (SELECT destination AS balance_id, 'c' AS side, precise_amount AS amount, effective_date, created_at
          FROM blnk.transactions WHERE status = 'APPLIED'
        UNION ALL
        SELECT source, 'd', precise_amount, effective_date, created_at
          FROM blnk.transactions WHERE status = 'APPLIED') AS legs
 WHERE COALESCE(effective_date, created_at) >= %(open)s AND COALESCE(effective_date, created_at) < %(close)s
 GROUP BY balance_id
"""


def expected_movements(url: str, day: str) -> dict[str, dict]:
    previous = (d(day) - dt.timedelta(days=1)).isoformat()
    opened, closed = UTC_CUTOFF[previous], UTC_CUTOFF[day]
    opening = expected_snapshot(url, opened)
    closing = expected_snapshot(url, closed)
    with psycopg.connect(url) as conn:
        legs = {r[0]: r[1:] for r in conn.execute(LEGS_ORACLE, {"open": opened, "close": closed})}
    out = {}
    for balance_id, values in closing.items():
        credit_legs, debit_legs, credits, debits = legs.get(balance_id, (0, 0, 0, 0))
        out[balance_id] = {
            "opening_balance": opening.get(balance_id, {"balance": 0})["balance"],
            "credits": int(credits),
            "debits": int(debits),
            "closing_balance": values["balance"],
            "credit_legs": credit_legs,
            "debit_legs": debit_legs,
            "legs": credit_legs + debit_legs,
        }
    return out


@pytest.mark.parametrize("day, source", [
    ("2026-10-30", "journal"),  # 10-29 is not materialized: the opening comes from the journal
    ("2026-10-31", "balance_snapshots 2026-10-30"),
    ("2026-11-01", "balance_snapshots 2026-10-31"),  # the 25-hour day
    ("2026-11-02", "balance_snapshots 2026-11-01"),
])
def test_balance_movements_match_the_journal(ny, adversarial_url, day, source):
    result = movements.balance_movements(ny, d(day))
    assert result.metrics["opening_source"] == source
    rows = report_rows(result.path)
    expected = expected_movements(adversarial_url, day)
    assert result.rows == len(rows) == len(expected)
    got = {r["balance_id"]: {k: int(r[k]) for k in expected[r["balance_id"]]} for r in rows}
    assert got == expected
    for row in got.values():  # the identity, on every row
        assert row["opening_balance"] + row["credits"] - row["debits"] == row["closing_balance"]
    moved = [r for r in got.values() if r["legs"]]
    assert len(moved) > 100 and result.metrics["legs"] == sum(r["legs"] for r in got.values())
    assert [r["balance_id"] for r in rows] == sorted(r["balance_id"] for r in rows)


def test_balance_movements_refuse_inconsistent_snapshots_and_write_nothing(fresh_ledger, make_database, tmp_path):
    """Snapshot D taken before a late row that snapshot D-1 (taken after) counts: D is stale."""
    settings = make_settings(fresh_ledger, tmp_path / "store", index_url=make_database())
    snapshot.take_snapshot(settings, d("2026-11-02"))
    source, destination = two_balances(fresh_ledger)
    insert_transaction(fresh_ledger, source, destination, 12_345, created_at=dt.datetime(2026, 11, 20),
                       effective_date=dt.datetime(2026, 11, 1, 12))
    snapshot.take_snapshot(settings, d("2026-11-01"))
    with pytest.raises(common.ReportError, match="not consistent.*re-materialize"):
        movements.balance_movements(settings, d("2026-11-02"))
    written = Path(Store.at(settings.storage_uri).report_dir(movements.REPORT))
    assert not [p for p in written.rglob("*") if p.is_file()]  # no file, no Delta table
    snapshot.take_snapshot(settings, d("2026-11-02"))  # repaired: now the late row is a leg of 11-01
    result = movements.balance_movements(settings, d("2026-11-02"))
    assert result.rows > 0


# ---------------------------------------------------------------------------------------------- totals


def test_ledger_currency_totals_match_the_journal(ny, adversarial_url):
    result = totals.ledger_currency_totals(ny, d("2026-11-01"))
    expected_values = expected_snapshot(adversarial_url, UTC_CUTOFF["2026-11-01"])
    with psycopg.connect(adversarial_url) as conn:
        keys = dict((r[0], (r[1], r[2])) for r in conn.execute(
            "SELECT balance_id, ledger_id, currency FROM blnk.balances"))
    expected: dict[tuple, dict] = {}
    for balance_id, values in expected_values.items():
        entry = expected.setdefault(keys[balance_id], {"balances": 0, "balance_sum": 0, "credit_sum": 0,
                                                       "debit_sum": 0})
        entry["balances"] += 1
        entry["balance_sum"] += values["balance"]
        entry["credit_sum"] += values["credit_balance"]
        entry["debit_sum"] += values["debit_balance"]
    rows = report_rows(result.path)
    got = {(r["ledger_id"], r["currency"]): {k: int(r[k]) for k in ("balances", "balance_sum", "credit_sum",
                                                                      "debit_sum")} for r in rows}
    assert got == expected and len(got) == 12
    assert {(r["ledger_id"], r["currency"]): r["balance_sum"] for r in result.metrics["totals"]} == {
        k: v["balance_sum"] for k, v in expected.items()}
    assert [(r["ledger_id"], r["currency"]) for r in rows] == sorted(got)


# ------------------------------------------------------------------------------------------- month end


@pytest.mark.parametrize("month, last", [("2026-10-01", "2026-10-31"), ("2026-11-01", "2026-11-30")])
def test_month_end_equals_the_snapshot_of_the_last_day(ny, adversarial_url, month, last):
    """October ends on EDT (04:00 UTC); November, the month DST ends, on EST (05:00 UTC)."""
    result = month_end.month_end_balances(ny, d(month))
    expected = expected_snapshot(adversarial_url, UTC_CUTOFF[last])
    table = pd.read_parquet(result.path)
    assert result.rows == len(table) == len(expected)
    got = {r["balance_id"]: {k: int(r[k]) for k in AMOUNTS} for r in table.to_dict("records")}
    assert got == expected
    assert set(table["snapshot_date"]) == {d(last)}
    cutoff = pd.Timestamp(UTC_CUTOFF[last], tz="UTC")
    assert set(table["cutoff_at"]) == {cutoff}
    # the same rows as the snapshot file itself
    snap = catalog.read_partition(ny, d(last))
    assert table.drop(columns="snapshot_date").equals(snap.to_pandas())
    # the CSV: a header row and exact integers an auditor can open
    with open(result.csv_path, newline="") as f:
        reader = csv.DictReader(f)
        csv_rows = list(reader)
    assert reader.fieldnames == ["snapshot_date", *parquet.SNAPSHOT_SCHEMA.names]
    assert len(csv_rows) == len(expected)
    assert {r["balance_id"]: {k: int(r[k]) for k in AMOUNTS} for r in csv_rows} == expected
    assert {r["snapshot_date"] for r in csv_rows} == {last}
    assert result.csv_path.endswith(f"month_end_balances_{month[:7]}.csv")


def test_month_end_needs_the_last_day_and_writes_nothing_without_it(ny):
    with pytest.raises(common.ReportError, match="needs balance_snapshots 2026-09-30.*materialize"):
        month_end.month_end_balances(ny, d("2026-09-01"))
    assert not os.path.exists(common.partition_path(Store.at(ny.storage_uri), month_end.REPORT, "month", "2026-09"))
    assert not os.path.exists(month_end.csv_path(Store.at(ny.storage_uri), d("2026-09-01")))


# -------------------------------------------------------------------------------------- reconciliation


def live_drift(url: str) -> set[str]:
    """Independent: live rows that differ from the whole journal summed (every row, any effective date)."""
    expected = expected_snapshot(url, dt.datetime(9999, 1, 1))
    with psycopg.connect(url) as conn:
        live = {r[0]: dict(zip(AMOUNTS, (int(v) for v in r[1:]), strict=True)) for r in conn.execute(
            f"SELECT balance_id, {', '.join(AMOUNTS)} FROM blnk.balances")}
    return {b for b, values in live.items() if values != expected[b]}


def test_reconciliation_finds_exactly_the_drifting_live_rows(fresh_ledger, make_database, tmp_path):
    settings = make_settings(fresh_ledger, tmp_path / "store", index_url=make_database())
    snapshot.take_snapshot(settings, d("2026-11-02"))
    first = reconciliation.reconciliation_report(settings, d("2026-11-02"), page_rows=300)
    assert first.rows == 0 and first.metrics["balances_checked"] == 1500 and live_drift(fresh_ledger) == set()
    # A late, backdated transfer recorded as Blnk records it (live rows updated at once): still consistent.
    source, destination = two_balances(fresh_ledger)
    insert_transaction(fresh_ledger, source, destination, 500, created_at=dt.datetime(2026, 11, 20),
                       effective_date=dt.datetime(2026, 11, 1))
    with psycopg.connect(fresh_ledger) as conn:
        conn.execute("UPDATE blnk.balances SET debit_balance = debit_balance + 500, balance = balance - 500"
                     " WHERE balance_id = %s", (source,))
        conn.execute("UPDATE blnk.balances SET credit_balance = credit_balance + 500, balance = balance + 500"
                     " WHERE balance_id = %s", (destination,))
    assert reconciliation.reconciliation_report(settings, d("2026-11-02")).rows == 0
    # Corrupt two live rows.
    with psycopg.connect(fresh_ledger) as conn:
        ids = [r[0] for r in conn.execute("SELECT balance_id FROM blnk.balances ORDER BY id DESC LIMIT 2")]
        conn.execute("UPDATE blnk.balances SET balance = balance + 7 WHERE balance_id = %s", (ids[0],))
        conn.execute("UPDATE blnk.balances SET inflight_debit_balance = inflight_debit_balance - 3"
                     " WHERE balance_id = %s", (ids[1],))
    result = reconciliation.reconciliation_report(settings, d("2026-11-02"), page_rows=300)
    rows = {r["balance_id"]: r for r in report_rows(result.path)}
    assert set(rows) == set(ids) == live_drift(fresh_ledger)
    assert rows[ids[0]]["drifting_columns"] == "balance" and int(rows[ids[0]]["balance_drift"]) == 7
    assert int(rows[ids[0]]["live_balance"]) - int(rows[ids[0]]["expected_balance"]) == 7
    assert rows[ids[1]]["drifting_columns"] == "inflight_debit_balance"
    assert int(rows[ids[1]]["live_inflight_debit_balance"]) == int(rows[ids[1]]["expected_inflight_debit_balance"]) - 3
    assert result.metrics["drifting_balances"] == 2 and len(result.metrics["sample"]) == 2


# ---------------------------------------------------------------------------------------- as a dataset


def read_delta(path: str) -> pd.DataFrame:
    """A report table as pandas reads a Delta table (through its log: re-runs never show twice)."""
    return DeltaTable(path).to_pandas()


def test_each_report_reads_as_one_dataset_in_pandas(ny):
    for day in ("2026-11-01", "2026-11-02"):
        movements.balance_movements(ny, d(day))
        totals.ledger_currency_totals(ny, d(day))
        reconciliation.reconciliation_report(ny, d(day))
    month_end.month_end_balances(ny, d("2026-10-01"))
    month_end.month_end_balances(ny, d("2026-11-01"))
    root = os.path.join(ny.storage_uri, location.REPORTS_DIR)
    assert sorted(os.listdir(root)) == sorted(
        ["balance_movements", "ledger_currency_totals", "month_end_balances", "month_end_balances_csv",
         "reconciliation_report"])
    moves = read_delta(os.path.join(root, "balance_movements"))
    assert set(moves["snapshot_date"].astype(str)) >= {"2026-11-01", "2026-11-02"}
    assert len(moves[moves["snapshot_date"].astype(str) == "2026-11-02"]) == catalog.read_partition(
        ny, d("2026-11-02")).num_rows
    sums = read_delta(os.path.join(root, "ledger_currency_totals"))
    assert sums.groupby(sums["snapshot_date"].astype(str))["balances"].sum()["2026-11-02"] == len(
        moves[moves["snapshot_date"].astype(str) == "2026-11-02"])
    months = read_delta(os.path.join(root, "month_end_balances"))
    assert set(months["month"].astype(str)) == {"2026-10", "2026-11"}
    assert len(months) == sum(catalog.read_partition(ny, d(x)).num_rows
                              for x in ("2026-10-31", "2026-11-30"))
    drift = read_delta(os.path.join(root, "reconciliation_report"))
    assert len(drift) == 0 and "balance_drift" in drift.columns


def test_reports_refuse_snapshots_of_another_time_zone(ny):
    utc = ny.with_overrides(timezone="UTC")
    with pytest.raises(common.ReportError, match="time zone 'America/New_York'.*SNAPSHOT_TIMEZONE"):
        totals.ledger_currency_totals(utc, d("2026-11-02"))
