"""A real S3-protocol server for tests: moto's threaded server on a free local port, and an empty
bucket per test. Nothing is mocked inside our code or s3fs: they speak HTTP to it as to S3."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """`s3://<a new bucket>`, with the AWS environment a worker would have pointing at it."""
    import s3fs

    for name, value in {
        "AWS_ACCESS_KEY_ID": "instructloop-test",
        "AWS_SECRET_ACCESS_KEY": "instructloop-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    bucket = f"artifacts-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)
    fs.mkdir(bucket)
    return f"s3://{bucket}"


def listed(fs: Any, pattern: str, *, tries: int = 40) -> list[str]:
    """`fs.glob(pattern)` while a worker publishes into the bucket: its mirror deletes the older
    copies of what it has just published, and s3fs's glob raises FileNotFoundError when a
    folder it listed is gone before its walk reaches it. Then it looks again."""
    for _ in range(tries - 1):
        try:
            return list(fs.glob(pattern))
        except FileNotFoundError:
            time.sleep(0.05)
    return list(fs.glob(pattern))
