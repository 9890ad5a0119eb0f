"""``snapshot-pipeline balance-at`` and ``ledger-indexes``, run as real subprocesses."""

from __future__ import annotations

import datetime as dt
import json

import psycopg
import pytest

from snapshot_pipeline import snapshot
from snapshot_pipeline.ledger import indexes
from tests.conftest import make_settings
from tests.oracle import expected_snapshot
from tests.processes import cli

COMPOSITE = {"idx_snapshot_transactions_source_effective", "idx_snapshot_transactions_destination_effective",
             "idx_snapshot_transactions_source_id", "idx_snapshot_transactions_destination_id"}


@pytest.fixture
def env(adversarial_url, make_database, tmp_path):
    index_url = make_database()
    settings = make_settings(adversarial_url, tmp_path / "store", "Asia/Kolkata", index_url=index_url)
    snapshot.take_snapshot(settings, dt.date(2026, 10, 31), 1000)
    return {"LEDGER_DATABASE_URL": adversarial_url, "SNAPSHOT_DATABASE_URL": index_url,
            "SNAPSHOT_STORAGE_URI": str(tmp_path / "store"), "SNAPSHOT_TIMEZONE": "Asia/Kolkata",
            "SNAPSHOT_HOME": str(tmp_path)}


def a_balance(url: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT destination FROM blnk.transactions WHERE status = 'APPLIED'"
                            " GROUP BY 1 ORDER BY count(*) DESC LIMIT 1").fetchone()[0]


def test_balance_at_prints_blnk_json(env, adversarial_url):
    balance_id = a_balance(adversarial_url)
    at = dt.datetime(2026, 10, 31, 20, 15)  # after the Kolkata cutoff of 2026-10-31 (18:30 UTC)
    expected = expected_snapshot(adversarial_url, at + dt.timedelta(microseconds=1))[balance_id]
    for extra in ([], ["--from-source"]):
        out = json.loads(cli("balance-at", balance_id, "--timestamp", "2026-11-01T01:45:00+05:30", *extra,
                             env=env).stdout)
        assert out["balance"] == {"balance": expected["balance"], "debit_balance": expected["debit_balance"],
                                  "credit_balance": expected["credit_balance"], "currency": out["balance"]["currency"],
                                  "balance_id": balance_id}
        assert out["inflight"]["inflight_balance"] == expected["inflight_balance"]
        assert out["timestamp"] == "2026-11-01T01:45:00+05:30" and out["existed"] is True
        assert out["from_source"] is bool(extra)
        assert (out["anchor"] is None) is bool(extra)
    assert out["replayed_transactions"] > 0
    assert json.loads(cli("balance-at", balance_id, "--timestamp", "2026-11-01T01:45:00+05:30",
                          env=env).stdout)["anchor"]["snapshot_date"] == "2026-10-31"


def test_balance_at_errors(env):
    proc = cli("balance-at", "bln_nope", "--timestamp", "2026-11-01T00:00:00Z", env=env, check=False)
    assert proc.returncode == 1 and "does not exist" in proc.stderr and proc.stdout == ""
    proc = cli("balance-at", "bln_nope", "--timestamp", "2026-11-01 00:00", env=env, check=False)
    assert proc.returncode == 2 and "RFC 3339" in proc.stderr  # bad input: exit 2
    down = {**env, "LEDGER_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none",
            "SNAPSHOT_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}
    proc = cli("balance-at", "bln_nope", "--timestamp", "2026-11-01T00:00:00Z", env=down, check=False)
    assert proc.returncode == 1 and "cannot connect" in proc.stderr


def test_ledger_indexes_dry_run_then_create(fresh_ledger):
    env = {"LEDGER_DATABASE_URL": fresh_ledger}

    def names() -> set[str]:
        with psycopg.connect(fresh_ledger) as conn:
            return {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'blnk'")}

    before = names()
    dry = json.loads(cli("ledger-indexes", "--dry-run", env=env).stdout)
    assert dry["dry_run"] is True and dry["created"] == []
    states = {i["name"]: i["state"] for i in dry["indexes"]}
    assert {n for n, s in states.items() if s == "missing"} == COMPOSITE
    assert all(i["ddl"].startswith("CREATE INDEX CONCURRENTLY") for i in dry["indexes"])
    assert names() == before  # a dry run creates nothing
    out = json.loads(cli("ledger-indexes", env=env).stdout)
    assert set(out["created"]) == COMPOSITE and {i["state"] for i in out["indexes"]} == {"present"}
    assert names() == before | COMPOSITE
    assert json.loads(cli("ledger-indexes", env=env).stdout)["created"] == []
    # The per-balance replay uses them.
    with psycopg.connect(fresh_ledger) as conn:
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT id FROM blnk.transactions t WHERE t.source = 'x'"
            " AND COALESCE(t.effective_date, t.created_at) >= '2026-11-01' AND COALESCE(t.effective_date,"
            " t.created_at) <= '2026-11-02'"))
    assert "idx_snapshot_transactions_source_effective" in plan


def test_ledger_indexes_rebuilds_an_invalid_leftover(fresh_ledger):
    with psycopg.connect(fresh_ledger, autocommit=True) as conn:
        # An index left INVALID by a failed concurrent build looks like this in the catalog.
        conn.execute("CREATE INDEX idx_snapshot_transactions_source_id ON blnk.transactions (source, id)")
        conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid ="
                     " 'blnk.idx_snapshot_transactions_source_id'::regclass")
        states = {i["name"]: i["state"] for i in indexes.status(conn)}
        assert states["idx_snapshot_transactions_source_id"] == "invalid"
        built = indexes.create_missing(conn, log=lambda m: None)
        assert "idx_snapshot_transactions_source_id" in built
        assert {i["state"] for i in indexes.status(conn)} == {"present"}
    with psycopg.connect(fresh_ledger) as conn:
        with pytest.raises(ValueError, match="autocommit"):
            indexes.create_missing(conn)
