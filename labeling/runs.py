"""Training runs as a service: start, claim (the run-row lease), progress, finish, cancel, requeue.

The TrainingRun row is the truth. A Celery message only says "look at run N"; whoever holds the
row's lease runs it. So a message delivered twice, or a run re-enqueued after its worker was
SIGKILLed, never runs twice at once: the second claimer finds an unexpired lease and leaves.
Model directories come from run ids on the server, never from a request (BAD-INPUTS 20).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from training.models import RunMetric, RunStatus, TrainingRun  # Django models only, no torch

from .errors import Conflict, Invalid, NotFound
from .models import Completion, Demonstration, ModelVersion, Project, Prompt, Ranking, Split
from .services import ranking_task_create

TERMINAL = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
RUN_OPTIONS = {"split", "max_prompts", "create_tasks"}  # about the data, not the stage's config
RESERVED_CONFIG_KEYS = {
    "output_dir",
    "model_path",
    "policy_path",
    "reward_model_path",
    "value_model_path",
}
TRAINED_KINDS = {ModelVersion.Kind.SFT, ModelVersion.Kind.REWARD, ModelVersion.Kind.POLICY}
RUN_KIND_TO_MODEL_KIND = {
    TrainingRun.Kind.SFT: ModelVersion.Kind.SFT,
    TrainingRun.Kind.REWARD: ModelVersion.Kind.REWARD,
    TrainingRun.Kind.PPO: ModelVersion.Kind.POLICY,
}


class LeaseLost(Exception):
    """Another worker owns this run now (our lease expired and it was re-claimed)."""


def lease_seconds() -> int:
    return int(getattr(settings, "TRAINING_LEASE_SECONDS", 90))


def run_key(run: TrainingRun) -> str:
    """A run's directory name: its id plus its creation time, so a database rebuilt over an old
    var/ (ids start at 1 again) never picks up another run's checkpoints or model."""
    return f"run-{run.pk}-{run.created_at:%Y%m%d%H%M%S%f}"


def run_dir(run: TrainingRun) -> Path:
    return settings.RUN_ROOT / run_key(run)


def model_path(version: ModelVersion) -> str:
    """The path or hub name `from_pretrained` gets for a model version, checked for escapes.

    Trained versions and local base models live under MODEL_ROOT; the stored path must be a plain
    relative path with no `..`, no absolute part and no symlink on the way. Anything that is not
    a directory under MODEL_ROOT is passed on as a hub name (it fails offline with a clear error).
    """
    raw = version.path.strip()
    rel = Path(raw)
    if not raw or rel.is_absolute() or ".." in rel.parts or raw.startswith(("~", ".")):
        raise Invalid(f"Model version {version.name!r} has an unsafe path {raw!r}.")
    root = settings.MODEL_ROOT.resolve()
    candidate = root / rel
    current = root
    for part in rel.parts:
        current = current / part
        if current.is_symlink():
            raise Invalid(f"Model version {version.name!r} points through a symlink; refused.")
    if candidate.is_dir():
        if not str(candidate.resolve()).startswith(str(root) + os.sep):
            raise Invalid(f"Model version {version.name!r} resolves outside the model root.")
        return str(candidate)
    if version.kind in TRAINED_KINDS:
        raise Invalid(f"The files of model version {version.name!r} are missing.")
    if len(rel.parts) > 2:
        raise Invalid(f"{raw!r} is neither a model directory nor a hub name.")
    return raw


def _snapshot(*, project: Project, kind: str, config: dict[str, Any]) -> dict[str, list[int]]:
    """Exactly which rows the run will use, frozen at start (test-split prompts never train)."""
    demos = list(
        Demonstration.objects.filter(prompt__project=project)
        .exclude(prompt__split=Split.TEST)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if kind == TrainingRun.Kind.SFT:
        return {"demonstrations": demos}
    if kind == TrainingRun.Kind.REWARD:
        rankings = list(
            Ranking.objects.filter(task__project=project)
            .exclude(task__prompt__split=Split.TEST)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        return {"rankings": rankings, "demonstrations": demos}
    split = Split.TEST if config.get("split") == Split.TEST else Split.TRAIN
    prompts = Prompt.objects.filter(project=project, split=split).order_by("pk")
    limit = config.get("max_prompts")
    ids = list(
        prompts.values_list("pk", flat=True)[: int(limit)]
        if limit
        else prompts.values_list("pk", flat=True)
    )
    if kind == TrainingRun.Kind.PPO:
        return {"prompts": ids, "demonstrations": demos}
    return {"prompts": ids, "create_tasks": bool(config.get("create_tasks", True))}


def run_start(
    *,
    project: Project,
    kind: str,
    config: dict[str, Any],
    created_by: Any,
    base_model: ModelVersion,
    reward_model: ModelVersion | None = None,
    max_attempts: int = 3,
) -> TrainingRun:
    """Create the run row with its data snapshot and enqueue it once the transaction commits."""
    if kind not in TrainingRun.Kind.values:
        raise Invalid(f"Unknown run kind {kind!r}.")
    if not isinstance(config, dict):
        raise Invalid("The run config must be an object.")
    reserved = RESERVED_CONFIG_KEYS & set(config)
    if reserved:
        raise Invalid(
            f"These are set by the server, not the request: {', '.join(sorted(reserved))}."
        )
    if base_model.project_id != project.pk or (
        reward_model and reward_model.project_id != project.pk
    ):
        raise NotFound("No such model version in this project.")
    if kind == TrainingRun.Kind.PPO and reward_model is None:
        raise Invalid("PPO needs a reward model.")
    model_path(base_model)  # refuse unsafe paths now, not in the worker
    with transaction.atomic():
        dataset = _snapshot(project=project, kind=kind, config=config)
        key = {"sft": "demonstrations", "reward": "rankings"}.get(kind, "prompts")
        if not dataset[key]:
            raise Invalid(f"There is no data to train on yet ({key}).")
        run = TrainingRun.objects.create(
            project=project,
            kind=kind,
            config={k: v for k, v in config.items() if k not in RUN_OPTIONS},
            dataset=dataset,
            base_model=base_model,
            reward_model=reward_model,
            max_attempts=max_attempts,
            created_by=created_by,
        )
        from training.tasks import run_training

        run_training.delay_on_commit(run.pk)
        return run


def run_claim(*, run_id: int, worker: str, now: datetime) -> TrainingRun | None:
    """Take the run's lease, or None if it is finished or another live worker holds it."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status in TERMINAL:
            return None
        if run.cancel_requested:
            _finish(run, RunStatus.CANCELLED, now=now, error="Cancelled before it ran.")
            return None
        held = (
            run.status == RunStatus.RUNNING and run.lease_expires_at and run.lease_expires_at > now
        )
        if held and run.lease_owner != worker:
            return None
        if run.attempt >= run.max_attempts:
            _finish(
                run,
                RunStatus.FAILED,
                now=now,
                error=f"Gave up after {run.attempt} attempts. Last error: {run.error or 'worker lost'}",
            )
            return None
        run.attempt += 1
        run.status = RunStatus.RUNNING
        run.lease_owner = worker
        run.lease_expires_at = now + timedelta(seconds=lease_seconds())
        run.heartbeat_at = now
        run.started_at = run.started_at or now
        run.save()
        return run


def run_progress(
    *,
    run_id: int,
    worker: str,
    step: int,
    total_steps: int,
    metrics: Iterable[tuple[int, str, float]],
    now: datetime,
) -> bool:
    """Record progress and metrics, extend the lease. Returns True when a cancel was asked."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        if run.lease_owner != worker or run.status != RunStatus.RUNNING:
            raise LeaseLost(f"run {run_id} is now {run.status} under {run.lease_owner!r}")
        run.total_steps = max(total_steps, step)
        run.step = step
        run.heartbeat_at = now
        run.lease_expires_at = now + timedelta(seconds=lease_seconds())
        run.save(update_fields=["step", "total_steps", "heartbeat_at", "lease_expires_at"])
        points = [RunMetric(run=run, step=s, name=n[:64], value=float(v)) for s, n, v in metrics]
        if points:
            # A resumed run logs the steps after its checkpoint again: keep the newest value.
            RunMetric.objects.bulk_create(
                points,
                update_conflicts=True,
                unique_fields=["run", "name", "step"],
                update_fields=["value"],
            )
        return run.cancel_requested


def _finish(run: TrainingRun, status: str, *, now: datetime, error: str = "") -> None:
    run.status = status
    run.error = error[:20_000]
    run.finished_at = now
    run.lease_owner = ""
    run.lease_expires_at = None
    run.save()
    from .rounds import round_on_run_finished  # a round advances or stops with its stage

    round_on_run_finished(run=run, now=now)


def run_succeed(*, run_id: int, worker: str, result: dict[str, Any], now: datetime) -> TrainingRun:
    """Register exactly one model version (or add samples to the queue once), then close the run."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().select_related("project").get(pk=run_id)
        if run.status == RunStatus.SUCCEEDED:
            return run
        if run.lease_owner != worker:
            raise LeaseLost(f"run {run_id} is held by {run.lease_owner!r}")
        if run.kind in RUN_KIND_TO_MODEL_KIND:
            _register_model(run, result)
        else:
            _add_samples(run, result)
        _finish(run, RunStatus.SUCCEEDED, now=now)
        return run


def _register_model(run: TrainingRun, result: dict[str, Any]) -> ModelVersion:
    target = settings.MODEL_ROOT / run_key(run)
    produced = Path(result.get("model_dir") or Path(result["output_dir"]) / "model")
    if not target.exists():
        os.replace(produced, target)  # same filesystem (both under VAR_DIR): atomic
    metrics = {k: v for k, v in (result.get("metrics") or {}).items() if isinstance(v, int | float)}
    version, _ = ModelVersion.objects.get_or_create(
        training_run=run,
        defaults={
            "project": run.project,
            "name": f"{run.kind}-run-{run.pk}",
            "kind": RUN_KIND_TO_MODEL_KIND[run.kind],
            "path": run_key(run),
            "parent": run.base_model,
            "metrics": metrics,
        },
    )
    return version


def _add_samples(run: TrainingRun, result: dict[str, Any]) -> None:
    """Store every sample with its provenance; each prompt's first K distinct samples (a run may
    sample more than K) become a ranking task."""
    if Completion.objects.filter(sampling_run=run).exists():
        return  # a redelivered finish: the samples are already in the queue
    project = run.project
    prompts = {
        p.pk: p for p in Prompt.objects.filter(project=project, pk__in=run.dataset["prompts"])
    }
    by_prompt: dict[int, list[dict[str, Any]]] = {}
    for sample in result["samples"]:
        by_prompt.setdefault(sample["prompt_id"], []).append(sample)
    for prompt_id, samples in by_prompt.items():
        prompt = prompts[prompt_id]
        completions = Completion.objects.bulk_create(
            Completion(
                prompt=prompt,
                model_version=run.base_model,
                # A byte-level tokenizer can decode a NUL, which PostgreSQL text cannot hold: the
                # insert failed and the run died with "worker lost" after 3 attempts.
                text=s["completion"].replace("\x00", "\ufffd"),
                temperature=s["provenance"].get("temperature"),
                top_p=s["provenance"].get("top_p"),
                max_tokens=s["provenance"].get("max_new_tokens"),
                seed=s["provenance"].get("seed"),
                finished=s["provenance"].get("finished_with_eos"),
                sampling_run=run,
            )
            for s in sorted(samples, key=lambda s: s.get("sample_index", 0))
        )
        if not run.dataset.get("create_tasks", True):
            continue  # a round mixes these with another policy's samples itself
        if len(distinct := first_distinct(completions, project.k)) == project.k:
            ranking_task_create(project=project, prompt=prompt, completions=distinct)


def first_distinct(completions: list[Completion], k: int) -> list[Completion]:
    """The first `k` completions whose texts differ, in sample order (fewer when there are not
    `k` different texts). A small SFT policy often repeats itself: sampling more than K per
    prompt and keeping the first K distinct turns far more prompts into ranking tasks than
    asking for exactly K and dropping every prompt with a repeat."""
    chosen: dict[str, Completion] = {}
    for completion in completions:
        chosen.setdefault(completion.text, completion)
        if len(chosen) == k:
            break
    return list(chosen.values())


def run_fail(*, run_id: int, worker: str, error: str, retry: bool, now: datetime) -> TrainingRun:
    """Record a failure. With retry the run goes back to queued until max_attempts is reached."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        if run.status in TERMINAL or run.lease_owner != worker:
            return run
        if retry and run.attempt < run.max_attempts:
            run.status = RunStatus.QUEUED
            run.error = error[:20_000]
            run.lease_owner = ""
            run.lease_expires_at = None
            run.save()
            from training.tasks import run_training

            transaction.on_commit(lambda: run_training.apply_async((run_id,), countdown=5))
        else:
            if retry:
                error = f"Gave up after {run.attempt} attempts. Last error: {error}"
            _finish(run, RunStatus.FAILED, now=now, error=error)
        return run


def run_mark_cancelled(*, run_id: int, now: datetime) -> None:
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        if run.status not in TERMINAL:
            _finish(run, RunStatus.CANCELLED, now=now, error="Cancelled by an admin.")
    shutil.rmtree(run_dir(run) / "checkpoints", ignore_errors=True)


def run_cancel(*, run_id: int, project: Project, now: datetime) -> TrainingRun:
    """Ask a run to stop: a queued one stops now, a running one at its next step."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id, project=project).first()
        if run is None:
            raise NotFound("No such run.")
        if run.status in TERMINAL:
            raise Conflict(f"The run already {run.status}.")
        run.cancel_requested = True
        run.save(update_fields=["cancel_requested"])
        if run.status == RunStatus.QUEUED:
            _finish(run, RunStatus.CANCELLED, now=now, error="Cancelled by an admin.")
        return run


def runs_to_requeue(*, now: datetime) -> list[int]:
    """Running runs whose lease expired: their worker died (SIGKILL, OOM-kill, lost node)."""
    stale = TrainingRun.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now)
    return list(stale.order_by("pk").values_list("pk", flat=True))
