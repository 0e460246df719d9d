"""The bench scripts start (their --help), import only platform names that exist, keep their
docstrings short (results live in docs/benchmarks.md), and the loop study and the GPU bench run
every mode or stage on a toy model."""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Subprocesses of their own, independent of the database and broker: one pass of ./dev test.
pytestmark = pytest.mark.embedded

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH = REPO_ROOT / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name != "common.py")
FIRST_PARTY = {"accounts", "bench", "instructloop", "labeling", "training"}


def _python(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_the_bench_holds_the_scripts_the_docs_name():
    assert [p.name for p in SCRIPTS] == [
        "artifact_store.py", "closed_loop.py", "distributed.py", "gpu.py", "labeler_keys.py",
        "labeler_loop.py", "login_throttle.py", "loop_study.py", "nodes.py", "scale.py",
        "training.py", "trl_reference.py",
    ]  # fmt: skip


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_the_script_prints_its_usage(script):
    done = _python(str(script), "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {script.name}")


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_the_docstring_says_what_and_how_in_at_most_20_lines(script):
    first = ast.parse(script.read_text()).body[0]
    assert isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    assert isinstance(first.value.value, str)
    assert first.end_lineno is not None and first.end_lineno - first.lineno + 1 <= 20


def _platform_imports(script: Path) -> list[tuple[str, str | None]]:
    """(module, name) of every import from this repository, at any depth (closed_loop imports the
    platform inside main, after django.setup(), where --help does not reach)."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in FIRST_PARTY:
                found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.split(".")[0] in FIRST_PARTY]
    return found


RESOLVE = """
import importlib, json, sys
import django
django.setup()
missing = []
for module, name in json.loads(sys.stdin.read()):
    try:
        imported = importlib.import_module(module)
        if name and not hasattr(imported, name):
            importlib.import_module(f"{module}.{name}")
    except ImportError as error:
        missing.append(f"{module}.{name or ''}: {error}")
print(json.dumps(missing))
"""


def test_every_platform_name_a_script_imports_exists():
    wanted = sorted({pair for script in SCRIPTS for pair in _platform_imports(script)}, key=str)
    assert ("training.runs", "ranking_groups") in wanted
    done = subprocess.run(
        [sys.executable, "-c", RESOLVE], cwd=REPO_ROOT, capture_output=True, text=True,
        input=json.dumps(wanted), timeout=300,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "instructloop.settings"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


SMOKE = """
import sys
import torch
torch.set_num_threads(1)
from bench.loop_study import main
world = ["--out", sys.argv[1], "--model", sys.argv[2], "--prompts", "60", "--sft-steps", "2",
         "--rank-samples", "4"]
ppo = ["--episodes", "16", "--batch-size", "16", "--eval-k", "2"]
main(["ppo", *world, *ppo])
main(["ppo", *world, *ppo, "--after", "ppo", "--tag", "round-2", "--reward", "the"])
main(["ceiling", *world, *ppo, "--rewards", "gold,rm,the", "--zero-value-head"])
main(["rm-probe", *world, "lr=3e-4,epochs=2", "init=base,k=3"])
"""


@pytest.mark.slow
def test_the_loop_study_runs_every_mode_on_a_toy_model(tmp_path):
    from tests.training.engine.toy_model import build_toy_model

    model = build_toy_model(tmp_path / "toy-model", dropout=0.0)
    done = _python("-c", SMOKE, str(tmp_path / "study"), str(model), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.count("gold win rate over SFT, first answer per test prompt:") == 2
    assert "round 2: " in out and "ranking tasks from ppo and SFT" in out
    assert "oracle win rate" in out and all(f"\n{r} " in out for r in ("gold", "rm", "the"))
    assert "lr=3e-4,epochs=2: " in out and "init=base,k=3: " in out
    assert {"sft", "ppo", "round-2", "ceiling-gold", "ceiling-rm", "ceiling-the"} <= {
        p.name for p in (tmp_path / "study").iterdir()
    }


# The figure each stage of bench/gpu.py is about; TRL's stages say "skipped" where trl is missing.
GPU_FIGURES = {
    "sft": "tokens_per_s", "reward": "pairs_per_s", "dpo": "pairs_per_s", "ppo": "episodes_per_s",
    "critic_free": "episodes_per_s", "sample": "tokens_per_s", "trl-sft": "tokens_per_s",
    "trl-reward": "pairs_per_s", "trl-grpo": "episodes_per_s",
}  # fmt: skip


def _numbers(figures: dict) -> list[float]:
    return [
        value
        for value in [*figures.values(), *figures.get("time_share", {}).values()]
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]


@pytest.mark.slow
def test_the_gpu_bench_measures_every_stage_in_a_cpu_smoke_run(tmp_path):
    done = subprocess.run(
        [sys.executable, "bench/gpu.py", "--smoke", "--trl", "--out", str(tmp_path / "gpu.json")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert report == json.loads((tmp_path / "gpu.json").read_text())
    assert list(report["stages"]) == list(GPU_FIGURES)
    labels = ("SFT ", "reward ", "DPO ", "PPO ", "critic-free ", "sampling ", "TRL SFT ",
              "TRL reward ", "TRL GRPO ")  # fmt: skip
    for label in labels:
        assert sum(line.startswith(label) for line in lines) == 1, label
    for stage, figures in report["stages"].items():
        if stage.startswith("trl-") and "skipped" in figures:
            assert "trl does not import" in figures["skipped"]
            continue
        assert figures[GPU_FIGURES[stage]] > 0 and figures["peak_memory_mb"] > 0, stage
        assert all(math.isfinite(value) for value in _numbers(figures)), stage
    assert report["stages"]["sft"]["mfu"] is None  # no GPU peak to measure against on a CPU


def test_the_gpu_bench_refuses_a_config_field_that_does_not_exist():
    done = _python("bench/gpu.py", "--smoke", "--set", "sft.no_such_field=1")
    assert done.returncode == 2
    assert "SFTConfig has no field no_such_field" in done.stderr
    assert "built the random model" not in done.stdout


def test_the_closed_loop_drives_the_platform_only_through_its_api():
    """Issue 16: no in-process service call. Besides the client it may import only the demo
    world (suites, crowd, the HTTP crowd), the pure statistics, the bench's helpers and the tiny
    model's builders (which write files, before the server starts)."""
    allowed = {
        "instructloop.client", "labeling.stats", "bench.common", "bench.loop_study",
        "training.demo.suites", "training.demo.crowd", "training.demo.http_crowd",
        "training.demo.base_model", "training.demo.smollm2",
    }  # fmt: skip
    pairs = _platform_imports(BENCH / "closed_loop.py")
    outside = [(m, n) for m, n in pairs if m not in allowed and f"{m}.{n}" not in allowed]
    assert ("instructloop.client", "Client") in pairs
    assert outside == [], outside
    assert "django" not in (BENCH / "closed_loop.py").read_text()
