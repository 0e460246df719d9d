"""The embedded default: with no DATABASE_URL or CELERY_BROKER_URL, InstructLoop runs on SQLite
and a filesystem broker under INSTRUCTLOOP_VAR_DIR. Everything here runs the real commands in
subprocesses on a fresh var directory, the way `./dev up` does.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from ..worker import start_worker, wait_until

pytestmark = pytest.mark.embedded

REPO_ROOT = Path(__file__).resolve().parents[2]
UNSET = ("DATABASE_URL", "CELERY_BROKER_URL", "TEST_DATABASE_NAME", "INSTRUCTLOOP_MODE", "DEBUG")

COUNTS = """
import json
from django.contrib.auth import get_user_model
from labeling.models import Membership, ModelVersion, Project, Prompt, Task
project = Project.objects.get(slug="demo")
print(json.dumps({
    "users": get_user_model().objects.count(),
    "projects": Project.objects.count(),
    "memberships": Membership.objects.count(),
    "prompts": Prompt.objects.count(),
    "demonstration_tasks": Task.objects.filter(kind="demonstration").count(),
    "ranking_tasks": Task.objects.filter(kind="ranking").count(),
    "ranking_ks": sorted({t.completions.count() for t in Task.objects.filter(kind="ranking")}),
    "base_model": [project.base_model.kind, project.base_model.path],
    "model_versions": ModelVersion.objects.count(),
    "roles": sorted(Membership.objects.values_list("role", flat=True).distinct()),
}))
"""

# A labeler takes a task three hours ago and walks away: the lease is long expired.
ABANDON_A_LEASE = """
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.utils import timezone
from labeling import queue
from labeling.models import Project, Task
lease = queue.claim_next(
    user_id=get_user_model().objects.get(username="labeler1").pk,
    project=Project.objects.get(slug="demo"),
    kind=Task.Kind.DEMONSTRATION,
    now=timezone.now() - timedelta(hours=3),
)
print(lease.pk)
"""

SEND_HOUSEKEEPING = """
from labeling.tasks import expire_stale_leases
expire_stale_leases.delay()
"""


@pytest.fixture(scope="module")
def embedded_env(tmp_path_factory) -> dict[str, str]:
    """The environment of a fresh install: nothing set but the var directory, migrated."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env["INSTRUCTLOOP_VAR_DIR"] = str(tmp_path_factory.mktemp("embedded-var"))
    manage(env, "migrate", "--noinput")
    return env


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def shell(env: dict[str, str], code: str) -> str:
    return manage(env, "shell", "--no-imports", "-c", code).strip()


def test_the_embedded_default_uses_sqlite_and_the_filesystem_broker_under_the_var_dir(
    embedded_env,
):
    var_dir = Path(embedded_env["INSTRUCTLOOP_VAR_DIR"])
    assert (var_dir / "instructloop.sqlite3").is_file()
    assert (var_dir / "broker" / "queue").is_dir()


def test_seed_demo_twice_gives_the_same_demo_project(embedded_env):
    first_output = manage(embedded_env, "seed_demo")
    first = json.loads(shell(embedded_env, COUNTS))
    manage(embedded_env, "seed_demo")
    second = json.loads(shell(embedded_env, COUNTS))

    assert first == second
    assert first["projects"] == 1
    assert first["users"] == 4
    assert first["roles"] == ["admin", "labeler", "reviewer"]
    assert first["prompts"] == 40
    assert first["demonstration_tasks"] >= 30  # test-split prompts get no demonstration task
    assert first["ranking_tasks"] >= 4
    assert first["ranking_ks"] == [4]
    assert first["base_model"] == ["base", "tiny-base"]
    for username in ("admin", "reviewer", "labeler1", "labeler2"):
        assert username in first_output


def smol_ready(env: dict[str, str]) -> bool:
    """Whether the demo's SmolLM2 registration is ready (a failed one fails the test). Read from
    the SQLite file itself: a `manage.py shell` per poll cost a core's second of Django start-up
    each time, which the worker, dequantising on the other core, had to share."""
    database = Path(env["INSTRUCTLOOP_VAR_DIR"]) / "instructloop.sqlite3"
    with contextlib.closing(sqlite3.connect(database, timeout=20)) as connection:
        status, error = connection.execute(
            "SELECT status, error FROM training_modelregistration WHERE name = ?",
            ["smollm2-135m-instruct"],
        ).fetchone()
    assert status != "failed", error
    return status == "ready"


def test_a_worker_on_the_filesystem_broker_registers_smollm2_runs_housekeeping_and_stops(
    embedded_env, tmp_path
):
    manage(embedded_env, "seed_demo")
    lease_id = int(shell(embedded_env, ABANDON_A_LEASE))
    status = f"from labeling.models import Lease; print(Lease.objects.get(pk={lease_id}).status)"
    assert shell(embedded_env, status) == "active"

    worker = start_worker(env=embedded_env, log_path=tmp_path / "worker.log")
    try:
        shell(embedded_env, SEND_HOUSEKEEPING)
        # As after `./dev up`: the worker also dequantises the demo's SmolLM2 (queued by
        # seed_demo) into a registered Llama base model; one solo worker does both in turn.
        wait_until(lambda: smol_ready(embedded_env), timeout=240, interval=0.5)
        wait_until(lambda: shell(embedded_env, status) == "released", timeout=60)
        assert "labeling.tasks.expire_stale_leases" in worker.log()
    finally:
        returncode = worker.stop()
    assert returncode == 0, worker.log()


def test_gunicorn_serves_the_embedded_site_and_a_demo_account_can_log_in(embedded_env, tmp_path):
    manage(embedded_env, "seed_demo")
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "instructloop.wsgi:application",
                "--bind=127.0.0.1:0",
                "--workers=1",
                f"--control-socket={tmp_path / 'gunicorn.ctl'}",
            ],
            cwd=REPO_ROOT,
            env=embedded_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        listening = wait_until(
            lambda: re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", log_path.read_text()),
            timeout=60,
        )
        base = listening.group(1)
        browser = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        login_page = browser.open(f"{base}/django-admin/login/", timeout=10).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page).group(1)
        form = {"csrfmiddlewaretoken": token, "username": "admin", "password": "demo-admin-pw"}
        response = browser.open(
            f"{base}/django-admin/login/?next=/django-admin/",
            data=urllib.parse.urlencode(form).encode(),
            timeout=10,
        )
        assert response.url == f"{base}/django-admin/"
        assert "Log out" in response.read().decode()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
