"""Writes that span models. Each public function owns its transaction; views and tasks call one.

Keyword-only, typed, named <entity>_<verb>. The clock is passed in (`now`), never read here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Count

from . import queue
from .errors import Conflict, Invalid
from .imports import PromptRow, RankingTaskRow
from .models import (
    FLAG_CODES,
    MAX_RESPONSE_CHARS,
    Comparison,
    Completion,
    Demonstration,
    DemonstrationDraft,
    Lease,
    Membership,
    ModelVersion,
    Project,
    Prompt,
    Ranking,
    RankingEntry,
    Role,
    Split,
    Task,
    TaskCompletion,
    Winner,
)

MAX_TIME_SPENT_MS = 24 * 3600 * 1000
MAX_NOTES_CHARS = 5000


# --- projects and members ------------------------------------------------------------------


def project_create(
    *,
    name: str,
    slug: str,
    creator: AbstractBaseUser,
    guidelines: str = "",
    k: int = 4,
    overlap: int = 1,
    demo_overlap: int = 1,
    flags: Sequence[str] | None = None,
    lease_seconds: int = 900,
) -> Project:
    if flags is not None and not set(flags) <= FLAG_CODES:
        raise Invalid(f"Unknown flag(s): {', '.join(sorted(set(flags) - FLAG_CODES))}")
    with transaction.atomic():
        if Project.objects.filter(slug=slug).exists() or Project.objects.filter(name=name).exists():
            raise Invalid("A project with this name or slug already exists.")
        project = Project(
            name=name,
            slug=slug,
            guidelines=guidelines,
            k=k,
            overlap=overlap,
            demo_overlap=demo_overlap,
            lease_seconds=lease_seconds,
            created_by=creator,
        )
        if flags is not None:
            project.flags = list(flags)
        project.full_clean(exclude=["base_model", "created_by"])
        project.save()
        Membership.objects.create(project=project, user=creator, role=Role.ADMIN)
        return project


def membership_set(*, project: Project, user: AbstractBaseUser, role: str) -> Membership:
    if role not in Role.values:
        raise Invalid(f"Unknown role {role!r}.")
    with transaction.atomic():
        admins = Membership.objects.select_for_update().filter(project=project, role=Role.ADMIN)
        if role != Role.ADMIN and list(admins.values_list("user_id", flat=True)) == [user.pk]:
            raise Invalid("A project keeps at least one admin.")
        membership, _ = Membership.objects.update_or_create(
            project=project, user=user, defaults={"role": role}
        )
        return membership


def member_add(*, project: Project, username: str, role: str) -> Membership:
    """Give an existing account a role in the project (or change it)."""
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise Invalid(f"No user is called {username!r}; invite them instead.")
    return membership_set(project=project, user=user, role=role)


def member_invite(*, project: Project, username: str, email: str, role: str) -> Membership:
    """Create an account without a usable password and make it a member; it sets one by link."""
    if role not in Role.values:
        raise Invalid(f"Unknown role {role!r}.")
    with transaction.atomic():
        users = get_user_model().objects
        if users.filter(username=username).exists():
            raise Invalid(f"The user {username!r} already exists; add them instead.")
        user = users.create_user(username=username, email=email, password=None)
        return Membership.objects.create(project=project, user=user, role=role)


def membership_remove(*, project: Project, user_id: int) -> None:
    with transaction.atomic():
        admins = Membership.objects.filter(project=project, role=Role.ADMIN)
        if admins.count() == 1 and admins.filter(user_id=user_id).exists():
            raise Invalid("A project keeps at least one admin.")
        Membership.objects.filter(project=project, user_id=user_id).delete()


def project_update_guidelines(*, project: Project, guidelines: str) -> Project:
    if len(guidelines) > 100_000:
        raise Invalid("Guidelines are limited to 100,000 characters.")
    project.guidelines = guidelines
    project.save(update_fields=["guidelines"])
    return project


# --- prompts, completions and tasks --------------------------------------------------------


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
        return ImportResult(created=len(prompts), tasks_created=len(tasks))


def model_version_for_name(*, project: Project, name: str) -> ModelVersion:
    version, _ = ModelVersion.objects.get_or_create(
        project=project, name=name, defaults={"kind": ModelVersion.Kind.EXTERNAL}
    )
    return version


def ranking_task_create(
    *, project: Project, prompt: Prompt, completions: Sequence[Completion], priority: int = 0
) -> Task:
    """A ranking task over exactly K distinct completions of one prompt."""
    if len(completions) != project.k:
        raise Invalid(f"A ranking task needs {project.k} completions; got {len(completions)}.")
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
        created = 0
        models: dict[str, ModelVersion] = {}
        for row in rows:
            prompt = by_hash.get(row.prompt.content_hash)
            if prompt is None:
                prompt = _prompt_from_row(project=project, row=row.prompt, source=source)
                prompt.save()
                by_hash[prompt.content_hash] = prompt
                created += 1
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
        return ImportResult(created=created, tasks_created=len(rows))


# --- submits -------------------------------------------------------------------------------


def _check_time_spent(time_spent_ms: Any) -> int:
    if isinstance(time_spent_ms, bool) or not isinstance(time_spent_ms, int):
        raise Invalid("time_spent_ms must be a whole number of milliseconds.")
    if not 0 <= time_spent_ms <= MAX_TIME_SPENT_MS:
        raise Invalid("time_spent_ms is out of range.")
    return time_spent_ms


def demonstration_submit(
    *, lease_id: int, user_id: int, text: str, time_spent_ms: int = 0, now: datetime
) -> tuple[Demonstration, bool]:
    """Store the labeler's demonstration. Returns (demonstration, created).

    The same submit twice (double click, retry, two tabs) gives back the first one, created=False.
    """
    if not isinstance(text, str) or not text.strip():
        raise Invalid("The demonstration is empty.")
    if len(text) > MAX_RESPONSE_CHARS:
        raise Invalid(f"The demonstration is longer than {MAX_RESPONSE_CHARS:,} characters.")
    if "\x00" in text:
        raise Invalid("The demonstration contains a NUL character.")
    time_spent_ms = _check_time_spent(time_spent_ms)
    with transaction.atomic():
        lease = queue.lock_for_submit(lease_id=lease_id, user_id=user_id, now=now)
        if lease.task.kind != Task.Kind.DEMONSTRATION:
            raise Invalid("This task asks for a ranking, not a demonstration.")
        if lease.status == Lease.Status.SUBMITTED:
            return Demonstration.objects.get(lease=lease), False
        demonstration = Demonstration.objects.create(
            task_id=lease.task_id,
            prompt_id=lease.task.prompt_id,
            labeler_id=user_id,
            lease=lease,
            text=text.strip(),
            time_spent_ms=time_spent_ms,
            created_at=now,
        )
        DemonstrationDraft.objects.filter(lease=lease).delete()
        queue.mark_submitted(lease=lease, now=now)
        return demonstration, True


def demonstration_draft_save(*, lease_id: int, user_id: int, text: str, now: datetime) -> None:
    if len(text) > MAX_RESPONSE_CHARS:
        raise Invalid(f"The draft is longer than {MAX_RESPONSE_CHARS:,} characters.")
    with transaction.atomic():
        lease = queue.lock_for_submit(lease_id=lease_id, user_id=user_id, now=now, lock_task=False)
        if lease.status == Lease.Status.SUBMITTED:
            return
        DemonstrationDraft.objects.update_or_create(
            lease=lease, defaults={"text": text, "updated_at": now}
        )


@dataclass(frozen=True)
class EntryInput:
    completion: int
    rank: int
    likert: int
    flags: tuple[str, ...] = ()


def _validate_entries(
    entries: Iterable[Any], *, completion_ids: set[int], k: int, asked_flags: set[str]
) -> list[EntryInput]:
    errors: list[str] = []
    parsed: list[EntryInput] = []
    for i, raw in enumerate(entries):
        where = f"entry {i + 1}"
        if not isinstance(raw, dict | EntryInput):
            errors.append(f"{where} must be an object")
            continue
        item = raw if isinstance(raw, dict) else raw.__dict__
        values = {}
        for key, low, high in (("completion", 1, 2**63 - 1), ("rank", 1, k), ("likert", 1, 7)):
            value = item.get(key)
            if isinstance(value, bool) or not isinstance(value, int):
                errors.append(f'{where}: "{key}" must be a whole number')
                break
            if not low <= value <= high:
                errors.append(f'{where}: "{key}" must be between {low} and {high}')
                break
            values[key] = value
        else:
            flags = item.get("flags", ())
            if not isinstance(flags, list | tuple) or not all(isinstance(f, str) for f in flags):
                errors.append(f'{where}: "flags" must be a list of flag codes')
                continue
            unknown = set(flags) - asked_flags
            if unknown:
                errors.append(
                    f"{where}: flag(s) not asked in this project: {', '.join(sorted(unknown))}"
                )
                continue
            parsed.append(EntryInput(flags=tuple(sorted(set(flags))), **values))
    if errors:
        raise Invalid("The ranking is not valid.", details=[{"error": e} for e in errors])
    given = [e.completion for e in parsed]
    if len(set(given)) != len(given):
        raise Invalid("A completion appears twice in the ranking.")
    if set(given) != completion_ids:
        missing, foreign = completion_ids - set(given), set(given) - completion_ids
        problems = []
        if missing:
            problems.append(f"missing completion(s) {sorted(missing)}")
        if foreign:
            problems.append(f"completion(s) {sorted(foreign)} are not in this task")
        raise Invalid("Rank every completion of the task, and only those: " + "; ".join(problems))
    return parsed


def ranking_submit(
    *,
    lease_id: int,
    user_id: int,
    entries: Sequence[Any],
    none_acceptable: bool = False,
    notes: str = "",
    time_spent_ms: int = 0,
    now: datetime,
) -> tuple[Ranking, bool]:
    """Store a ranking: a rank (1 = best, ties allowed), a 1-7 rating and flags per completion.

    Returns (ranking, created); a repeated submit returns the first ranking with created=False.
    """
    if not isinstance(none_acceptable, bool):
        raise Invalid("none_acceptable must be true or false.")
    if not isinstance(notes, str) or len(notes) > MAX_NOTES_CHARS:
        raise Invalid(f"Notes must be text of at most {MAX_NOTES_CHARS:,} characters.")
    if not isinstance(entries, list | tuple):
        raise Invalid("entries must be a list.")
    time_spent_ms = _check_time_spent(time_spent_ms)
    with transaction.atomic():
        lease = queue.lock_for_submit(lease_id=lease_id, user_id=user_id, now=now)
        task = lease.task
        if task.kind != Task.Kind.RANKING:
            raise Invalid("This task asks for a demonstration, not a ranking.")
        if lease.status == Lease.Status.SUBMITTED:
            return Ranking.objects.get(lease=lease), False
        project = task.project
        # What the labeler was shown is the task's outputs (the claim copied them, shuffled).
        completion_ids = set(lease.shown_order)
        parsed = _validate_entries(
            entries, completion_ids=completion_ids, k=project.k, asked_flags=set(project.flags)
        )
        ranking = Ranking(
            task=task,
            labeler_id=user_id,
            lease=lease,
            none_acceptable=none_acceptable,
            notes=notes.strip(),
            time_spent_ms=time_spent_ms,
            shown_order=lease.shown_order,
            created_at=now,
        )
        rows = [
            RankingEntry(
                ranking=ranking,
                completion_id=e.completion,
                rank=e.rank,
                likert=e.likert,
                flags=list(e.flags),
            )
            for e in parsed
        ]
        queue.insert_ranking(lease=lease, ranking=ranking, entries=rows, now=now)
        return ranking, True


# --- blind pairwise evaluation -------------------------------------------------------------


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


def evaluation_tasks_create(
    *, project: Project, model_a: ModelVersion, model_b: ModelVersion, split: str = Split.TEST
) -> int:
    """One A/B task per prompt of `split` that both models have an output for (their first one).

    Prompts that already have an A/B task between these two models are skipped, so calling this
    again after more samples arrive adds only the new prompts. Returns how many tasks it made.
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
    created = 0
    with transaction.atomic():
        prompts = {p.pk: p for p in Prompt.objects.filter(pk__in=outputs)}
        for prompt_id, by_model in sorted(outputs.items()):
            if prompt_id in done or len(by_model) < 2:
                continue
            comparison_task_create(
                project=project,
                prompt=prompts[prompt_id],
                first=by_model[model_a.pk],
                second=by_model[model_b.pk],
            )
            created += 1
    return created


def comparison_submit(
    *,
    lease_id: int,
    user_id: int,
    winner: str,
    notes: str = "",
    time_spent_ms: int = 0,
    now: datetime,
) -> tuple[Comparison, bool]:
    """Store a blind A/B judgement; a repeat returns the first with created=False."""
    if winner not in Winner.values:
        raise Invalid(f"winner must be one of {', '.join(Winner.values)}.")
    if not isinstance(notes, str) or len(notes) > MAX_NOTES_CHARS:
        raise Invalid(f"Notes must be text of at most {MAX_NOTES_CHARS:,} characters.")
    time_spent_ms = _check_time_spent(time_spent_ms)
    with transaction.atomic():
        lease = queue.lock_for_submit(lease_id=lease_id, user_id=user_id, now=now)
        if lease.task.kind != Task.Kind.COMPARISON:
            raise Invalid("This task is not an A/B comparison.")
        if lease.status == Lease.Status.SUBMITTED:
            return Comparison.objects.get(lease=lease), False
        a_id, b_id = lease.shown_order
        comparison = Comparison.objects.create(
            task_id=lease.task_id,
            labeler_id=user_id,
            lease=lease,
            a_completion_id=a_id,
            b_completion_id=b_id,
            winner=winner,
            notes=notes.strip(),
            time_spent_ms=time_spent_ms,
            created_at=now,
        )
        queue.mark_submitted(lease=lease, now=now)
        return comparison, True
