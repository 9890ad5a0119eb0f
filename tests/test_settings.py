"""SNAPSHOT_HISTORY_DAYS and SNAPSHOT_HOT_BALANCES: read in settings.py only, validated like every setting."""

from __future__ import annotations

import pytest

from snapshot_pipeline.parsing import SettingsError
from snapshot_pipeline.query.engine import QueryEngine
from snapshot_pipeline.settings import DEFAULT_HISTORY_DAYS, DEFAULT_HOT_BALANCES, load_settings


def test_defaults_and_values(tmp_path):
    base = {"SNAPSHOT_HOME": str(tmp_path), "LEDGER_DATABASE_URL": "postgresql://u@127.0.0.1:1/x"}
    settings = load_settings(base)
    assert (settings.history_days, settings.hot_balances) == (DEFAULT_HISTORY_DAYS, DEFAULT_HOT_BALANCES) == (30, 16)
    chosen = load_settings({**base, "SNAPSHOT_HISTORY_DAYS": "7", "SNAPSHOT_HOT_BALANCES": "0"})
    assert (chosen.history_days, chosen.hot_balances) == (7, 0)
    engine = QueryEngine(chosen, max_connections=1)  # the pools open lazily: no database needed here
    try:
        assert engine.hot.max_balances == 0  # the engine takes the setting, not the environment
    finally:
        engine.close()


@pytest.mark.parametrize("name, value", [("SNAPSHOT_HISTORY_DAYS", "0"), ("SNAPSHOT_HISTORY_DAYS", "٣٠"),
                                         ("SNAPSHOT_HOT_BALANCES", "-1"), ("SNAPSHOT_HOT_BALANCES", "many")])
def test_bad_values_name_the_variable(tmp_path, name, value):
    with pytest.raises(SettingsError, match=name):
        load_settings({"SNAPSHOT_HOME": str(tmp_path), name: value})
