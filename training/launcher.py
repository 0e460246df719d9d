"""Executes a run for the worker that claimed it: builds the stage's config and plain records from
the database, runs the engine, and reports progress, metrics and the outcome back to the run row.

Two ways to run the engine (settings.TRAINING_LAUNCHER):
- "inprocess": `training.engine.<kind>.run(cfg, data, on_progress=...)` in the worker itself;
- "subprocess": `python -m training.engine KIND --run-dir DIR` as a child process. The worker
  writes the job (config + records) into the run's directory, reads the child's progress lines,
  keeps the run's lease alive meanwhile, stops the child when an admin cancels or the lease is
  lost, and reads the outcome the child wrote. A child that dies (out of memory, a crash in
  native code) fails its run with the reason and leaves the worker standing; the engine's own
  checkpoints make the retry resume.
- several processes (a run's `processes`, or the worker's TRAINING_PROCESSES): N copies of the
  same command with torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT on
  127.0.0.1), what `torchrun --standalone --nproc-per-node N` sets up, started here rather than
  by torchrun because its agent closes the descriptors the progress pipe needs. They share one
  process group: a cancel stops them all, and a rank that dies stops the others at once (as
  torchrun's agent does) and fails the run with its exit (a SIGKILL is retried, as an OOM-kill:
  the retry resumes from the last sharded checkpoint).

Either way a background thread extends the run's lease while the engine loads a model or runs a
long step; a run whose lease lapses (its worker was killed) is put back on the queue by
`requeue_stale_runs` (beat) and resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from labeling import exports
from labeling.errors import Invalid
from labeling.models import Prompt
from training.engine import jobfile

from . import artifacts, loop, runs, stages, storage
from .models import TrainingRun

PROGRESS_EVERY_SECONDS = 1.0
OOM_ERRORS = ("OutOfMemoryError", "MemoryError")


class Cancelled(Exception):
    """Raised from on_progress to stop a stage when an admin cancels the run."""


class TimeLimitExceeded(Exception):
    """Raised from on_progress (or the supervisor's check) once an attempt ran past
    settings.TRAINING_TIME_LIMIT_SECONDS: the run fails with this reason, not retried."""


class EngineFailed(Exception):
    """The engine process ended without an outcome: `error_type` is its exception's class name
    (or "Killed" for a signal), `details` its traceback or the tail of its log."""

    def __init__(self, error_type: str, details: str) -> None:
        super().__init__(f"{error_type}: {details}")
        self.error_type, self.details = error_type, details


@dataclass(frozen=True)
class Job:
    """What the engine needs for one run, as plain data: no ORM object crosses into the engine."""

    kind: str
    config: dict[str, Any]
    data: dict[str, Any]
    run_dir: Path


def job_for(run: TrainingRun) -> Job:
    """The run's resolved config with the server's paths, and its frozen rows as records."""
    stage = stages.stage(run.kind)
    paths = {}
    for field, source in stage.model_paths.items():
        version = run.base_model if source == "base" else run.reward_model
        if version is None:  # run_start refuses this; a row written by hand may not
            raise Invalid(f"The {run.kind} run {run.pk} has no {source} model.")
        paths[field] = storage.model_path(version)
    run_dir = storage.run_dir(run)
    config = {**run.config, **paths, "output_dir": str(run_dir)}
    return Job(kind=run.kind, config=config, data=_records(run), run_dir=run_dir)


def _records(run: TrainingRun) -> dict[str, Any]:
    """The run's frozen dataset as the plain records the stage reads (TRL's shapes)."""
    ds, project = run.dataset, run.project
    data: dict[str, Any] = {}
    if "demonstrations" in ds:
        data["demonstrations"] = [
            {"prompt": r["messages"][:-1], "completion": r["messages"][-1]["content"]}
            for r in exports.sft_records(project=project, ids=ds["demonstrations"])
        ]
    if "rankings" in ds:
        data["rankings"] = [
            {k: r[k] for k in ("prompt", "completions", "ranks", "split")}
            for r in exports.ranking_records(project=project, ids=ds["rankings"])
        ]
    if "prompts" in ds:
        prompts = Prompt.objects.filter(project=project, pk__in=ds["prompts"]).order_by("pk")
        data["prompts"] = [{"prompt": p.messages, "id": p.pk} for p in prompts]
    return data


class Heartbeat:
    """Keeps the run's lease alive between progress calls and buffers metrics for the database.

    `on_progress` raises Cancelled once an admin asked to cancel, and LeaseLost once another
    worker took the run over; `should_stop` says the same without raising (for a supervisor)."""

    def __init__(self, run_id: int, worker: str) -> None:
        self.run_id, self.worker = run_id, worker
        self.step, self.total = 0, 0
        self.pending: list[tuple[int, str, float]] = []
        self.cancel = False
        self.lost: Exception | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last = 0.0
        self._first = True
        self._limit = settings.TRAINING_TIME_LIMIT_SECONDS
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        # Called after each progress report (the engine saved that step's checkpoint before).
        self.after_progress: Callable[[], None] | None = None

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.flush()

    def _loop(self) -> None:
        interval = max(1.0, runs.lease_seconds() / 4)
        while not self._stop.wait(interval):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            points, self.pending = self.pending, []
            try:
                self.cancel = runs.run_progress(
                    run_id=self.run_id, worker=self.worker, step=self.step, total_steps=self.total,
                    metrics=points, now=timezone.now(),
                )  # fmt: skip
            except runs.LeaseLost as exc:
                self.lost = exc
            finally:
                if threading.current_thread() is not threading.main_thread():
                    connection.close()
            self._last = time.monotonic()

    def over_time(self) -> bool:
        return bool(self._limit) and time.monotonic() - self._started > self._limit

    def should_stop(self) -> bool:
        return self.cancel or self.lost is not None or self.over_time()

    def raise_if_stopped(self) -> None:
        if self.lost is not None:
            raise self.lost
        if self.cancel:
            raise Cancelled()
        if self.over_time():
            raise TimeLimitExceeded(
                f"Stopped at step {self.step} of {self.total}: this attempt ran past the time "
                f"limit of {self._limit} s (INSTRUCTLOOP_RUN_TIME_LIMIT_SECONDS). Its last "
                "checkpoint is kept; resume it to go on."
            )

    def on_progress(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        with self._lock:
            if self._first:  # where this attempt started: > 0 after a resume from a checkpoint
                self.pending.append((step, "run/started_at_step", float(step - 1)))
                self._first = False
            self.step, self.total = step, total_steps
            self.pending += [
                (step, name, float(value))
                for name, value in metrics.items()
                if isinstance(value, int | float)
            ]
        if time.monotonic() - self._last >= PROGRESS_EVERY_SECONDS:
            self.flush()
        if self.after_progress is not None:
            self.after_progress()
        self.raise_if_stopped()


def run_in_process(job: Job, beat: Heartbeat) -> dict[str, Any]:
    if processes_for(job) > 1:
        raise Invalid(
            f"This run asks for {processes_for(job)} processes: the worker must run stages as"
            " processes of their own (INSTRUCTLOOP_LAUNCHER=subprocess)."
        )
    engine = importlib.import_module(f"training.engine.{job.kind}")
    return engine.run(engine.Config.from_dict(job.config), job.data, on_progress=beat.on_progress)


def _stop(child: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds: the engine's checkpoints are atomic."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


# What the engine process does not need of the worker's environment: the database, the broker
# and the secret key stay with the worker.
CHILD_ENV_DROPPED = ("SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")


def _log_tail(path: Path, size: int = 4000) -> str:
    with open(path, "rb") as log:
        log.seek(max(0, log.seek(0, os.SEEK_END) - size))
        return log.read().decode(errors="replace")


# The stages that run sharded over several processes (training/engine/distributed.py); the
# others run in one whatever the worker's setting.
SHARDED_STAGES = frozenset({"sft", "reward", "dpo", "ppo", "critic_free"})


def processes_for(job: Job) -> int:
    """How many processes train the run: its config's `processes`, else the worker's setting
    when the run can train in that many (LoRA trains in one; an online stage's batches must
    split evenly), else one."""
    if job.kind not in SHARDED_STAGES:
        return 1
    asked = job.config.get("processes")
    if asked is not None:
        return int(asked)
    worker = int(settings.TRAINING_PROCESSES)
    if worker > 1 and not _can_share(job, worker):
        return 1
    return worker


def _can_share(job: Job, processes: int) -> bool:
    try:
        stages.stage(job.kind).config_class.from_dict({**job.config, "processes": processes})
    except ValueError:  # ConfigError: why not (LoRA, a batch the processes cannot split)
        return False
    return True


def run_in_subprocess(job: Job, beat: Heartbeat) -> dict[str, Any]:
    job.run_dir.mkdir(parents=True, exist_ok=True)
    for name in (jobfile.OUTCOME_FILE, jobfile.FAILURE_FILE):
        (job.run_dir / name).unlink(missing_ok=True)
    for stale in job.run_dir.glob("failure-rank-*.json"):
        stale.unlink()
    if (processes := processes_for(job)) > 1:
        return _run_ranks(job, beat, processes)
    jobfile.write_json(job.run_dir / jobfile.JOB_FILE, {"config": job.config, "data": job.data})
    progress_read, progress_write = os.pipe()
    command = [
        sys.executable, "-m", "training.engine", job.kind, "--run-dir", str(job.run_dir),
        "--progress-fd", str(progress_write), "--parent-pid", str(os.getpid()),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in CHILD_ENV_DROPPED}
    try:
        with (
            open(job.run_dir / jobfile.LOG_FILE, "ab") as log,
            subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(progress_write,),
                cwd=settings.BASE_DIR,
                env=env,
                # Its own session: a Ctrl-C at the worker's terminal reaches the worker, which
                # finishes (or cancels) the job, not the engine behind its back.
                start_new_session=True,
            ) as child,
        ):
            os.close(progress_write)
            try:
                _supervise(child, progress_read, beat)
            except BaseException:
                _stop(child)
                raise
    finally:
        os.close(progress_read)
        (job.run_dir / jobfile.JOB_FILE).unlink(missing_ok=True)  # the run's data stays in the DB
    return _outcome(job, child.returncode)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_ranks(job: Job, beat: Heartbeat, processes: int) -> dict[str, Any]:
    """The stage in `processes` ranks of one process group; rank 0 writes progress and outcome."""
    jobfile.write_json(job.run_dir / jobfile.JOB_FILE, {"config": job.config, "data": job.data})
    progress_read, progress_write = os.pipe()
    base = {k: v for k, v in os.environ.items() if k not in CHILD_ENV_DROPPED}
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                WORLD_SIZE=str(processes), LOCAL_WORLD_SIZE=str(processes))  # fmt: skip
    children: list[subprocess.Popen] = []
    try:
        with open(job.run_dir / jobfile.LOG_FILE, "ab") as log:
            for rank in range(processes):
                command = [
                    sys.executable, "-m", "training.engine", job.kind,
                    "--run-dir", str(job.run_dir), "--parent-pid", str(os.getpid()),
                ]  # fmt: skip
                if rank == 0:
                    command += ["--progress-fd", str(progress_write)]
                children.append(
                    subprocess.Popen(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        pass_fds=(progress_write,) if rank == 0 else (),
                        cwd=settings.BASE_DIR,
                        env={**base, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                        # One new process group, led by rank 0, signalled as one (a group,
                        # not a new session: a process may join only a group of its own
                        # session). Like one engine's session, it keeps a Ctrl-C at the
                        # worker's terminal from reaching the ranks behind the worker's back.
                        process_group=0 if rank == 0 else children[0].pid,
                    )
                )
        os.close(progress_write)
        progress_write = -1
        try:
            first_failed = _supervise_ranks(children, progress_read, beat)
        except BaseException:
            _stop_group(children)
            raise
    finally:
        if progress_write >= 0:
            os.close(progress_write)
            _stop_group(children)
        os.close(progress_read)
        (job.run_dir / jobfile.JOB_FILE).unlink(missing_ok=True)
    if first_failed is None:
        return _outcome(job, 0)
    failed_rank, returncode = first_failed
    tail = _log_tail(job.run_dir / jobfile.LOG_FILE)
    if returncode < 0:
        name = signal.Signals(-returncode).name
        raise EngineFailed(f"Killed by {name}", f"rank {failed_rank} was killed by {name}.\n{tail}")
    found = job.run_dir / jobfile.rank_failure_file(failed_rank)
    if found.is_file():
        failure = json.loads(found.read_text())
        raise EngineFailed(failure["type"], f"rank {failed_rank}: {failure['traceback']}")
    raise EngineFailed("EngineExited", f"rank {failed_rank} exited with {returncode}.\n{tail}")


def _stop_group(children: list[subprocess.Popen], grace: float = 10.0) -> None:
    """SIGTERM to every rank, SIGKILL to the group after `grace` seconds."""
    if not children:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(children[0].pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(children[0].pid, signal.SIGKILL)
            child.wait()


def _supervise_ranks(
    children: list[subprocess.Popen], progress: int, beat: Heartbeat
) -> tuple[int, int] | None:
    """`_supervise` for several ranks: forward rank 0's progress until every rank has exited.
    The first rank to exit with an error stops the others at once (they would otherwise wait
    for it until their collective timeout); returns (that rank, its exit status), or None."""
    buffer, pipe_open = b"", True
    while True:
        if pipe_open:
            ready, _, _ = select.select([progress], [], [], 1.0)
            chunk = os.read(progress, 65536) if ready else b""
            pipe_open = not (ready and not chunk)
        else:
            ready, chunk = [], b""
            time.sleep(0.2)
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            update = json.loads(line)
            beat.on_progress(update["step"], update["total_steps"], update["metrics"])
        if any(c.poll() for c in children):
            # A moment for the others to end on their own, then the rest are stopped. A rank
            # killed by a signal is named before one that raised: the others' errors
            # ("connection reset by peer", a collective's timeout) are what its death did to
            # them, and may come before the kernel has reaped it.
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and any(c.poll() is None for c in children):
                time.sleep(0.05)
            failed = [(rank, c.returncode) for rank, c in enumerate(children) if c.poll()]
            _stop_group(children)
            return min(failed, key=lambda found: found[1] >= 0)
        if all(c.returncode is not None for c in children) and not (pipe_open and ready):
            return None
        beat.raise_if_stopped()


def _outcome(job: Job, returncode: int) -> dict[str, Any]:
    outcome = job.run_dir / jobfile.OUTCOME_FILE
    if returncode == 0 and outcome.is_file():
        return json.loads(outcome.read_text())
    failure = job.run_dir / jobfile.FAILURE_FILE
    if failure.is_file():
        found = json.loads(failure.read_text())
        raise EngineFailed(found["type"], found["traceback"])
    tail = _log_tail(job.run_dir / jobfile.LOG_FILE)
    if returncode < 0:
        name = signal.Signals(-returncode).name
        raise EngineFailed(f"Killed by {name}", f"the engine process was killed by {name}.\n{tail}")
    raise EngineFailed("EngineExited", f"the engine process exited with {returncode}.\n{tail}")


def _supervise(child: subprocess.Popen, progress: int, beat: Heartbeat) -> None:
    """Forward the child's progress lines to the heartbeat until it exits; stop it as soon as
    the run is cancelled or its lease lost (checked at least once a second, not only per step)."""
    buffer = b""
    while True:
        ready, _, _ = select.select([progress], [], [], 1.0)
        chunk = os.read(progress, 65536) if ready else b""
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            update = json.loads(line)
            beat.on_progress(update["step"], update["total_steps"], update["metrics"])
        # Done at the pipe's end, or once the child has exited and nothing more is waiting (a
        # process it forked may hold the pipe open).
        if (ready and not chunk) or (child.poll() is not None and not ready):
            child.wait()
            return
        beat.raise_if_stopped()


LAUNCHERS = {"inprocess": run_in_process, "subprocess": run_in_subprocess}


def _is_oom(exc: BaseException) -> bool:
    """Out of memory, worth another attempt: torch's or Python's error, or an engine process the
    kernel's OOM killer took (SIGKILL; any other signal is a crash, not retried)."""
    if isinstance(exc, EngineFailed):
        return exc.error_type in OOM_ERRORS or exc.error_type == "Killed by SIGKILL"
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


def execute(*, run_id: int, worker: str) -> str:
    """Claim the run, run its engine, record the outcome; returns what happened, in a word."""
    run = loop.run_claim(run_id=run_id, worker=worker, now=timezone.now())
    if run is None:
        return "skipped"
    try:
        with Heartbeat(run_id, worker) as beat:  # fetching models may take longer than a lease
            job = job_for(run)
            mirror = storage.checkpoint_mirror(run)
            if mirror is not None:  # a shared store: resume from another node's checkpoint
                mirror.pull()
                beat.after_progress = mirror.push
            result = LAUNCHERS[settings.TRAINING_LAUNCHER](job, beat)
            if stages.stage(run.kind).model_kind is not None:
                # The upload, before the transaction that closes the run finds it published.
                storage.model_publish(run=run, produced=storage.produced_model(result))
    except Cancelled:
        loop.run_mark_cancelled(run_id=run_id, now=timezone.now())
        return "cancelled"
    except runs.LeaseLost:
        return "lease lost"
    except TimeLimitExceeded as exc:  # another attempt would run as long: failed, not retried
        loop.run_fail(run_id=run_id, worker=worker, error=str(exc), retry=False, now=timezone.now())
        return "failed"
    except Exception as exc:  # noqa: BLE001 - every failure is recorded on the run row
        if isinstance(exc, EngineFailed):
            error = f"{exc.error_type}: {exc.details}"
        elif isinstance(exc, artifacts.ArtifactError):  # a model it loads or made: no traceback
            error = f"Model files: {exc}"
        else:
            error = traceback.format_exc()
        loop.run_fail(
            run_id=run_id, worker=worker, error=error, retry=_is_oom(exc), now=timezone.now()
        )
        return "failed"
    try:
        loop.run_succeed(run_id=run_id, worker=worker, result=result, now=timezone.now())
    except runs.LeaseLost:
        return "lease lost"
    except Exception:  # noqa: BLE001 - storing the outputs or starting the round's next step
        # failed (its transaction rolled back): the run fails with the reason, once, instead of
        # being retried as "worker lost" until it gives up.
        loop.run_fail(
            run_id=run_id, worker=worker, error=traceback.format_exc(), retry=False,
            now=timezone.now(),
        )  # fmt: skip
        return "failed"
    return "succeeded"
