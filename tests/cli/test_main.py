"""Every bad input to the CLI gets one clear line and exit code 2 before any work (issue 13).

Each case runs ``snapshot-pipeline`` as a real subprocess against a real PostgreSQL with every
setting valid but the one under test (database URLs carry a password). It asserts the exit code,
the one-line message (naming the variable or parameter), no traceback, no password in the output,
and that nothing was written: no Dagster run in the instance, no snapshot index row, no file under
the home directory (where the store and ``DAGSTER_HOME`` live). Neighbours (valid edge values) run
the same way and must succeed, writing nothing either (``balance-at`` only reads).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.bad_input import (
    HUGE,
    PASSWORD,
    RANGE,
    assert_one_clean_line,
    dagster_runs,
    files_under,
    index_rows,
    run_cli,
    seed_small_ledger,
    with_password,
)

SNAPSHOT = ("snapshot", "--date", "2026-10-27")


@pytest.fixture(scope="module")
def world(make_database) -> dict:
    """A small ledger (with one 10^70 leg), an empty index database and an empty Dagster database."""
    ledger = make_database()
    balances = seed_small_ledger(ledger)
    return {"ledger": ledger, "index": make_database(), "dagster": make_database(), **balances}


@pytest.fixture
def env(world, tmp_path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "a-file").write_text("not a directory\n")
    return {
        "LEDGER_DATABASE_URL": with_password(world["ledger"]),
        "SNAPSHOT_DATABASE_URL": with_password(world["index"]),
        "DAGSTER_PG_URL": with_password(world["dagster"], scheme="postgresql+psycopg2"),
        "SNAPSHOT_STORAGE_URI": str(home / "store"),
        "SNAPSHOT_START_DATE": "2026-10-01",
        "SNAPSHOT_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster_home"),
    }


def unreachable(url: str) -> str:
    """The same database over TCP on a port nothing listens on (also for a socket URL: ``?host=`` dropped)."""
    parts = urlsplit(with_password(url))
    user = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
    return urlunsplit((parts.scheme, f"{user}@127.0.0.1:1" if user else "127.0.0.1:1", parts.path, "", ""))


# (id, setting overrides, command, exit code, words the one line must contain). In values, {file} is a
# regular file, {ledger}/{dagster} the databases' URLs; commands use {balance} (an ordinary balance).
BAD = [
    ("ledger-not-a-url", {"LEDGER_DATABASE_URL": "not-a-url"}, SNAPSHOT, 2,
     ["LEDGER_DATABASE_URL", "not a PostgreSQL URL", "postgresql://"]),
    ("ledger-mysql", {"LEDGER_DATABASE_URL": f"mysql://root:{PASSWORD}@127.0.0.1/ledger"}, SNAPSHOT, 2,
     ["LEDGER_DATABASE_URL", "not a PostgreSQL URL"]),
    ("ledger-garbage-scheme", {"LEDGER_DATABASE_URL": "garbage://"}, SNAPSHOT, 2,
     ["LEDGER_DATABASE_URL", "not a PostgreSQL URL"]),
    ("ledger-bad-percent-escape", {"LEDGER_DATABASE_URL": f"postgresql://u:{PASSWORD}%zz@127.0.0.1/x"}, SNAPSHOT, 2,
     ["LEDGER_DATABASE_URL", "not a valid PostgreSQL URL"]),
    ("ledger-unclosed-ipv6", {"LEDGER_DATABASE_URL": f"postgresql://u:{PASSWORD}@[::1/x"}, SNAPSHOT, 2,
     ["LEDGER_DATABASE_URL", "not a valid PostgreSQL URL"]),
    ("ledger-unknown-parameter", {"LEDGER_DATABASE_URL": f"postgresql://u:{PASSWORD}@h/x?colour=red"}, SNAPSHOT, 2,
     ["LEDGER_DATABASE_URL", "colour"]),
    ("index-port-not-a-number", {"SNAPSHOT_DATABASE_URL": f"postgresql://u:{PASSWORD}@127.0.0.1:abc/x"}, SNAPSHOT, 2,
     ["SNAPSHOT_DATABASE_URL", "port", "1 to 65535"]),
    ("index-port-out-of-range", {"SNAPSHOT_DATABASE_URL": f"postgresql://u:{PASSWORD}@127.0.0.1:99999/x"},
     SNAPSHOT, 2, ["SNAPSHOT_DATABASE_URL", "port"]),
    ("index-password-in-query", {"SNAPSHOT_DATABASE_URL": f"mysql://h/x?password={PASSWORD}"}, SNAPSHOT, 2,
     ["SNAPSHOT_DATABASE_URL", "not a PostgreSQL URL"]),
    ("dagster-mysql", {"DAGSTER_PG_URL": f"mysql://u:{PASSWORD}@h/dagster"}, SNAPSHOT, 2,
     ["DAGSTER_PG_URL", "not a PostgreSQL URL", "postgresql+psycopg2://"]),
    ("dagster-unknown-driver", {"DAGSTER_PG_URL": f"postgresql+asyncpg://u:{PASSWORD}@h/dagster"}, SNAPSHOT, 2,
     ["DAGSTER_PG_URL", "not a PostgreSQL URL"]),
    ("dagster-unreachable", {"DAGSTER_PG_URL": "{dagster_unreachable}"}, SNAPSHOT, 1,
     ["DAGSTER_PG_URL", "cannot connect"]),
    ("ledger-unreachable", {"LEDGER_DATABASE_URL": "{ledger_unreachable}"}, SNAPSHOT, 1,
     ["ledger database", "cannot connect"]),
    ("storage-ftp", {"SNAPSHOT_STORAGE_URI": "ftp://files.example.com/snapshots"}, SNAPSHOT, 2,
     ["SNAPSHOT_STORAGE_URI", "unsupported scheme", "s3://"]),
    ("storage-is-a-file", {"SNAPSHOT_STORAGE_URI": "{file}"}, SNAPSHOT, 2,
     ["SNAPSHOT_STORAGE_URI", "is a file"]),
    ("storage-under-a-file", {"SNAPSHOT_STORAGE_URI": "{file}/snapshots"}, SNAPSHOT, 2,
     ["SNAPSHOT_STORAGE_URI", "a file, not a directory"]),
    ("storage-file-uri-of-a-file", {"SNAPSHOT_STORAGE_URI": "file://{file}"}, SNAPSHOT, 2,
     ["SNAPSHOT_STORAGE_URI", "is a file"]),
    ("storage-cannot-be-created", {"SNAPSHOT_STORAGE_URI": "/proc/snapshot-pipeline-test/store"}, SNAPSHOT, 2,
     ["SNAPSHOT_STORAGE_URI", "cannot be created"]),
    ("storage-bucketless-s3", {"SNAPSHOT_STORAGE_URI": "s3://"}, SNAPSHOT, 2, ["SNAPSHOT_STORAGE_URI", "bucket"]),
    ("webserver-no-scheme", {"DAGSTER_WEBSERVER_URL": "localhost:3000"}, SNAPSHOT, 2,
     ["DAGSTER_WEBSERVER_URL", "http://"]),
    ("webhook-secret-not-shown", {"SNAPSHOT_ALERT_WEBHOOK_URL": f"hooks.example.com/T000/{PASSWORD}"}, SNAPSHOT, 2,
     ["SNAPSHOT_ALERT_WEBHOOK_URL", "not shown"]),
    ("timezone-unknown", {"SNAPSHOT_TIMEZONE": "Mars/Olympus"}, SNAPSHOT, 2, ["SNAPSHOT_TIMEZONE", "IANA"]),
    ("start-date-malformed", {"SNAPSHOT_START_DATE": "2026-02-30"}, SNAPSHOT, 2, ["SNAPSHOT_START_DATE", "YYYY-MM-DD"]),
    ("instant-after-the-range", {}, ("balance-at", "{balance}", "--timestamp", "9999-12-31T23:59:59-23:59"), 2,
     ["timestamp", RANGE]),
    ("instant-before-the-range", {}, ("balance-at", "{balance}", "--timestamp", "0001-01-01T00:00:00+01:00"), 2,
     ["timestamp", RANGE]),
    ("instant-year-zero", {}, ("balance-at", "{balance}", "--timestamp", "0000-06-01T00:00:00Z"), 2,
     ["timestamp", RANGE]),
    ("instant-offset-24h", {}, ("balance-at", "{balance}", "--timestamp", "2026-01-01T00:00:00+24:00"), 2,
     ["timestamp", "-23:59 to +23:59"]),
    ("instant-plus-as-space", {}, ("balance-at", "{balance}", "--timestamp", "2026-11-01T12:00:00 05:30"), 2,
     ["timestamp", "%2B"]),
    ("instant-arabic-indic-digits", {},
     ("balance-at", "{balance}", "--timestamp", "\u0662\u0660\u0662\u0666-11-01T00:00:00Z"),
     2, ["timestamp", "RFC 3339"]),
    ("instant-without-offset", {}, ("balance-at", "{balance}", "--timestamp", "2026-11-01T00:00:00"), 2,
     ["timestamp", "RFC 3339"]),
    ("instant-not-a-day", {}, ("balance-at", "{balance}", "--timestamp", "2026-02-30T00:00:00Z"), 2,
     ["timestamp", "not a valid date"]),
    ("instant-too-long", {}, ("balance-at", "{balance}", "--timestamp", "2026-11-01T00:00:00." + "1" * 80 + "Z"), 2,
     ["timestamp", "at most 64"]),
    ("balance-id-too-long", {}, ("balance-at", "b" * 600, "--timestamp", "2026-11-01T00:00:00Z"), 2,
     ["balance_id", "at most 512"]),
    ("balance-unknown", {}, ("balance-at", "bln_nope", "--timestamp", "2026-11-01T00:00:00Z"), 1, ["does not exist"]),
    ("amount-beyond-decimal128", {}, ("balance-at", "{huge}", "--timestamp", "2026-10-27T00:00:00Z"), 1,
     ["balance '{huge}'", f"credit_balance = {str(HUGE)[:40]}", "decimal128(38, 0)"]),
]

# Valid neighbours of the cases above: they must answer (exit 0, JSON), and write nothing either.
GOOD = [
    ("instant-last-utc", {}, "9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"),
    ("instant-last-with-positive-offset", {}, "9999-12-31T23:59:59+23:59", "9999-12-31T23:59:59+23:59"),
    ("instant-last-nanoseconds", {}, "9999-12-31T23:59:59.999999999Z", "9999-12-31T23:59:59Z"),
    ("instant-first-utc", {}, "0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
    ("instant-first-with-negative-offset", {}, "0001-01-01T00:00:00-23:59", "0001-01-01T00:00:00-23:59"),
    ("ledger-postgres-scheme-with-password", {"LEDGER_DATABASE_URL": "{ledger_postgres_scheme}"},
     "2026-11-01T00:00:00+05:30", "2026-11-01T00:00:00+05:30"),
    ("storage-file-uri", {"SNAPSHOT_STORAGE_URI": "file://{home}/store"}, "2026-11-01T00:00:00Z",
     "2026-11-01T00:00:00Z"),
    ("storage-object-store", {"SNAPSHOT_STORAGE_URI": "s3://bucket/snapshots"}, "2026-11-01T00:00:00Z",
     "2026-11-01T00:00:00Z"),
]


def fill(text: str, world: dict, env: dict, tmp_path: Path) -> str:
    values = {
        "file": str(tmp_path / "a-file"), "home": env["SNAPSHOT_HOME"], "balance": world["plain"],
        "huge": world["destination"],
        "ledger_unreachable": unreachable(world["ledger"]), "dagster_unreachable": unreachable(world["dagster"]),
        "ledger_postgres_scheme": with_password(world["ledger"], scheme="postgres"),
    }
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def assert_nothing_written(world: dict, env: dict) -> None:
    assert dagster_runs(world["dagster"]) == 0
    assert index_rows(world["index"]) == 0
    assert files_under(Path(env["SNAPSHOT_HOME"])) == []


@pytest.mark.parametrize("overrides, command, code, words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_gets_one_line_and_changes_nothing(world, env, tmp_path, overrides, command, code, words):
    env = {**env, **{k: fill(v, world, env, tmp_path) for k, v in overrides.items()}}
    proc = run_cli(*(fill(a, world, env, tmp_path) for a in command), env=env)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == ""
    line = assert_one_clean_line(proc.stderr)
    assert line.startswith("error: ")
    for word in words:
        assert fill(word, world, env, tmp_path) in line, line
    assert_nothing_written(world, env)


@pytest.mark.parametrize("overrides, timestamp, shown", [c[1:] for c in GOOD], ids=[c[0] for c in GOOD])
def test_valid_neighbours_answer_and_change_nothing(world, env, tmp_path, overrides, timestamp, shown):
    env = {**env, **{k: fill(v, world, env, tmp_path) for k, v in overrides.items()}}
    proc = run_cli("balance-at", world["plain"], "--timestamp", timestamp, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and PASSWORD not in proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["timestamp"] == shown and out["balance"]["balance_id"] == world["plain"]
    assert out["existed"] is not timestamp.startswith("0001")
    assert_nothing_written(world, env)


def test_debug_shows_the_traceback(world, env):
    proc = run_cli("--debug", "balance-at", world["plain"], "--timestamp", "9999-12-31T23:59:59-23:59", env=env)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "supported range" in proc.stderr
    assert PASSWORD not in proc.stderr


def test_snapshot_of_an_unrepresentable_amount_fails_naming_the_balance(world, env):
    """Not a bad input but bad data: the run is recorded and fails, naming the balance and the value."""
    proc = run_cli("snapshot", "--date", dt.date(2026, 10, 26).isoformat(), env=env)
    assert proc.returncode == 1 and proc.stdout == ""
    line = assert_one_clean_line(proc.stderr)
    assert str(HUGE)[:30] in line and "digits" in line
    assert world["destination"] in line or world["source"] in line, line
