"""The boundaries of ../shared/ARCHITECTURE.md, enforced.

- `labeling/` (the human side) never imports `training`; `accounts/` (who you are: API tokens,
  login lockout) imports neither `labeling` nor `training`;
- `training/engine/` imports neither Django, DRF, Celery, `labeling`, nor `training` outside the
  engine (it runs in a plain Python process: `python -m training.engine`, a test with
  `-p no:django`, later torchrun);
- `training/demo/` (the synthetic world) imports no Django;
- the web process never loads torch: after importing every URL and view module, `torch` is not
  in `sys.modules`.
An import anywhere in a module counts, at module level or inside a function.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imports_of(path: Path, root: Path = ROOT) -> set[str]:
    """Every module a file imports, anywhere in it, as dotted names (relative ones resolved)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "migrations" not in p.parts)


def offenders(
    folder: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = (), root: Path = ROOT
) -> dict:
    bad = {}
    for path in python_files(root / folder):
        hits = sorted(
            name
            for name in imports_of(path, root)
            if any(name == f or name.startswith(f + ".") for f in forbidden)
            and not any(name == a or name.startswith(a + ".") for a in allowed)
        )
        if hits:
            bad[str(path.relative_to(root))] = hits
    return bad


def test_the_scan_sees_imports_at_any_depth_and_relative_ones(tmp_path):
    """The scanner itself, on a probe package (a check that cannot fail is a defect)."""
    (tmp_path / "labeling").mkdir()
    probe = tmp_path / "labeling" / "probe.py"
    probe.write_text("from training import runs\n\ndef f():\n    from ..training.models import X\n")
    assert {"training", "training.runs", "training.models"} <= imports_of(probe, tmp_path)
    assert offenders("labeling", ("training",), root=tmp_path) == {
        "labeling/probe.py": ["training", "training.models", "training.models.X", "training.runs"]
    }


def test_accounts_imports_nothing_from_labeling_or_training():
    assert offenders("accounts", ("labeling", "training")) == {}


def test_labeling_imports_nothing_from_training():
    assert offenders("labeling", ("training",)) == {}


def test_the_engine_imports_no_django_no_labeling_and_nothing_of_training_outside_it():
    forbidden = ("django", "rest_framework", "celery", "labeling", "instructloop", "training")
    assert offenders("training/engine", forbidden, allowed=("training.engine",)) == {}


def test_the_demo_world_imports_no_django():
    forbidden = ("django", "rest_framework", "celery", "instructloop")
    assert offenders("training/demo", forbidden) == {}


def test_the_web_process_never_loads_torch():
    """In a fresh interpreter: django.setup(), every URL pattern resolved (which imports the view
    modules), then every module of labeling/ and training/ outside the engine, the demo world and
    the migrations. Torch and transformers belong to the worker's engine only."""
    script = """
import importlib, json, pkgutil, sys
import django
django.setup()
from django.urls import get_resolver
get_resolver().url_patterns
skip = ("training.engine", "training.demo", "labeling.migrations", "training.migrations",
        "accounts.migrations")

def walk(package):  # pkgutil.walk_packages would import the skipped packages to look inside
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__, package + "."):
        if info.name.startswith(skip):
            continue
        importlib.import_module(info.name)
        if info.ispkg:
            walk(info.name)

walk("accounts")
walk("labeling")
walk("training")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "transformers"})))
"""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "instructloop.settings"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
