"""`python -m training.engine KIND --run-dir DIR [--progress-fd N]`: one stage in a process of
its own (the worker's launcher starts it; see training/engine/jobfile.py for the files).

It reads DIR/job.json, writes one JSON line per progress call to the file descriptor it was
given, and on success the stage's result to DIR/outcome.json; on an exception its type and
traceback to DIR/failure.json, with exit status 1. It stops when the worker that started it dies
(Linux: a parent-death signal) and on SIGTERM (a cancel); the stage's checkpoints are atomic.
Nothing here knows Django: the engine reads plain data only.

Started as one of N ranks (RANK, WORLD_SIZE set: training/engine/distributed.py), only rank 0 is
given the progress descriptor and writes the outcome; a rank that fails writes its failure to
failure.json (rank 0) or failure-rank-R.json.
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import importlib
import json
import os
import signal
import sys
import traceback
from pathlib import Path

from training.engine.distributed import world_from_env
from training.engine.jobfile import (
    JOB_FILE,
    OUTCOME_FILE,
    progress_line,
    rank_failure_file,
    write_json,
)

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """SIGTERM this process when the worker that started it dies (a SIGKILLed worker must not
    leave an engine holding a GPU and writing into a run directory a new attempt uses)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.engine", description=__doc__)
    parser.add_argument("kind", help="the stage: a module of training.engine (sft, reward, ...)")
    parser.add_argument("--run-dir", type=Path, required=True, help="holds job.json")
    parser.add_argument("--progress-fd", type=int, default=None, help="where progress lines go")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit if it is gone")
    args = parser.parse_args(argv)
    faulthandler.enable(all_threads=True)  # a crash in native code leaves its stacks in the log
    _die_with_parent()
    if args.parent_pid is not None and os.getppid() != args.parent_pid:
        return 1  # the worker died before the parent-death signal was armed
    progress = os.fdopen(args.progress_fd, "wb", buffering=0) if args.progress_fd else None

    def on_progress(step: int, total_steps: int, metrics: dict[str, float]) -> None:
        if progress is not None:
            progress.write(progress_line(step, total_steps, metrics))

    rank = world_from_env().rank
    job = json.loads((args.run_dir / JOB_FILE).read_text())
    try:
        stage = importlib.import_module(f"training.engine.{args.kind}")
        result = stage.run(
            stage.Config.from_dict(job["config"]), job["data"], on_progress=on_progress
        )
    except Exception as exc:  # noqa: BLE001 - the worker records every failure on the run
        failure = {"type": type(exc).__name__, "traceback": traceback.format_exc()}
        write_json(args.run_dir / rank_failure_file(rank), failure)
        print(failure["traceback"], file=sys.stderr)
        return 1
    if rank == 0:
        write_json(args.run_dir / OUTCOME_FILE, result)
    return 0


def _exit(code: int) -> None:
    """Leave without the interpreter's teardown when this is one of several ranks. Everything
    the stage writes is on disk by now (outcome and checkpoints are atomic, progress unbuffered).
    What remains is the gloo process group: FSDP2 keeps it referenced after
    destroy_process_group, so its native threads and the work objects that hold tensors are
    destroyed at interpreter finalization, which can abort the process ("terminate called without
    an active exception", seen in CI on a rank that had finished). A SIGABRT there would fail a
    run that succeeded, or name a signal instead of the exception that failed it. A world of one
    exits normally."""
    if world_from_env().sharded:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _exit(main())
