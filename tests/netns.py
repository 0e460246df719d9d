"""Worker "hosts" in network namespaces of their own, for tests that need two hosts on one machine.

Each host is an `ip netns` namespace joined to this one by a veth pair: inside it there is no
route to this machine's loopback, so PostgreSQL, Redis and the S3 server (all listening on
127.0.0.1) are reached only through the link, at the address of this end, where a TCP relay
forwards each port to the service. A process started with `Namespace.command` runs inside (`ip
netns exec` execs it: its pid is the command's). Needs Linux, root and iproute2; `unavailable()`
says why not.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

LOOPBACK = {"127.0.0.1", "localhost"}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    if shutil.which("ip") is None:
        return "no iproute2 (`ip`)"
    probe = f"il-probe-{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as error:
        stderr = getattr(error, "stderr", b"") or b""
        return f"`ip netns add` failed: {stderr.decode(errors='replace').strip() or error}"
    _ip("netns", "del", probe)
    return None


class Relay:
    """A TCP relay listening on (host, port) that forwards each connection to 127.0.0.1:port."""

    def __init__(self, host: str, port: int) -> None:
        self.port = port
        self.server = socket.create_server((host, port))
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:  # closed
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.server.close()


@dataclass
class Namespace:
    name: str
    gateway: str  # this end of the link, as the namespace sees it
    inside: str  # the namespace's end
    relays: dict[int, Relay] = field(default_factory=dict)

    def command(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def url(self, url: str) -> str:
        """`url` as this host must write it: a service on this machine's loopback reached at the
        gateway (a relay on its port started the first time)."""
        parts = urlsplit(url)
        if parts.hostname not in LOOPBACK or parts.port is None:
            return url
        if parts.port not in self.relays:
            self.relays[parts.port] = Relay(self.gateway, parts.port)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@" if credentials else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}{self.gateway}:{parts.port}"))

    def reaches(self, host: str, port: int) -> bool:
        """Whether a TCP connection from inside the namespace to host:port opens."""
        probe = f"import socket; socket.create_connection(({host!r}, {port}), timeout=3)"
        done = subprocess.run(
            self.command(["python3", "-c", probe]), capture_output=True, timeout=30
        )
        return done.returncode == 0


@contextmanager
def namespace() -> Iterator[Namespace]:
    """A fresh namespace with a veth link to this one, on a random /30 of 10.231.0.0/16 (tests
    that run at the same time pick other ones); removed on exit, with its link and relays."""
    tag = uuid.uuid4().hex[:8]
    name, outer, inner = f"il-{tag}", f"il{tag}a", f"il{tag}b"
    # Not the module's generator: an engine run in this process seeds it (seed_everything), so
    # every run of the suite picked the same blocks, and runs at once on one machine collided.
    block = random.SystemRandom().randrange(0, 65536, 4)
    gateway = f"10.231.{block // 256}.{block % 256 + 1}"
    inside = f"10.231.{block // 256}.{block % 256 + 2}"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", name)
        _ip("addr", "add", f"{gateway}/30", "dev", outer)
        _ip("link", "set", outer, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{inside}/30", "dev", inner)
        _ip("netns", "exec", name, "ip", "link", "set", inner, "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        made = Namespace(name, gateway, inside)
        try:
            yield made
        finally:
            for relay in made.relays.values():
                relay.close()
    finally:
        with suppress(subprocess.CalledProcessError):
            _ip("link", "del", outer)  # takes its peer with it
        _ip("netns", "del", name)
