"""Reads for pages and the API: access checks, queue counts, progress, agreement.

Every queryset here is scoped to a project the caller belongs to; a foreign id is a 404.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import combinations
from typing import Any

from django.db.models import (
    Count,
    Exists,
    F,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
)

from . import access, queue, sql
from .access import membership_require  # noqa: F401 - for labeling/views/runs.py until it moves
from .errors import NotFound
from .models import (
    FLAG_CHOICES,
    Completion,
    Demonstration,
    DemonstrationDraft,
    Lease,
    Membership,
    ModelVersion,
    Project,
    Ranking,
    RankingEntry,
    Role,
    Task,
)
from .sql import statements

FLAG_LABELS = dict(FLAG_CHOICES)


def projects_for_user(*, user_id: int) -> QuerySet[Project]:
    return Project.objects.filter(memberships__user_id=user_id).order_by("name")


@dataclass(frozen=True)
class HomeRow:
    project: Project
    role: str
    waiting: dict[str, int]
    held_lease_id: int | None


def home_rows(*, user_id: int, now: datetime) -> list[HomeRow]:
    """The user's projects with what waits for them per task kind: three queries in all."""
    memberships = list(
        Membership.objects.select_related("project")
        .filter(user_id=user_id)
        .order_by("project__name")
    )
    project_ids = [m.project_id for m in memberships]
    held: dict[int, int] = {}
    for project_id, lease_id in (
        Lease.objects.filter(
            user_id=user_id,
            task__project_id__in=project_ids,
            status=Lease.Status.ACTIVE,
            expires_at__gt=now,
        )
        .order_by("created_at")
        .values_list("task__project_id", "pk")
    ):
        held.setdefault(project_id, lease_id)
    open_tasks = (
        Task.objects.filter(project_id__in=project_ids, done=False)
        .exclude(prompt__submitted_by_id=user_id)
        .exclude(Exists(Lease.objects.filter(task=OuterRef("pk"), user_id=user_id)))
        .annotate(taken=queue.slots_taken(now))
        .filter(taken__lt=F("overlap"))
        .order_by()
        .values_list("project_id", "kind")
        .annotate(n=Count("pk"))
    )
    waiting = {(project_id, kind): n for project_id, kind, n in open_tasks}
    return [
        HomeRow(
            project=m.project,
            role=m.role,
            waiting={kind: waiting.get((m.project_id, kind), 0) for kind in Task.Kind.values},
            held_lease_id=held.get(m.project_id),
        )
        for m in memberships
    ]


def counts_today(*, user_id: int, now: datetime) -> dict[str, int]:
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "demonstrations": Demonstration.objects.filter(
            labeler_id=user_id, created_at__gte=start
        ).count(),
        "rankings": Ranking.objects.filter(labeler_id=user_id, created_at__gte=start).count(),
        "skipped": Lease.objects.filter(
            user_id=user_id, status=Lease.Status.SKIPPED, expires_at__gte=start
        ).count(),
    }


def project_progress(*, project: Project) -> dict[str, dict[str, int]]:
    """Per task kind: tasks, done, submissions collected, submissions wanted."""
    out: dict[str, dict[str, int]] = {}
    for kind in Task.Kind.values:
        tasks = Task.objects.filter(project=project, kind=kind)
        agg = tasks.aggregate(
            total=Count("pk", distinct=True),
            done=Count("pk", filter=Q(done=True), distinct=True),
        )
        wanted = sum(tasks.values_list("overlap", flat=True))
        submitted = Lease.objects.filter(
            task__project=project, task__kind=kind, status=Lease.Status.SUBMITTED
        ).count()
        out[kind] = {
            "tasks": agg["total"],
            "done": agg["done"],
            "submitted": submitted,
            "wanted": wanted,
        }
    return out


def labeler_counts(*, project: Project, now: datetime) -> list[dict]:
    """Per member: demonstrations, rankings (all time and last 7 days), skips, agreement."""
    week_ago = now - timedelta(days=7)
    members = (
        Membership.objects.filter(project=project).select_related("user").order_by("user__username")
    )
    demos = dict(
        Demonstration.objects.filter(task__project=project)
        .values_list("labeler_id")
        .annotate(n=Count("pk"))
    )
    ranks = dict(
        Ranking.objects.filter(task__project=project)
        .values_list("labeler_id")
        .annotate(n=Count("pk"))
    )
    skips = dict(
        Lease.objects.filter(task__project=project, status=Lease.Status.SKIPPED)
        .values_list("user_id")
        .annotate(n=Count("pk"))
    )
    recent = dict(
        Ranking.objects.filter(task__project=project, created_at__gte=week_ago)
        .values_list("labeler_id")
        .annotate(n=Count("pk"))
    )
    agreement = labeler_agreement(project=project)
    return [
        {
            "user_id": m.user_id,
            "username": m.user.username,
            "role": m.role,
            "demonstrations": demos.get(m.user_id, 0),
            "rankings": ranks.get(m.user_id, 0),
            "rankings_last_7_days": recent.get(m.user_id, 0),
            "skips": skips.get(m.user_id, 0),
            "agreement": agreement["per_labeler"].get(m.user_id),
        }
        for m in members
    ]


def _preferences(ranks: dict[int, int]) -> dict[tuple[int, int], int]:
    """For each unordered completion pair (a<b): +1 if a ranked better, -1 if b, ties omitted."""
    out = {}
    for a, b in combinations(sorted(ranks), 2):
        if ranks[a] != ranks[b]:
            out[(a, b)] = 1 if ranks[a] < ranks[b] else -1
    return out


def labeler_agreement(*, project: Project) -> dict:
    """Pairwise agreement on shared ranking tasks (InstructGPT reports 72.6% among labelers).

    For two labelers who ranked the same task, every completion pair both ordered strictly counts
    once: agreed if they put it the same way round. Returns overall, per labeler pair and per
    labeler (a labeler's agreement with everybody else).
    """
    by_task: dict[int, dict[int, dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
    entries = RankingEntry.objects.filter(ranking__task__project=project).values_list(
        "ranking__task_id", "ranking__labeler_id", "completion_id", "rank"
    )
    for task_id, labeler_id, completion_id, rank in entries.iterator(chunk_size=5000):
        by_task[task_id][labeler_id][completion_id] = rank
    pair_tot: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    per_labeler: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    agreed = total = 0
    for labelers in by_task.values():
        if len(labelers) < 2:
            continue
        prefs = {lab: _preferences(r) for lab, r in labelers.items()}
        for a, b in combinations(sorted(prefs), 2):
            shared = prefs[a].keys() & prefs[b].keys()
            same = sum(1 for p in shared if prefs[a][p] == prefs[b][p])
            pair_tot[(a, b)][0] += same
            pair_tot[(a, b)][1] += len(shared)
            for lab in (a, b):
                per_labeler[lab][0] += same
                per_labeler[lab][1] += len(shared)
            agreed += same
            total += len(shared)
    return {
        "overall": agreed / total if total else None,
        "comparisons": total,
        "pairs": {k: v[0] / v[1] for k, v in pair_tot.items() if v[1]},
        "per_labeler": {k: v[0] / v[1] for k, v in per_labeler.items() if v[1]},
    }


# --- pages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShownCompletion:
    label: str
    completion: Completion


@dataclass(frozen=True)
class LeasePage:
    lease: Lease
    project: Project
    messages: list[dict]
    completions: list[ShownCompletion]
    flags: list[tuple[str, str]]
    draft_text: str


def lease_page(*, lease_id: int, user_id: int) -> LeasePage:
    """Everything the task page shows, for the lease owner only (access.lease_require: 404
    otherwise); 3 queries.

    Completions come in the lease's shown_order with letters A, B, C...; the model that wrote
    each is not loaded, so a template cannot leak it.
    """
    lease = access.lease_require(lease_id=lease_id, user_id=user_id)
    project = lease.task.project
    completions: list[ShownCompletion] = []
    draft_text = ""
    if lease.task.kind in (Task.Kind.RANKING, Task.Kind.COMPARISON):
        by_id = {
            c.pk: c for c in Completion.objects.filter(pk__in=lease.shown_order).only("pk", "text")
        }
        completions = [
            ShownCompletion(label=chr(ord("A") + i), completion=by_id[cid])
            for i, cid in enumerate(lease.shown_order)
        ]
    else:
        draft_text = (
            DemonstrationDraft.objects.filter(lease_id=lease.pk)
            .values_list("text", flat=True)
            .first()
            or ""
        )
    return LeasePage(
        lease=lease,
        project=project,
        messages=lease.task.prompt.messages,
        completions=completions,
        flags=[(code, FLAG_LABELS.get(code, code)) for code in project.flags],
        draft_text=draft_text,
    )


def members_of(*, project: Project) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(project=project).select_related("user").order_by("user__username")
    )


def demonstrations_for_review(*, project: Project) -> QuerySet[Demonstration]:
    return (
        Demonstration.objects.filter(task__project=project)
        .select_related("prompt", "labeler")
        .order_by("-created_at", "-pk")
    )


def rankings_for_review(*, project: Project) -> QuerySet[Ranking]:
    """Rankings with their entries, completions and the model versions (reviewers see them)."""
    entries = RankingEntry.objects.select_related("completion__model_version").order_by(
        "rank", "pk"
    )
    return (
        Ranking.objects.filter(task__project=project)
        .select_related("task__prompt", "labeler")
        .prefetch_related(Prefetch("entries", queryset=entries))
        .order_by("-created_at", "-pk")
    )


def memberships_for_user(*, user_id: int) -> QuerySet[Membership]:
    """The caller's projects, each with their role."""
    return (
        Membership.objects.filter(user_id=user_id)
        .select_related("project")
        .order_by("project__name", "pk")
    )


def lease_task(*, lease_id: int, rows: list[tuple] | None = None) -> dict[str, Any]:
    """What a labeler is asked to do under a lease, as the API answers it (LeaseTaskSerializer's
    shape): the prompt, the outputs in this labeler's order (never their model), the flags asked,
    the draft of a demonstration. One hand-written query (statements.LEASE_TASK), a row per output
    of the task: `next` is the labeler loop's hot path. `rows` are that query's rows when the
    claim read them already (queue.Claimed).
    """
    found = rows or sql.rows(statements.LEASE_TASK_BY_ID, [lease_id], name="il_lease_task")
    if not found:
        raise NotFound("No such lease.")
    lease_pk, status, expires_at, task_id, shown_order, kind, prompt_id, messages = found[0][:8]
    flags, k, draft = found[0][8:11]
    texts = {row[11]: row[12] for row in found if row[11] is not None}
    return {
        "lease_id": lease_pk,
        "status": status,
        "expires_at": iso_datetime(sql.aware(expires_at)),
        "kind": kind,
        "task_id": task_id,
        "prompt": {"id": prompt_id, "messages": sql.json_out(messages)},
        "completions": [
            {"id": pk, "text": texts[pk]} for pk in sql.json_out(shown_order) if pk in texts
        ],
        "flags": sql.json_out(flags),
        "k": k,
        "draft": draft if kind == Task.Kind.DEMONSTRATION else None,
    }


def iso_datetime(value: datetime) -> str:
    """As DRF writes a datetime: ISO 8601 in UTC, with Z."""
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def shown_completions(*, lease: Lease) -> list[tuple[int, str]]:
    """(id, text) of the lease's completions in the order its labeler sees them, never the model."""
    texts = dict(Completion.objects.filter(pk__in=lease.shown_order).values_list("pk", "text"))
    return [(pk, texts[pk]) for pk in lease.shown_order if pk in texts]


def demonstrations_visible(*, membership: Membership) -> QuerySet[Demonstration]:
    """A labeler sees their own demonstrations; reviewers and admins see the project's."""
    demonstrations = (
        Demonstration.objects.filter(task__project_id=membership.project_id)
        .select_related("labeler")
        .order_by("pk")
    )
    if not membership.allows(Role.REVIEWER):
        demonstrations = demonstrations.filter(labeler_id=membership.user_id)
    return demonstrations


def rankings_visible(*, membership: Membership) -> QuerySet[Ranking]:
    """A labeler sees their own rankings; reviewers and admins see the project's."""
    rankings = (
        Ranking.objects.filter(task__project_id=membership.project_id)
        .select_related("labeler", "task")
        .prefetch_related("entries")
        .order_by("pk")
    )
    if not membership.allows(Role.REVIEWER):
        rankings = rankings.filter(labeler_id=membership.user_id)
    return rankings


# --- evaluation dashboard ------------------------------------------------------------------


def comparison_records(*, project: Project) -> list:
    """Every blind A/B judgement as a plain stats.Comparison (model names, lengths in characters)."""
    from .models import Comparison as ComparisonRow
    from .stats import Comparison

    rows = (
        ComparisonRow.objects.filter(task__project=project)
        .select_related("a_completion__model_version", "b_completion__model_version", "task")
        .order_by("pk")
    )
    return [
        Comparison(
            model_a=r.a_completion.model_version.name,
            model_b=r.b_completion.model_version.name,
            winner=r.winner,
            len_a=len(r.a_completion.text),
            len_b=len(r.b_completion.text),
            prompt_id=r.task.prompt_id,
            labeler_id=r.labeler_id,
        )
        for r in rows.iterator(chunk_size=2000)
    ]


def rating_rows(*, project: Project) -> list[tuple[str, int, list[str]]]:
    """(model version, likert, flags) for every ranked completion: metadata rates per model."""
    entries = RankingEntry.objects.filter(ranking__task__project=project).values_list(
        "completion__model_version__name", "likert", "flags"
    )
    return [(name, likert, flags) for name, likert, flags in entries.iterator(chunk_size=5000)]


def reward_model_accuracies(*, project: Project) -> list[dict]:
    """Held-out pair accuracy of each reward model, as its training run measured it."""
    from training.models import RunMetric

    versions = ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.REWARD).order_by(
        "pk"
    )
    out = []
    for version in versions.select_related("training_run"):
        point = (
            RunMetric.objects.filter(run=version.training_run, name="val/pair_accuracy")
            .order_by("-step")
            .first()
            if version.training_run_id
            else None
        )
        out.append({"model": version.name, "val_pair_accuracy": point.value if point else None})
    return out


@dataclass(frozen=True)
class Dashboard:
    models: list[str]
    baseline: str | None
    win_rates: list
    ratings: list
    ratings_lc: list
    flags: list[str]
    metadata: dict
    likert: dict
    reward_models: list[dict]
    agreement: float | None
    comparisons: int


def evaluation_dashboard(*, project: Project, baseline: str | None = None) -> Dashboard:
    """Everything the reviewer dashboard shows, computed from the project's judgements."""
    from . import stats

    comparisons = comparison_records(project=project)
    rows = rating_rows(project=project)
    compared = sorted({c.model_a for c in comparisons} | {c.model_b for c in comparisons})
    models = sorted(set(compared) | {name for name, _, _ in rows})
    if baseline not in compared:
        # Default baseline: the oldest compared model version (usually the SFT policy).
        order = dict(
            ModelVersion.objects.filter(project=project, name__in=compared).values_list(
                "name", "pk"
            )
        )
        baseline = min(compared, key=lambda n: order.get(n, 0)) if compared else None
    win_rates = [
        stats.win_rate(comparisons, model=m, baseline=baseline, n_boot=500)
        for m in compared
        if m != baseline
    ]
    return Dashboard(
        models=models,
        baseline=baseline,
        win_rates=[w for w in win_rates if w.n],
        ratings=stats.bradley_terry(comparisons, anchor=baseline, n_boot=100)
        if comparisons
        else [],
        ratings_lc=stats.bradley_terry(
            comparisons, anchor=baseline, n_boot=100, length_controlled=True
        )
        if comparisons
        else [],
        flags=list(project.flags),
        metadata=stats.metadata_rates(rows, flags=project.flags),
        likert=stats.mean_likert(rows),
        reward_models=reward_model_accuracies(project=project),
        agreement=labeler_agreement(project=project)["overall"],
        comparisons=len(comparisons),
    )
