"""The Dagster instance the CLI runs on: the project's dagster.yaml is the one the CLI writes by default."""

from __future__ import annotations


def test_dagster_yaml_configures_postgres_storage_like_the_builtin_default():
    from pathlib import Path

    import yaml

    from snapshot_pipeline.cli.instance import DEFAULT_DAGSTER_YAML

    project = yaml.safe_load((Path(__file__).parents[2] / "dagster.yaml").read_text())
    assert project == yaml.safe_load(DEFAULT_DAGSTER_YAML)
    assert project["storage"] == {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}
