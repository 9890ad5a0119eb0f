"""Progress that tells the truth: rows merged out of the partition's row count, reaching it on every path
(genesis, roll-forward, sharded), formatted and parsed in one place (snapshot_pipeline/progress.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from snapshot_pipeline import progress, snapshot
from tests.conftest import make_settings

DAYS = [dt.date(2026, 10, 30), dt.date(2026, 10, 31)]


def test_the_line_is_parsed_as_it_is_written():
    line = progress.format_line(progress.Report("2026-11-02", 120_000, 300_000, 85_000.4))
    assert line == ("operation=balance_snapshot snapshot_date=2026-11-02 status=progress rows=120000 total=300000"
                    " percent=40.0 snapshots_per_second=85000")
    assert progress.parse_line(line) == progress.Report("2026-11-02", 120_000, 300_000, 85_000.0)
    unknown = progress.format_line(progress.Report("2026-11-02", 5, None))
    assert progress.parse_line(unknown) == progress.Report("2026-11-02", 5, None, None)
    assert progress.Report("2026-11-02", 12, 10).percent == 100.0  # an estimate passed: capped
    assert progress.parse_line("operation=balance_snapshot snapshot_date=2026-11-02 status=completed rows=3") is None
    assert progress.parse_line("status=progress rows=x total=3") is None


@pytest.mark.parametrize("shards", [1, 3])
def test_progress_reaches_the_partitions_row_count(adversarial_url, make_database, tmp_path, shards):
    settings = make_settings(adversarial_url, tmp_path / "store", index_url=make_database())
    for mode, day in zip(("genesis", "incremental"), DAYS, strict=True):
        reports: list[tuple[int, int | None, bool]] = []
        lines: list[str] = []

        def record(rows, total, final=False, reports=reports):
            reports.append((rows, total, final))

        result = snapshot.take_snapshot(settings, day, 97, on_progress=record, shards=shards)
        assert result.mode == mode
        assert len(reports) >= 2 and reports[-1] == (result.rows, result.rows, True)  # the final, exact report
        done = [rows for rows, _, _ in reports]
        assert done == sorted(done) and done[-1] == result.rows  # monotone, ending at the row count
        if shards == 1:  # an estimate from the ledger read: the base's rows plus the balances entering
            assert all(total is not None for _, total, _ in reports)
            if mode == "incremental":  # (at genesis, balances touched before their creation come on top)
                assert all(total >= 0.99 * result.rows for _, total, _ in reports)
        # the default reporter logs the same through the run's log: its last line says 100%
        snapshot.take_snapshot(settings, day, 97, log=lines.append, shards=shards)
        last = [r for r in map(progress.parse_line, lines) if r is not None][-1]
        assert last.rows == last.total == result.rows and last.percent == 100.0
