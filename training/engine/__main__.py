"""`python -m training.engine KIND --run-dir DIR`: run one stage in a process of its own.

The worker (training/launcher.py) writes DIR/job.json ({"config": ..., "data": ...}), starts this,
reads one JSON line per progress call from stdout ({"step", "total_steps", "metrics"}), and stops
it with SIGTERM when the run is cancelled. On success the stage's result goes to DIR/outcome.json;
on an exception its type and traceback go to DIR/failure.json (the worker records them on the run)
and the exit status is 1. Nothing here knows Django: the engine reads plain data only.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _emit(step: int, total_steps: int, metrics: dict[str, float]) -> None:
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    line = json.dumps({"step": step, "total_steps": total_steps, "metrics": numbers})
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.engine", description=__doc__)
    parser.add_argument("kind", help="the stage: a module of training.engine (sft, reward, ...)")
    parser.add_argument("--run-dir", type=Path, required=True, help="holds job.json")
    args = parser.parse_args(argv)
    job = json.loads((args.run_dir / "job.json").read_text())
    try:
        stage = importlib.import_module(f"training.engine.{args.kind}")
        result = stage.run(stage.Config.from_dict(job["config"]), job["data"], on_progress=_emit)
    except Exception as exc:  # noqa: BLE001 - the worker records every failure on the run
        failure = {"type": type(exc).__name__, "traceback": traceback.format_exc()}
        _write_json(args.run_dir / "failure.json", failure)
        print(failure["traceback"], file=sys.stderr)
        return 1
    _write_json(args.run_dir / "outcome.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
