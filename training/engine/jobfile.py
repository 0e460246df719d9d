"""The files through which a worker and `python -m training.engine` talk (no torch here).

In the run directory: JOB_FILE ({"config": ..., "data": ...}), written by the worker before it
starts the engine process and removed when the run is over (it holds the run's labeled data);
OUTCOME_FILE (the stage's result) or FAILURE_FILE ({"type", "traceback"}), written by the engine
process; LOG_FILE, the process's stdout and stderr. Progress goes on a pipe of its own, one JSON
line per call ({"step", "total_steps", "metrics"}), so that whatever a library prints cannot be
taken for progress.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

JOB_FILE, OUTCOME_FILE, FAILURE_FILE, LOG_FILE = (
    "job.json",
    "outcome.json",
    "failure.json",
    "engine.log",
)


def rank_failure_file(rank: int) -> str:
    """Where a rank writes its failure: FAILURE_FILE for rank 0 (and a single process)."""
    return FAILURE_FILE if rank == 0 else f"failure-rank-{rank}.json"


def write_json(path: Path, value: Any) -> None:
    """Write `value` as JSON to `path` atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def progress_line(step: int, total_steps: int, metrics: dict[str, Any]) -> bytes:
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    return (
        json.dumps({"step": step, "total_steps": total_steps, "metrics": numbers}) + "\n"
    ).encode()
