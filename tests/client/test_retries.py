"""The client's retry rules on real sockets, no Django: a server that cuts the connection after
reading the request (it may have acted) gets a GET again but never a POST; one that cannot be
reached gets any method again (nothing was sent); Retry-After is read as seconds or an HTTP date."""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime

import httpx
import pytest

from instructloop.client import Client, retry_after_seconds


class CuttingServer:
    """Accepts connections, reads a request, closes without answering; counts the requests."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                if conn.recv(65536):
                    self.requests += 1

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def cutting():
    server = CuttingServer()
    yield server
    server.close()


def test_a_get_cut_after_sending_is_retried_but_a_post_is_not(cutting):
    waits: list[float] = []
    client = Client(f"http://127.0.0.1:{cutting.port}", "k", retries=2, sleep=waits.append)

    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.progress(1)  # GET
    assert cutting.requests == 3 and waits == [0.5, 1.0]

    # A POST: the server may have imported them. (Closed, or reset with the body unread.)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        client.import_prompts(1, [{"prompt": "x"}])
    assert cutting.requests == 4 and len(waits) == 2


def test_a_post_that_could_not_connect_is_retried():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    waits: list[float] = []
    client = Client(f"http://127.0.0.1:{port}", "k", retries=2, sleep=waits.append)

    with pytest.raises(httpx.ConnectError):
        client.import_prompts(1, [{"prompt": "x"}])
    assert waits == [0.5, 1.0]


def test_retry_after_is_read_as_seconds_or_an_http_date():
    now = datetime(2026, 12, 5, 10, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("5") == 5.0
    assert retry_after_seconds("Sat, 05 Dec 2026 10:00:12 GMT", now=now) == 12.0
    assert retry_after_seconds("Sat, 05 Dec 2026 09:59:00 GMT", now=now) == 0.0  # past: now
    assert retry_after_seconds("-3") == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
