"""Settings safety: production refuses unsafe or malformed configuration (BAD-INPUTS 27).

Each case starts the real entry point (`manage.py check`) in a subprocess with a controlled
environment, since settings are read once per process.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from instructloop.settings import DEV_SECRET_KEY

# Each case sets its own environment, so one pass of ./dev test is enough.
pytestmark = pytest.mark.embedded

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "labels.example.com"


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    """Nothing from the caller's environment that settings read, only what Python needs."""
    keep = {"PATH", "HOME", "LANG", "LC_ALL", "SYSTEMROOT", "TMPDIR"}
    env = {key: value for key, value in os.environ.items() if key in keep}
    env["INSTRUCTLOOP_VAR_DIR"] = str(tmp_path / "var")
    return env


@pytest.fixture
def production_env(base_env: dict[str, str]) -> dict[str, str]:
    return base_env | {
        "INSTRUCTLOOP_MODE": "production",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": HOST,
    }


def setting(env: dict[str, str], name: str, value: str | None) -> dict[str, str]:
    """`env` with `name` set to `value`, or without `name` when `value` is None."""
    changed = {key: v for key, v in env.items() if key != name}
    return changed if value is None else changed | {name: value}


def run(env: dict[str, str], *args: str, script: str | None = None):
    command = [sys.executable, "-c", script] if script else [sys.executable, "manage.py", *args]
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def assert_refused(result, name: str) -> None:
    assert result.returncode != 0, result.stdout + result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert "ImproperlyConfigured" in last_line, result.stderr
    assert name in last_line, result.stderr


def test_the_embedded_default_starts_with_nothing_set(base_env):
    result = run(base_env, "check")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_with_debug_on(production_env):
    assert_refused(run(production_env | {"DEBUG": "1"}, "check"), "DEBUG")


@pytest.mark.parametrize(
    "secret_key",
    [None, "", DEV_SECRET_KEY, "django-insecure-" + "x7" * 30, "short-key", "a" * 60],
    ids=["missing", "empty", "dev-default", "insecure-prefix", "short", "one-character"],
)
def test_production_refuses_to_start_without_a_real_secret_key(production_env, secret_key):
    assert_refused(run(setting(production_env, "SECRET_KEY", secret_key), "check"), "SECRET_KEY")


@pytest.mark.parametrize("hosts", [None, "", " , "], ids=["missing", "empty", "only-commas"])
def test_production_refuses_to_start_without_allowed_hosts(production_env, hosts):
    assert_refused(run(setting(production_env, "ALLOWED_HOSTS", hosts), "check"), "ALLOWED_HOSTS")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEBUG", "maybe"),
        ("DATABASE_URL", "nonsense"),
        ("DATABASE_URL", "mysql://user@db/instructloop"),
        ("DATABASE_URL", "postgres://db:5432"),
        ("CELERY_BROKER_URL", "nonsense"),
        ("INSTRUCTLOOP_MODE", "prod"),
        ("SECURE_HSTS_SECONDS", "a year"),
        ("DATA_UPLOAD_MAX_MEMORY_SIZE", "-5"),
        ("LOG_LEVEL", "loud"),
        ("INSTRUCTLOOP_LOGIN_FAILURE_LIMIT", "0"),
        ("INSTRUCTLOOP_LOGIN_COOLOFF_SECONDS", "soon"),
        ("INSTRUCTLOOP_TOKEN_DAYS", "-1"),
        ("INSTRUCTLOOP_PUBLIC_API_SCHEMA", "maybe"),
        ("INSTRUCTLOOP_TRUSTED_PROXIES", "one"),
        ("INSTRUCTLOOP_ARTIFACTS", "gs://bucket/prefix"),
        ("INSTRUCTLOOP_ARTIFACTS", "relative/folder"),
    ],
)
def test_a_malformed_value_stops_start_up_naming_the_variable(production_env, name, value):
    assert_refused(run(production_env | {name: value}, "check"), name)


def test_a_refused_broker_url_does_not_echo_its_password(base_env):
    result = run(base_env | {"CELERY_BROKER_URL": "amqp://user:hunter2-secret@mq//"}, "check")
    assert_refused(result, "CELERY_BROKER_URL")
    assert "hunter2-secret" not in result.stderr


def test_a_good_production_environment_passes_the_deployment_checks(production_env):
    result = run(production_env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


SCHEMA_AND_PROXIES = """
import os
os.environ["DJANGO_SETTINGS_MODULE"] = "instructloop.settings"
from django.conf import settings
print(settings.API_SCHEMA_PUBLIC, settings.TRUSTED_PROXIES)
"""


def test_production_closes_the_schema_and_trusts_one_proxy_unless_told_otherwise(
    base_env, production_env
):
    def read(env):
        result = run(env, script=SCHEMA_AND_PROXIES)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert read(base_env) == ["True", "0"]
    assert read(production_env) == ["False", "1"]
    told = {"INSTRUCTLOOP_PUBLIC_API_SCHEMA": "1", "INSTRUCTLOOP_TRUSTED_PROXIES": "2"}
    assert read(production_env | told) == ["True", "2"]


# A real failure, not a planted view: the database is unreachable, so the session lookup behind
# /django-admin/ raises OperationalError inside the request.
FORCED_500 = f"""
import os
import django
os.environ["DJANGO_SETTINGS_MODULE"] = "instructloop.settings"
django.setup()
from django.test import Client
client = Client(raise_request_exception=False)
client.cookies["sessionid"] = "x" * 32
response = client.get("/django-admin/", secure=True, headers={{"host": "{HOST}"}})
print(response.status_code)
print(response.content.decode())
"""
UNREACHABLE_DB = "postgres://postgres@127.0.0.1:1/instructloop"


def test_a_server_error_in_production_shows_no_traceback(production_env):
    result = run(production_env | {"DATABASE_URL": UNREACHABLE_DB}, script=FORCED_500)
    assert result.returncode == 0, result.stderr
    status, _, body = result.stdout.partition("\n")
    assert status == "500"
    for leak in ("Traceback", "OperationalError", "127.0.0.1", "psycopg", "settings"):
        assert leak not in body


def test_the_same_server_error_in_development_does_show_the_traceback(base_env):
    # The control for the test above: the probe does reach a failing request.
    env = base_env | {"DATABASE_URL": UNREACHABLE_DB, "ALLOWED_HOSTS": HOST}
    result = run(env, script=FORCED_500)
    status, _, body = result.stdout.partition("\n")
    assert status == "500"
    assert "OperationalError" in body
