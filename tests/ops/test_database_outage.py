"""A database outage: the JSON API answers JSON 503 with Retry-After, never Django's HTML 500.

The real WSGI application (instructloop.wsgi, the lean /api/v1/ stack) runs in a subprocess whose
DATABASE_URL names a database that cannot be reached: PostgreSQL on a closed port, or SQLite in
a folder that does not exist. Every connection attempt really fails; nothing is mocked. Before,
each call answered Django's HTML 500 page (909 of them in 13 s during an outage).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.embedded

REPO_ROOT = Path(__file__).resolve().parents[2]

# Calls the WSGI application with real environs and prints what each answered. The last case
# adds Django's LoginRequiredMiddleware to the API's stack: a middleware that reads the session
# (as an authentication middleware would) meets the outage before any DRF view runs.
CALLS = r"""
import json, sys
import django
django.setup()
from django.conf import settings
from django.test import RequestFactory
from instructloop.wsgi import Application

SESSION = {"HTTP_COOKIE": "sessionid=" + "x" * 32}
CASES = [
    ("token", "POST", "/api/v1/projects/1/next/", {"HTTP_AUTHORIZATION": "Token " + "0" * 40}),
    ("session", "GET", "/api/v1/projects/", SESSION),
    ("page", "GET", "/", SESSION),
]


def call(application, method, path, headers):
    environ = RequestFactory().generic(
        method, path, '{"kind": "ranking"}', content_type="application/json",
        HTTP_HOST="localhost", **headers,
    ).environ
    answer = {}

    def start_response(status, response_headers, exc_info=None):
        answer["status"] = int(status.split()[0])
        answer["headers"] = {k.lower(): v for k, v in response_headers}

    answer["body"] = b"".join(application(environ, start_response)).decode()
    return answer


application = Application()
out = {name: call(application, *case) for name, *case in CASES}
settings.API_MIDDLEWARE = [
    *settings.API_MIDDLEWARE, "django.contrib.auth.middleware.LoginRequiredMiddleware"
]
out["middleware"] = call(Application(), "GET", "/api/v1/projects/", SESSION)
print(json.dumps(out))
"""


@pytest.mark.parametrize(
    "database_url",
    ["postgres://postgres@127.0.0.1:1/nowhere", "sqlite:////nonexistent-instructloop/db.sqlite3"],
    ids=["postgresql-port-closed", "sqlite-folder-missing"],
)
def test_api_calls_during_a_database_outage_answer_json_503_with_retry_after(
    tmp_path, database_url
):
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"TEST_DATABASE_NAME", "DEBUG"}},
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": "",
        "INSTRUCTLOOP_VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "instructloop.settings",
        "DEBUG": "0",  # as in production: handler500 answers what DRF does not catch
        "LOG_LEVEL": "CRITICAL",
    }
    done = subprocess.run(
        [sys.executable, "-c", CALLS],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("token", "session", "middleware"):
        answer = answers[name]
        assert answer["status"] == 503, (name, answer)
        assert answer["headers"]["content-type"] == "application/json", (name, answer)
        assert answer["headers"]["retry-after"] == "5"
        assert json.loads(answer["body"]) == {
            "detail": "The database is unavailable; retry in a few seconds."
        }
    # Pages keep Django's HTML error page (the issue is the API's answer to scripts).
    assert answers["page"]["status"] == 500
    assert answers["page"]["headers"]["content-type"].startswith("text/html")
