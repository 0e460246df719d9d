"""A real Celery worker in a subprocess, for tests that need jobs to run as in production.

`celery_worker` (re-exported by tests/conftest.py) starts `celery -A instructloop worker` on the
test database pytest-django created and on the broker the settings name (Redis, or the
filesystem broker under INSTRUCTLOOP_VAR_DIR), waits until the worker says it is ready, and stops
it at teardown. A test that uses it sees the worker's writes because it runs in a
transactional_db (the worker is another process: it cannot see an uncommitted test transaction).

    @pytest.mark.worker
    def test_it_runs(celery_worker):
        some_task.delay(run_id)
        wait_until(lambda: TrainingRun.objects.get(pk=run_id).status == "succeeded")
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def wait_until(
    predicate: Callable[[], object], *, timeout: float = 60, interval: float = 0.2
) -> object:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


class WorkerProcess:
    """A running `celery worker` whose output goes to a log file the test can read."""

    def __init__(self, process: subprocess.Popen, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, *, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.log():
            if self.process.poll() is not None:
                pytest.fail(f"worker exited ({self.process.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"worker never logged {needle!r} within {timeout} s:\n{self.log()}")
            time.sleep(0.2)

    def stop(self, *, timeout: float = 30) -> int:
        """Warm shutdown (SIGTERM: finish the current task, then exit); SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_worker(
    *,
    env: Mapping[str, str],
    log_path: Path,
    queues: str = "cpu,gpu",
    timeout: float = 90,
    wrap: Callable[[list[str]], list[str]] | None = None,
) -> WorkerProcess:
    """Start a solo-pool worker on `queues` with `env`, and return once it is ready. wrap: the
    command as a host runs it (tests/netns.py: inside its network namespace)."""
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "instructloop",
        "worker",
        "-Q",
        queues,
        "--pool=solo",
        "--concurrency=1",
        "--loglevel=INFO",
        # No gossip/mingle/heartbeat: nothing to talk to, and the filesystem broker has no fanout.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-n",
        f"test-{uuid.uuid4().hex[:8]}@%h",
    ]
    if wrap is not None:
        command = wrap(command)
    log = log_path.open("wb")
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    worker = WorkerProcess(process, log_path)
    try:
        worker.wait_for_log(" ready.", timeout=timeout)
    except BaseException:
        worker.stop(timeout=5)
        raise
    return worker


def database_url(settings_dict: Mapping[str, object]) -> str:
    """A DATABASE_URL for a child process that opens the same database as `settings_dict`."""
    if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{Path(str(settings_dict['NAME'])).resolve()}"
    user = quote(str(settings_dict.get("USER") or ""), safe="")
    password = quote(str(settings_dict.get("PASSWORD") or ""), safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "localhost"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgresql://{auth}{host}{port}/{quote(str(settings_dict['NAME']), safe='')}"


def purge_queues(queues: str = "cpu,gpu") -> None:
    """Drop messages a previous run left on the broker, so the worker runs only this test's."""
    from instructloop.celery import app

    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in queues.split(","):
            channel.queue_declare(queue=queue, durable=True, auto_delete=False)
            channel.queue_purge(queue)


def messages_on(queue: str) -> list[tuple[str, list[Any]]]:
    """The (task name, args) of the messages waiting on broker queue `queue`, taken off it: where
    a message was really routed (Redis, or the embedded filesystem broker)."""
    from instructloop.celery import app

    found = []
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            found.append((message.headers["task"], list(message.decode()[0])))
    return found


@pytest.fixture
def celery_worker(transactional_db, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A real worker on this test's database and broker; stopped (and checked) at teardown."""
    from django.db import connection

    purge_queues()
    env = dict(os.environ, DATABASE_URL=database_url(connection.settings_dict))
    env.pop("TEST_DATABASE_NAME", None)
    # Stopped before transactional_db's teardown flushes the tables (fixture order).
    worker = start_worker(env=env, log_path=tmp_path / "celery-worker.log")
    try:
        yield worker
    finally:
        worker.stop()
