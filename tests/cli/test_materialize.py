"""The CLI's per-day progress bar, drawn on a real terminal (a pseudo-terminal)."""

from __future__ import annotations

import datetime as dt
import os
import select
import sys

import pytest

from snapshot_pipeline.cli.common import CliError
from snapshot_pipeline.cli.materialize import DayProgress, _check_partition
from snapshot_pipeline.settings import load_settings


def _drawn(master: int) -> str:
    """Everything written to the terminal so far."""
    out = b""
    while select.select([master], [], [], 0.2)[0]:
        out += os.read(master, 65536)
    return out.decode()


def test_the_bar_draws_the_runs_final_report_however_soon_it_follows_the_last(monkeypatch):
    """A short day sends its first progress report and its final one within tqdm's minimum interval (0.2 s):
    the bar still shows 100% before it is replaced by the day's line."""
    master, secondary = os.openpty()
    terminal = os.fdopen(secondary, "w")
    monkeypatch.setattr(sys, "stderr", terminal)
    try:
        bar = DayProgress("2026-12-05", None)
        bar.update_to(1000, 18836)  # the run's estimate
        bar.update_to(19374, 19374)  # its final report: the exact row count
        drawn = _drawn(master)
        bar.close()
    finally:
        terminal.close()
        os.close(master)
    assert "100%" in drawn and "19374/19374" in drawn


def test_a_date_before_the_partitions_says_where_their_first_day_came_from(tmp_path):
    settings = load_settings({"SNAPSHOT_HOME": str(tmp_path)})  # no SNAPSHOT_START_DATE, no seeded ledger
    assert settings.start_date_source == "default"
    with pytest.raises(CliError, match=r"\(the default; set SNAPSHOT_START_DATE\)"):
        _check_partition(settings, settings.start_date - dt.timedelta(days=1))
    settings = load_settings({"SNAPSHOT_HOME": str(tmp_path), "SNAPSHOT_START_DATE": "2026-10-01"})
    with pytest.raises(CliError, match=r"\(SNAPSHOT_START_DATE\)"):
        _check_partition(settings, dt.date(2026, 9, 30))
