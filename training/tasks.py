"""Celery glue: the only module of training/ that talks to Django (with training/models.py).

A task loads the run row by id, takes its lease, builds plain records from the database, calls the
stage's `run()`, and saves what comes back. A background thread extends the lease while the stage
loads a model or does a long step; a run whose lease lapses (its worker was killed) is put back
on the queue by `requeue_stale_runs` (beat) and resumes from its last checkpoint.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
from typing import Any

from celery import shared_task
from celery.signals import worker_ready
from django.utils import timezone

from labeling import exports, runs
from labeling.models import Prompt
from training.models import RunKind, TrainingRun

PROGRESS_EVERY_SECONDS = 1.0


class Cancelled(Exception):
    """Raised from on_progress to stop a stage loop when an admin cancels the run."""


def _records(run: TrainingRun) -> dict[str, Any]:
    """The run's frozen dataset as the plain records the stage reads (no ORM object leaves here)."""
    ds = run.dataset
    project = run.project
    data: dict[str, Any] = {}
    if "demonstrations" in ds:
        data["demonstrations"] = [
            {"prompt": r["messages"][:-1], "completion": r["messages"][-1]["content"]}
            for r in exports.sft_records(project=project, ids=ds["demonstrations"])
        ]
    if "rankings" in ds:
        data["rankings"] = [
            {
                "prompt": r["prompt"],
                "completions": r["completions"],
                "ranks": r["ranks"],
                "split": r["split"],
            }
            for r in exports.ranking_records(project=project, ids=ds["rankings"])
        ]
    if "prompts" in ds:
        prompts = Prompt.objects.filter(project=project, pk__in=ds["prompts"]).order_by("pk")
        data["prompts"] = [{"prompt": p.messages, "id": p.pk} for p in prompts]
    return data


def _config(run: TrainingRun) -> Any:
    from training.engine import config as cfgs  # noqa: PLC0415 - torch-free, but keep worker start light

    values = dict(run.config)
    values["output_dir"] = str(runs.run_dir(run))
    base = runs.model_path(run.base_model)
    if run.kind == RunKind.SFT:
        return cfgs.SFTConfig.from_dict({**values, "model_path": base})
    if run.kind == RunKind.REWARD:
        return cfgs.RewardConfig.from_dict({**values, "model_path": base})
    if run.kind == RunKind.PPO:
        reward = runs.model_path(run.reward_model)
        return cfgs.PPOConfig.from_dict(
            {**values, "policy_path": base, "reward_model_path": reward}
        )
    return cfgs.SampleConfig.from_dict({**values, "model_path": base})


def _stage(kind: str):
    from training.engine import ppo, reward, sample, sft  # noqa: PLC0415 - imports torch

    return {RunKind.SFT: sft, RunKind.REWARD: reward, RunKind.PPO: ppo, RunKind.SAMPLE: sample}[
        kind
    ]


class _Heartbeat:
    """Keeps the run's lease alive between progress calls and buffers metrics for the DB."""

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
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> _Heartbeat:
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
                from django.db import connection

                if threading.current_thread() is not threading.main_thread():
                    connection.close()
            self._last = time.monotonic()

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
        if self.lost is not None:
            raise self.lost
        if self.cancel:
            raise Cancelled()


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


@shared_task(name="training.tasks.run_training", acks_late=True, reject_on_worker_lost=True)
def run_training(run_id: int) -> str:
    worker = f"{socket.gethostname()}:{os.getpid()}:{run_training.request.id}"
    run = runs.run_claim(run_id=run_id, worker=worker, now=timezone.now())
    if run is None:
        return "skipped"
    try:
        cfg, data = _config(run), _records(run)
        with _Heartbeat(run_id, worker) as beat:
            result = _stage(run.kind).run(cfg, data, on_progress=beat.on_progress)
    except Cancelled:
        runs.run_mark_cancelled(run_id=run_id, now=timezone.now())
        return "cancelled"
    except runs.LeaseLost:
        return "lease lost"
    except Exception as exc:  # noqa: BLE001 - every failure is recorded on the run row
        runs.run_fail(
            run_id=run_id,
            worker=worker,
            error=traceback.format_exc(),
            retry=_is_oom(exc),
            now=timezone.now(),
        )
        return "failed"
    runs.run_succeed(run_id=run_id, worker=worker, result=result, now=timezone.now())
    return "succeeded"


@shared_task(name="training.tasks.requeue_stale_runs")
def requeue_stale_runs() -> list[int]:
    ids = runs.runs_to_requeue(now=timezone.now())
    for run_id in ids:
        run_training.delay(run_id)
    return ids


@worker_ready.connect
def _requeue_on_start(**_: object) -> None:
    requeue_stale_runs.delay()
