"""Training runs as a service: start one, record its progress, and store what it produced.

The TrainingRun row is the truth. A Celery message only says "look at run N"; whoever holds the
row's lease runs it (training/loop.py claims and closes runs). So a message delivered twice, or a
run re-enqueued after its worker was SIGKILLed, never runs twice at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from django.conf import settings
from django.db import transaction

from labeling import services
from labeling.errors import Invalid, NotFound
from labeling.imports import CompletionRow
from labeling.models import Completion, ModelVersion, Project, Prompt

from . import dispatch, stages, storage
from .models import RunMetric, RunSample, RunStatus, TrainingRun


class LeaseLost(Exception):
    """Another worker owns this run now (our lease expired and it was re-claimed)."""


def lease_seconds() -> int:
    return int(getattr(settings, "TRAINING_LEASE_SECONDS", 90))


# A run on fewer records than this learns little (an SFT on 1 demonstration, a reward model
# checked on 1 pair): the launch forms refuse fewer than MIN_RECORDS and ask an admin to confirm
# fewer than ENOUGH_RECORDS before launching. Prompts (PPO, sampling) are not counted here.
MIN_RECORDS = 2
ENOUGH_RECORDS = 32
COUNTED = ("demonstrations", "rankings")


def run_data_size(*, project: Project, kind: str, settings: dict[str, Any]) -> tuple[str, int]:
    """(what the run trains on, how many of them there are now): the rows it would snapshot."""
    stage = stages.stage(kind)
    return stage.requires, len(stage.snapshot(project, stage.options_of(settings))[stage.requires])


def gpu_queues() -> list[str]:
    """The GPU queues this deployment declares (INSTRUCTLOOP_GPU_QUEUES); the first is the
    default, where a run that names none is sent (settings.CELERY_TASK_ROUTES)."""
    return list(settings.TRAINING_GPU_QUEUES)


def queue_check(queue: str) -> None:
    """A run or round names one of the declared GPU queues, or none (blank: the default)."""
    if queue and queue not in gpu_queues():
        message = f"No GPU queue {queue!r:.70}; the queues are {', '.join(gpu_queues())}."
        raise Invalid(message, details=[{"key": "queue", "error": message}])


def run_start(
    *,
    project: Project,
    kind: str,
    config: dict[str, Any],
    created_by: Any,
    base_model: ModelVersion,
    reward_model: ModelVersion | None = None,
    max_attempts: int = 3,
    queue: str = "",
) -> TrainingRun:
    """Check the config with the stage's class, freeze the rows the run uses, create the run row
    with its resolved config, and enqueue it once the transaction commits. A sampling run
    samples the project's K per prompt unless its config says otherwise. `queue` names the GPU
    queue (GPU type) it must run on; blank: the default one."""
    queue_check(queue)
    stage = stages.stage(kind)
    if kind == TrainingRun.Kind.SAMPLE and isinstance(config, dict) and "k" not in config:
        config = {**config, "k": project.k}
    resolved = stage.resolve(config)
    if base_model.project_id != project.pk or (
        reward_model and reward_model.project_id != project.pk
    ):
        raise NotFound("No such model version in this project.")
    if stage.needs_reward_model and reward_model is None:
        raise Invalid(f"{kind.upper()} needs a reward model.")
    storage.model_check(base_model)  # refuse unsafe paths now, not in the worker
    options = stage.options_of(config)
    with transaction.atomic():
        dataset = stage.snapshot(project, options)
        if not dataset[stage.requires]:
            raise Invalid(f"There is no data to train on yet ({stage.requires}).")
        run = TrainingRun.objects.create(
            project=project,
            kind=kind,
            config=resolved,
            dataset=dataset,
            base_model=base_model,
            reward_model=reward_model,
            max_attempts=max_attempts,
            created_by=created_by,
            queue=queue,
        )
        dispatch.run_enqueue_on_commit(run.pk)
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


def outputs_store(run: TrainingRun, result: dict[str, Any]) -> None:
    """What a succeeded run leaves behind: exactly one model version, or its samples in the
    queue. Called inside the transaction that closes the run; a redelivered finish stores
    nothing twice."""
    model_kind = stages.stage(run.kind).model_kind
    if model_kind is None:
        _add_samples(run, result)
    else:
        _register_model(run, result, model_kind)


def _register_model(run: TrainingRun, result: dict[str, Any], kind: str) -> ModelVersion:
    if run.model_version is not None:
        return run.model_version
    published = storage.model_publish(run=run, produced=storage.produced_model(result))
    metrics = {k: v for k, v in (result.get("metrics") or {}).items() if isinstance(v, int | float)}
    version = ModelVersion.objects.create(
        project=run.project,
        name=f"{run.kind}-run-{run.pk}",
        kind=kind,
        path=published.key,
        artifact_uri=published.uri,
        sha256=published.sha256,
        parent=run.base_model,
        metrics=metrics,
    )
    run.model_version = version
    run.save(update_fields=["model_version"])
    return version


def _add_samples(run: TrainingRun, result: dict[str, Any]) -> None:
    """Store every sample with its provenance; each prompt's first K distinct samples become a
    ranking task, or its distinct ones when fewer but at least 2 differ (ranking_groups). The
    prompts left without a task are counted on the run, not dropped silently."""
    if run.samples.exists():
        return  # a redelivered finish: the samples are already in the queue
    project = run.project
    prompts = {
        p.pk: p for p in Prompt.objects.filter(project=project, pk__in=run.dataset["prompts"])
    }
    by_prompt: dict[int, list[dict[str, Any]]] = {}
    for sample in result["samples"]:
        by_prompt.setdefault(sample["prompt_id"], []).append(sample)
    sampled: list[Completion] = []
    for prompt_id, samples in by_prompt.items():
        sampled += services.completions_create(
            prompt=prompts[prompt_id],
            model_version=run.base_model,
            rows=[
                CompletionRow(
                    text=s["completion"],
                    model=run.base_model.name,
                    temperature=s["provenance"].get("temperature"),
                    top_p=s["provenance"].get("top_p"),
                    max_tokens=s["provenance"].get("max_new_tokens"),
                    seed=s["provenance"].get("seed"),
                    finished=s["provenance"].get("finished_with_eos"),
                )
                for s in sorted(samples, key=lambda s: s.get("sample_index", 0))
            ],
        )
    RunSample.objects.bulk_create(RunSample(run=run, completion=c) for c in sampled)
    if not run.dataset.get("create_tasks", True):
        return  # a round mixes these with another policy's samples itself
    k = run.config.get("k", project.k)
    found = ranking_groups(sampled, k=k)
    for group in found.groups:
        services.ranking_task_create(
            project=project, prompt=prompts[group[0].prompt_id], completions=group
        )
    counts = {
        "tasks/prompts": len(by_prompt),
        "tasks/ranking": len(found.groups),
        "tasks/fewer_than_k": sum(len(g) < k for g in found.groups),
        "tasks/dropped_prompts": len(found.dropped),
    }
    RunMetric.objects.bulk_create(
        RunMetric(run=run, step=run.step, name=name, value=value) for name, value in counts.items()
    )


class _Sample(Protocol):
    @property
    def prompt_id(self) -> Hashable: ...

    @property
    def text(self) -> str: ...


_SampleT = TypeVar("_SampleT", bound=_Sample)


@dataclass(frozen=True)
class RankingGroups(Generic[_SampleT]):
    groups: list[list[_SampleT]]  # one ranking task each: 2..K different texts of one prompt
    dropped: list[Hashable]  # prompts with fewer than 2 different texts: no task


def ranking_groups(samples: Iterable[_SampleT], *, k: int) -> RankingGroups[_SampleT]:
    """Samples grouped by prompt, in order of first appearance; each group keeps its prompt's
    first `k` different texts in sample order. A prompt with at least 2 is a ranking task (of
    fewer than `k` outputs when there are not `k` different ones: the engine samples a prompt
    again while its samples repeat, training/engine/sample.py, but a small policy may still
    repeat itself); one with fewer is dropped, and listed so it can be counted."""
    by_prompt: dict[Hashable, dict[str, _SampleT]] = defaultdict(dict)
    for sample in samples:
        distinct = by_prompt[sample.prompt_id]
        if len(distinct) < k:
            distinct.setdefault(sample.text, sample)
    groups = [list(d.values()) for d in by_prompt.values() if len(d) >= 2]
    dropped = [prompt for prompt, d in by_prompt.items() if len(d) < 2]
    return RankingGroups(groups, dropped)


RESEND_BACKOFF_CAP = 6  # a queued run is sent again after lease x 2^n, n at most this


def runs_to_requeue(*, now: datetime) -> list[int]:
    """Runs to send to a worker again:
    - running ones whose lease expired: their worker died (SIGKILL, OOM-kill, lost node);
    - queued ones no worker claimed a lease's time after their last message: the message was
      lost (a broker restarted without persistence) or never sent (the broker was down). The wait
      doubles with each message sent (a run behind a long job on a busy worker is not re-sent
      every minute); a duplicate is harmless, the run row decides who runs it."""
    stale = TrainingRun.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now)
    ids = set(stale.values_list("pk", flat=True))
    lease = timedelta(seconds=lease_seconds())
    queued = TrainingRun.objects.filter(status=RunStatus.QUEUED, cancel_requested=False)
    for pk, enqueued_at, created_at, dispatches, error in queued.values_list(
        "pk", "enqueued_at", "created_at", "dispatches", "dispatch_error"
    ):
        waited = now - (enqueued_at or created_at)
        if error or waited > lease * 2 ** min(max(dispatches - 1, 0), RESEND_BACKOFF_CAP):
            ids.add(pk)
    return sorted(ids)
