"""The README's set-up promises: two commands, CI runs the second, every setting listed."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

# Independent of the database and broker in use: one pass of ./dev test is enough.
pytestmark = pytest.mark.embedded

REPO_ROOT = Path(__file__).resolve().parents[2]
README = (REPO_ROOT / "README.md").read_text()


def quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1]
    block = section.split("```", 2)[1]
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_quick_start_is_two_commands_set_up_and_test():
    assert quick_start_commands() == ["./dev up", "./dev test"]


def test_ci_runs_the_readme_test_command_and_fails_on_errors():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert ci.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in ci
    assert quick_start_commands()[1] in ci.splitlines()
    assert os.access(REPO_ROOT / ".ci" / "run", os.X_OK)


def test_the_dev_script_parses_and_refuses_unknown_commands():
    dev = REPO_ROOT / "dev"
    assert os.access(dev, os.X_OK)
    assert subprocess.run(["bash", "-n", str(dev)], capture_output=True).returncode == 0
    unknown = subprocess.run([str(dev), "frobnicate"], capture_output=True, text=True)
    assert unknown.returncode == 2
    assert "./dev up" in unknown.stdout


def test_every_environment_variable_settings_read_is_in_the_readme_configuration_table():
    source = (REPO_ROOT / "instructloop" / "settings.py").read_text()
    read = set(re.findall(r'(?:os\.environ\.get|env_bool|env_int|env_list)\(\s*"(\w+)"', source))
    assert {"DATABASE_URL", "SECRET_KEY", "DEBUG", "CELERY_BROKER_URL"} <= read
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(\w+)`", table, re.M))
    assert read - listed == set()


def test_the_quick_start_says_how_long_each_step_takes():
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    for step in ("Install", "until the site answers", "tiny base model", "SmolLM2"):
        row = next((line for line in section.splitlines() if line.startswith(f"| {step}")
                    or (line.startswith("|") and step in line)), None)  # fmt: skip
        assert row is not None and row.count("|") == 3, step


def test_the_deployment_guide_says_two_gunicorns_on_a_host_need_their_own_control_socket():
    guide = (REPO_ROOT / "docs" / "deployment.md").read_text()
    assert "--control-socket" in guide and "Two gunicorns" in guide
