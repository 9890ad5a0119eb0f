"""A real S3-compatible server on loopback for the tests: moto's standalone server, one per session.

``s3_storage`` gives each test a fresh bucket and a ``s3://bucket/prefix`` storage URI; the endpoint and
credentials reach pyarrow through the standard AWS environment variables, as in production.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pyarrow.fs as pafs
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """Start ``python -m moto.server`` on a free loopback port; stopped (by its pid) at the session's end."""
    pytest.importorskip("moto.server", reason="moto[server] is a test extra")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on {url}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_storage(s3_endpoint, monkeypatch):
    """A fresh bucket; returns its ``s3://bucket/snapshots`` storage URI (AWS_* variables set for the test)."""
    for name, value in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    fs = pafs.S3FileSystem(endpoint_override=s3_endpoint, region="us-east-1", scheme="http",
                           access_key="testing", secret_key="testing", allow_bucket_creation=True)
    fs.create_dir(bucket)
    return f"s3://{bucket}/snapshots"
