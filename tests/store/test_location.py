"""The Store: a storage URI resolved once into a filesystem and a root, and the layout under that root."""

from __future__ import annotations

import datetime as dt
import os

import pyarrow.fs as pafs

from snapshot_pipeline.store.location import Store

D = dt.date(2026, 11, 2)


def test_a_local_path_is_resolved_to_an_absolute_root(tmp_path, monkeypatch):
    target = tmp_path / "real"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    monkeypatch.setenv("HOME", str(tmp_path))
    for uri in (str(tmp_path / "link"), "~/link", "~/link/"):
        store = Store.open(uri)
        assert isinstance(store.fs, pafs.LocalFileSystem)
        assert store.uri == uri and store.root == str(target.resolve())
    monkeypatch.chdir(tmp_path)
    assert Store.open("real/sub").root == str(target.resolve() / "sub")


def test_a_uri_keeps_its_path_without_the_trailing_slash(tmp_path):
    store = Store.open(f"file://{tmp_path}/store/")
    assert isinstance(store.fs, pafs.LocalFileSystem) and store.root == f"{tmp_path}/store"


def test_at_resolves_a_uri_once_per_process(tmp_path, monkeypatch):
    uri = str(tmp_path / "store")
    assert Store.at(uri) is Store.at(uri) and Store.at(uri) == Store.open(uri)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    in_a = Store.at("store")
    monkeypatch.chdir(tmp_path / "b")
    in_b = Store.at("store")  # a relative path is resolved against the directory it is used from
    assert in_a.root == str(tmp_path / "a" / "store") and in_b.root == str(tmp_path / "b" / "store")
    assert Store.at("store") is in_b


def test_the_layout_under_a_local_root(tmp_path):
    root = str(tmp_path / "store")
    store = Store.open(root)
    assert store.path("a", "b") == f"{root}/a/b"
    assert store.dataset == f"{root}/balance_snapshots"
    assert store.partition_dir(D) == f"{root}/balance_snapshots/snapshot_date=2026-11-02"
    assert store.partition_paths(D, ["s3://elsewhere/x/part-00000-ab.parquet", "part-00001-ab.parquet"]) == [
        f"{store.partition_dir(D)}/part-00000-ab.parquet", f"{store.partition_dir(D)}/part-00001-ab.parquet"]
    assert store.table_path("reports/movements") == store.table_uri("reports/movements") == f"{root}/reports/movements"
    assert store.report_dir("movements") == f"{store.reports_dir}/movements" == f"{root}/reports/movements"
    assert (store.control_dir, store.staging_dir) == (f"{root}/.publish", f"{root}/.staging")
    assert store.display(store.partition_dir(D)) == store.partition_dir(D)
    assert os.path.isabs(store.root)


def test_an_object_store_keeps_its_scheme_for_delta_readers_and_users(s3_storage):
    store = Store.at(s3_storage)
    bucket_path = s3_storage.removeprefix("s3://")
    assert isinstance(store.fs, pafs.S3FileSystem) and store.root == bucket_path
    assert store.dataset == f"{bucket_path}/balance_snapshots"
    assert store.table_uri("balance_snapshots") == f"{s3_storage}/balance_snapshots"
    assert store.display(store.partition_dir(D)) == f"{s3_storage}/balance_snapshots/snapshot_date=2026-11-02"


def test_a_file_uri_displays_as_a_file_uri(tmp_path):
    store = Store.at(f"file://{tmp_path}/store")
    assert store.root == str(tmp_path / "store")
    assert store.display(store.partition_dir(D)) == f"file://{tmp_path}/store/balance_snapshots/snapshot_date=2026-11-02"
