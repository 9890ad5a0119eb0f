"""Dagster resources: where the ledger is read and where snapshots are written."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field

from snapshot_pipeline.settings import Settings, load_settings

# resource field -> the environment variable it reads (README, Configuration)
ENVIRONMENT_FIELDS = {
    "ledger_database_url": "LEDGER_DATABASE_URL",
    "snapshot_database_url": "SNAPSHOT_DATABASE_URL",
    "storage_uri": "SNAPSHOT_STORAGE_URI",
}


class SnapshotStoreResource(dg.ConfigurableResource):
    """The ledger to read and the snapshot store (Parquet root and Postgres index) to write.

    Every field defaults to the environment (``LEDGER_DATABASE_URL``,
    ``SNAPSHOT_DATABASE_URL``, ``SNAPSHOT_STORAGE_URI``); unset database URLs mean
    the embedded PostgreSQL in ``.data/``. Values set here override the environment.
    """

    ledger_database_url: str | None = Field(default=None, description="Source ledger URL; unset = environment")
    snapshot_database_url: str | None = Field(default=None, description="Index database URL; unset = ledger's")
    storage_uri: str | None = Field(default=None, description="Parquet root (path or object-store URI)")

    @classmethod
    def from_environment(cls) -> SnapshotStoreResource:
        """The resource of the code location: each variable that is set becomes an ``EnvVar`` field, so the
        UI (Deployment > Resources) shows which variable configures what, without showing its value; an
        unset variable keeps its default (the embedded PostgreSQL, ``.data/snapshots``)."""
        return cls(**{field: dg.EnvVar(name) for field, name in ENVIRONMENT_FIELDS.items() if os.environ.get(name)})

    def settings(self, timezone: str | None = None) -> Settings:
        """The resolved settings of this run, with the partitions' time zone."""
        base = load_settings()
        ledger, index_url, storage = (_resolved(self.ledger_database_url), _resolved(self.snapshot_database_url),
                                      _resolved(self.storage_uri))
        overrides = {
            "ledger_database_url": ledger,
            "snapshot_database_url": index_url or ledger,
            "storage_uri": storage,
            "timezone": timezone,
        }
        return base.with_overrides(**overrides)


def _resolved(value: str | None) -> str | None:
    """A field's value: Dagster resolves ``EnvVar`` fields for runs and sensors; called on the definitions'
    own resource outside them, an ``EnvVar`` still holds the variable's name, so read the variable."""
    if isinstance(value, dg.EnvVar):
        return value.get_value()
    return value
