"""Database URLs: the Dagster instance's URL always in SQLAlchemy's psycopg2 scheme."""

from __future__ import annotations

import pytest

from snapshot_pipeline import db
from snapshot_pipeline.settings import load_settings


@pytest.mark.parametrize("given, expected", [
    ("postgresql://postgres@127.0.0.1:5432/dagster", "postgresql+psycopg2://postgres@127.0.0.1:5432/dagster"),
    ("postgres://u:p@h/dagster", "postgresql+psycopg2://u:p@h/dagster"),
    ("postgresql+psycopg://postgres:@/dagster?host=/tmp/x", "postgresql+psycopg2://postgres:@/dagster?host=/tmp/x"),
])
def test_dagster_url_always_uses_the_psycopg2_scheme(given, expected, tmp_path):
    settings = load_settings({"DAGSTER_PG_URL": given, "SNAPSHOT_HOME": str(tmp_path)})
    assert db.dagster_url(settings) == expected
    with pytest.raises(db.DatabaseUnavailable, match="not a postgresql"):
        db.sqlalchemy_psycopg2("mysql://x@y/z")
