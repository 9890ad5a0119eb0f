"""Small file operations on any pyarrow filesystem: existence, deletion, durable JSON records.

Used by the publish (holder records), the Parquet writer (moves, deletes) and sharded runs (plans and
shard records). Locally a record is written to a temporary file, fsynced and renamed (and the
directory fsynced); on object stores it is one PUT, which appears whole or not at all.
"""

from __future__ import annotations

import json
import os
import uuid

import pyarrow.fs as pafs


def is_file(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.File


def delete_if_file(fs: pafs.FileSystem, path: str | None) -> bool:
    """Delete ``path`` if it is a file; returns whether it was."""
    if path and is_file(fs, path):
        fs.delete_file(path)
        return True
    return False


def is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(fs: pafs.FileSystem, path: str, record: dict) -> None:
    """Write a JSON record durably and atomically (see the module docstring)."""
    data = json.dumps(record, sort_keys=True, default=str).encode()
    if is_local(fs):
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        fsync_dir(directory)
    else:
        with fs.open_output_stream(path) as out:
            out.write(data)


def read_json(fs: pafs.FileSystem, path: str) -> dict | None:
    """The record at ``path``, or None when there is none."""
    if not is_file(fs, path):
        return None
    with fs.open_input_stream(path) as stream:
        return json.loads(stream.read())
