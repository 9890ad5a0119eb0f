"""Instants: RFC 3339 text in, naive UTC out; ambiguous or invalid text refused."""

from __future__ import annotations

import datetime as dt

import pytest

from snapshot_pipeline import query


def test_parse_timestamp_rejects_ambiguous_or_invalid_text():
    assert query.parse_timestamp("2026-11-02T15:00:00.250+05:30") == dt.datetime(2026, 11, 2, 9, 30, 0, 250000)
    assert query.parse_timestamp("2026-11-02T09:30:00.123456789Z") == dt.datetime(2026, 11, 2, 9, 30, 0, 123456)
    for bad in ("2026-11-02T09:30:00", "2026-11-02", "yesterday", "2026-13-02T09:30:00Z",
                "2026-11-02T25:00:00Z", "2026-11-02T09:30:00+24:00", "", "2026-11-02T09:30:00Z; DROP TABLE x"):
        with pytest.raises(query.QueryError):
            query.parse_timestamp(bad)
