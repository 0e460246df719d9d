"""First start (issue 18): `./dev up` answers within a minute of its install step while the tiny
base model builds in the background (the runs page says how far it is), the banner links the
demo project where it is, and /favicon.ico is found."""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client

REPO_ROOT = Path(__file__).resolve().parents[2]
UNSET = ("DATABASE_URL", "CELERY_BROKER_URL", "TEST_DATABASE_NAME", "INSTRUCTLOOP_MODE", "DEBUG")


@pytest.mark.django_db
def test_favicon_ico_is_found_and_every_page_links_the_icon(client: Client):
    response = client.get("/favicon.ico")
    assert response.status_code == 302 and response["Location"].endswith("favicon.ico")
    icon = (REPO_ROOT / "static" / "favicon.ico").read_bytes()
    assert icon[:4] == b"\x00\x00\x01\x00"  # an ICO file
    page = client.get("/accounts/login/").content.decode()
    assert '<link rel="icon" href="/static/favicon.ico">' in page


@pytest.mark.django_db
def test_the_seeded_demo_is_announced_at_its_real_address(capsys, settings, tmp_path):
    settings.MODEL_ROOT = tmp_path / "models"
    call_command("seed_demo", "--no-real-model")
    out = capsys.readouterr().out
    assert "(/p/demo/)" in out and "(/demo)" not in out
    from django.contrib.auth import get_user_model

    client = Client()
    client.force_login(get_user_model().objects.get(username="admin"))
    assert client.get("/p/demo/").headers["Location"] == "/p/demo/admin/"  # not a 404
    client.force_login(get_user_model().objects.get(username="labeler1"))
    assert client.get("/p/demo/").headers["Location"] == "/"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.embedded
def test_dev_up_answers_within_a_minute_of_its_install_while_the_model_builds(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    port = _free_port()
    env.update(INSTRUCTLOOP_VAR_DIR=str(tmp_path / "var"), PORT=str(port))
    lines: list[tuple[float, str]] = []
    left: list[str] = []
    up = subprocess.Popen(
        ["./dev", "up"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip

    def read() -> None:
        for line in up.stdout:
            lines.append((time.monotonic(), line.rstrip()))

    threading.Thread(target=read, daemon=True).start()

    def when(text: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, line in list(lines):
                if text in line:
                    return at
            if up.poll() is not None:
                break
            time.sleep(0.2)
        pytest.fail(f"no {text!r} within {timeout} s:\n" + "\n".join(x for _, x in lines[-40:]))

    try:
        installed = when("Embedded default", timeout=600)  # the line after the install step
        running = when("InstructLoop is running at", timeout=60)
        assert running - installed < 60
        banner = "\n".join(line for _, line in lines)
        assert f"http://127.0.0.1:{port}/p/demo/runs/ shows how far it is" in banner
        assert (tmp_path / "var" / "logs" / "tiny-model.log").exists()

        base = f"http://127.0.0.1:{port}"
        browser = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        login = browser.open(f"{base}/accounts/login/", timeout=10).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login).group(1)
        form = {"csrfmiddlewaretoken": token, "username": "admin", "password": "demo-admin-pw"}
        browser.open(f"{base}/accounts/login/", data=urllib.parse.urlencode(form).encode(),
                     timeout=10)  # fmt: skip
        runs = browser.open(f"{base}/p/demo/runs/", timeout=30).read().decode()
        assert "tiny-base is being built" in runs and "Runs and rounds from it wait" in runs
    finally:
        os.killpg(up.pid, signal.SIGINT)  # Ctrl+C
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        left = _left_in_group(up.pid, wait=10)
        if left:
            os.killpg(up.pid, signal.SIGKILL)
    # Ctrl+C stopped everything it started, the builder and the worker's beat included, and the
    # builder removed its report on the way out.
    assert not left, f"processes left running after Ctrl+C: {left}"
    assert not list((tmp_path / "var" / "models").glob(".tiny-base.progress.json"))


def _left_in_group(pgid: int, *, wait: float) -> list[str]:
    deadline = time.monotonic() + wait
    while True:
        left = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(pgid)], capture_output=True,
                              text=True).stdout.strip().splitlines()  # fmt: skip
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)
