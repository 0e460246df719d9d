"""Prompts, completions and tasks: imports (all or nothing), splits, ranking and A/B tasks."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count

from ..errors import Conflict, Invalid
from ..imports import CompletionRow, PromptRow, RankingTaskRow
from ..models import MAX_K, Completion, ModelVersion, Project, Prompt, Split, Task, TaskCompletion

logger = logging.getLogger(__name__)


def split_for(*, key: str, valid_percent: int, test_percent: int) -> str:
    """Deterministic split by who wrote the prompt (InstructGPT split by user ID, not by prompt)."""
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100
    if bucket < test_percent:
        return Split.TEST
    if bucket < test_percent + valid_percent:
        return Split.VALID
    return Split.TRAIN


@dataclass(frozen=True)
class ImportResult:
    created: int
    tasks_created: int
    # New prompts per split: test prompts get no demonstration task (they are held out for A/B).
    splits: dict[str, int] = field(default_factory=dict)


def _prompt_from_row(*, project: Project, row: PromptRow, source: str) -> Prompt:
    key = row.author or row.content_hash
    return Prompt(
        project=project,
        messages=row.messages,
        text=row.text,
        content_hash=row.content_hash,
        source=source[:200],
        external_id=row.external_id,
        author=row.author,
        split=row.split
        or split_for(
            key=key, valid_percent=project.valid_percent, test_percent=project.test_percent
        ),
    )


def _existing_duplicates(*, project: Project, rows: Sequence[PromptRow]) -> list[dict[str, Any]]:
    hashes = {row.content_hash for row in rows}
    ids = {row.external_id for row in rows if row.external_id}
    known_hashes = set(
        Prompt.objects.filter(project=project, content_hash__in=hashes).values_list(
            "content_hash", flat=True
        )
    )
    known_ids = set(
        Prompt.objects.filter(project=project, external_id__in=ids).values_list(
            "external_id", flat=True
        )
    )
    errors = []
    for row in rows:
        if row.content_hash in known_hashes:
            errors.append({"line": row.line, "error": "this prompt is already in the project"})
        elif row.external_id in known_ids:
            errors.append(
                {"line": row.line, "error": f"id {row.external_id!r} is already in the project"}
            )
    return errors


def prompts_import(
    *, project: Project, rows: Sequence[PromptRow], source: str, collect_demonstrations: bool = True
) -> ImportResult:
    """Add prompts (all or none). Non-test prompts get a demonstration task when asked."""
    with transaction.atomic():
        errors = _existing_duplicates(project=project, rows=rows)
        if errors:
            raise Invalid(f"{len(errors)} bad line(s); nothing was imported.", details=errors)
        try:
            prompts = Prompt.objects.bulk_create(
                [_prompt_from_row(project=project, row=row, source=source) for row in rows]
            )
        except IntegrityError:
            raise Conflict(
                "Another import added some of these prompts at the same time; retry."
            ) from None
        tasks = []
        if collect_demonstrations:
            tasks = Task.objects.bulk_create(
                Task(
                    project=project,
                    kind=Task.Kind.DEMONSTRATION,
                    prompt=p,
                    overlap=project.demo_overlap,
                )
                for p in prompts
                if p.split != Split.TEST
            )
        return ImportResult(
            created=len(prompts), tasks_created=len(tasks), splits=_split_counts(prompts)
        )


def model_version_for_name(*, project: Project, name: str) -> ModelVersion:
    version, _ = ModelVersion.objects.get_or_create(
        project=project, name=name, defaults={"kind": ModelVersion.Kind.EXTERNAL}
    )
    return version


def completions_create(
    *, prompt: Prompt, model_version: ModelVersion, rows: Sequence[CompletionRow]
) -> list[Completion]:
    """Store a model's outputs for one prompt, in order (each row's `model` is `model_version`'s
    name: the caller vouches for it). A byte-level tokenizer can decode a NUL,
    which PostgreSQL text cannot hold (the insert failed and a sampling run died with "worker
    lost" three times): it is stored as U+FFFD."""
    if model_version.project_id != prompt.project_id:
        raise Invalid("The model version and the prompt belong to different projects.")
    return Completion.objects.bulk_create(
        Completion(
            prompt=prompt,
            model_version=model_version,
            text=row.text.replace("\x00", "\ufffd"),
            temperature=row.temperature,
            top_p=row.top_p,
            max_tokens=row.max_tokens,
            seed=row.seed,
            finished=row.finished,
        )
        for row in rows
    )


def ranking_task_create(
    *, project: Project, prompt: Prompt, completions: Sequence[Completion], priority: int = 0
) -> Task:
    """A ranking task over 2 to MAX_K distinct completions of one prompt: usually the project's
    K; fewer when a sampling run found only that many different outputs (a task of the distinct
    ones is worth ranking; one with a text twice is not)."""
    if not 2 <= len(completions) <= MAX_K:
        raise Invalid(f"A ranking task needs 2 to {MAX_K} completions; got {len(completions)}.")
    if len({c.pk for c in completions}) != len(completions):
        raise Invalid("A ranking task cannot show the same completion twice.")
    if any(c.prompt_id != prompt.pk for c in completions) or prompt.project_id != project.pk:
        raise Invalid("Every completion must answer the task's prompt, in this project.")
    with transaction.atomic():
        task = Task.objects.create(
            project=project,
            kind=Task.Kind.RANKING,
            prompt=prompt,
            overlap=project.overlap,
            priority=priority,
        )
        TaskCompletion.objects.bulk_create(
            TaskCompletion(task=task, completion=c, position=i) for i, c in enumerate(completions)
        )
        return task


def ranking_tasks_import(
    *, project: Project, rows: Sequence[RankingTaskRow], source: str
) -> ImportResult:
    """Create prompts (if new) and one ranking task of K completions per row, all or none."""
    with transaction.atomic():
        by_hash = {
            p.content_hash: p
            for p in Prompt.objects.filter(
                project=project, content_hash__in={r.prompt.content_hash for r in rows}
            )
        }
        new: list[Prompt] = []
        models: dict[str, ModelVersion] = {}
        for row in rows:
            prompt = by_hash.get(row.prompt.content_hash)
            if prompt is None:
                prompt = _prompt_from_row(project=project, row=row.prompt, source=source)
                prompt.save()
                by_hash[prompt.content_hash] = prompt
                new.append(prompt)
            completions = []
            for c in row.completions:
                if c.model not in models:
                    models[c.model] = model_version_for_name(project=project, name=c.model)
                completions.append(
                    Completion(
                        prompt=prompt,
                        model_version=models[c.model],
                        text=c.text,
                        temperature=c.temperature,
                        top_p=c.top_p,
                        max_tokens=c.max_tokens,
                        seed=c.seed,
                        finished=c.finished,
                    )
                )
            Completion.objects.bulk_create(completions)
            ranking_task_create(project=project, prompt=prompt, completions=completions)
        return ImportResult(created=len(new), tasks_created=len(rows), splits=_split_counts(new))


def _split_counts(prompts: Sequence[Prompt]) -> dict[str, int]:
    counts = Counter(p.split for p in prompts)
    return {split: counts[split] for split in Split.values}


def comparison_task_create(
    *, project: Project, prompt: Prompt, first: Completion, second: Completion, priority: int = 0
) -> Task:
    """An A/B task between two models' outputs for one prompt (sides are shuffled per labeler)."""
    if (
        first.prompt_id != prompt.pk
        or second.prompt_id != prompt.pk
        or prompt.project_id != project.pk
    ):
        raise Invalid("Both completions must answer the task's prompt, in this project.")
    if first.model_version_id == second.model_version_id:
        raise Invalid("A comparison needs outputs of two different model versions.")
    with transaction.atomic():
        task = Task.objects.create(
            project=project,
            kind=Task.Kind.COMPARISON,
            prompt=prompt,
            overlap=project.overlap,
            priority=priority,
        )
        TaskCompletion.objects.bulk_create(
            [
                TaskCompletion(task=task, completion=first, position=0),
                TaskCompletion(task=task, completion=second, position=1),
            ]
        )
        return task


@dataclass(frozen=True)
class EvaluationTasks:
    """What evaluation_tasks_make did: tasks made, and prompts left without one because both
    models answered them with the same text (an A/B of two identical texts tells nothing and
    costs a labeler a judgement: 3 of 5 such tasks in issue 18's trial were)."""

    created: int
    skipped_identical: int


def evaluation_tasks_make(
    *, project: Project, model_a: ModelVersion, model_b: ModelVersion, split: str = Split.TEST
) -> EvaluationTasks:
    """One A/B task per prompt of `split` that both models have an output for (their first one),
    unless those two outputs are the same text (compared with outer whitespace stripped).

    Prompts that already have an A/B task between these two models are skipped, so calling this
    again after more samples arrive adds only the new prompts.
    """
    if model_a.pk == model_b.pk or {model_a.project_id, model_b.project_id} != {project.pk}:
        raise Invalid("Pick two different model versions of this project.")
    outputs: dict[int, dict[int, Completion]] = {}
    completions = Completion.objects.filter(
        prompt__project=project, prompt__split=split, model_version__in=[model_a, model_b]
    ).order_by("pk")
    for c in completions:
        outputs.setdefault(c.prompt_id, {}).setdefault(c.model_version_id, c)
    done = set(
        TaskCompletion.objects.filter(
            task__project=project,
            task__kind=Task.Kind.COMPARISON,
            completion__model_version__in=[model_a, model_b],
        )
        .values("task_id")
        .annotate(n=Count("completion__model_version", distinct=True))
        .filter(n=2)
        .values_list("task__prompt_id", flat=True)
    )
    created = identical = 0
    with transaction.atomic():
        prompts = {p.pk: p for p in Prompt.objects.filter(pk__in=outputs)}
        for prompt_id, by_model in sorted(outputs.items()):
            if prompt_id in done or len(by_model) < 2:
                continue
            first, second = by_model[model_a.pk], by_model[model_b.pk]
            if first.text.strip() == second.text.strip():
                identical += 1
                continue
            comparison_task_create(
                project=project, prompt=prompts[prompt_id], first=first, second=second
            )
            created += 1
    return EvaluationTasks(created=created, skipped_identical=identical)


def evaluation_tasks_create(
    *, project: Project, model_a: ModelVersion, model_b: ModelVersion, split: str = Split.TEST
) -> int:
    """evaluation_tasks_make, answering only how many tasks it made (what its callers in
    training/ read); the prompts skipped for identical outputs are logged."""
    made = evaluation_tasks_make(project=project, model_a=model_a, model_b=model_b, split=split)
    if made.skipped_identical:
        logger.info(
            "A/B tasks %s vs %s in project %s: %d made, %d prompt(s) skipped (identical outputs)",
            model_a.name,
            model_b.name,
            project.slug,
            made.created,
            made.skipped_identical,
        )
    return made.created
