"""Reads for reviewers: progress, per-labeler counts, agreement, submitted work.

Every queryset here is scoped to a project the caller belongs to (the view checked the
membership, labeling/access.py).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta

from django.db.models import Count, Prefetch, Q, QuerySet

from .. import sql, stats, tally
from ..models import (
    Comparison,
    Demonstration,
    Membership,
    Project,
    Ranking,
    RankingEntry,
    Role,
    Task,
    TaskCompletion,
)
from ..sql import statements


def project_progress(*, project: Project) -> dict[str, dict[str, int]]:
    """Per task kind: tasks, done, submissions collected, submissions wanted (labeling/tally.py:
    the database's counters on PostgreSQL)."""
    return tally.progress(project_id=project.pk)


def labeler_counts(*, project: Project, now: datetime, agreement: dict | None = None) -> list[dict]:
    """Per member: demonstrations, rankings (all time and last 7 days), skips, agreement.

    Totals come from the database's counters (labeling/tally.py); the last 7 days from the
    rankings' creation index, which reads only that week's rankings.
    """
    week_ago = now - timedelta(days=7)
    members = (
        Membership.objects.filter(project=project).select_related("user").order_by("user__username")
    )
    totals = tally.labeler_totals(project_id=project.pk)
    recent = dict(
        Ranking.objects.filter(task__project=project, created_at__gte=week_ago)
        .values_list("labeler_id")
        .annotate(n=Count("pk"))
    )
    if agreement is None:
        agreement = labeler_agreement(project=project)
    none = dict.fromkeys([*Task.Kind.values, "skipped"], 0)
    return [
        {
            "user_id": m.user_id,
            "username": m.user.username,
            "role": m.role,
            "demonstrations": totals.get(m.user_id, none)[Task.Kind.DEMONSTRATION],
            "rankings": totals.get(m.user_id, none)[Task.Kind.RANKING],
            "rankings_last_7_days": recent.get(m.user_id, 0),
            "skips": totals.get(m.user_id, none)["skipped"],
            "agreement": agreement["per_labeler"].get(m.user_id),
        }
        for m in members
    ]


def labeler_agreement(*, project: Project) -> dict:
    """Pairwise agreement of labelers on the project's shared ranking tasks
    (stats.pairwise_agreement, counted by the database: statements.AGREEMENT_PAIRS): overall,
    per labeler pair, per labeler, and how many completion pairs were compared, as a dict of
    Agreement's fields."""
    rows = sql.rows_planned(
        statements.AGREEMENT_PLANS, statements.AGREEMENT_PAIRS, [project.pk, statements.ALL_IDS]
    )
    return asdict(stats.agreement_from_pair_counts(rows))


def demonstrations_for_review(*, project: Project) -> QuerySet[Demonstration]:
    return (
        Demonstration.objects.filter(task__project=project)
        .select_related("prompt", "labeler")
        .order_by("-created_at", "-pk")
    )


def ranking_filter_choices(*, project: Project) -> dict[str, list[str]]:
    """What the rankings list can be narrowed to: the project's labelers who ranked, its model
    versions with ranked outputs, and its flags."""
    labelers = (
        Ranking.objects.filter(task__project=project)
        .values_list("labeler__username", flat=True)
        .distinct()
        .order_by("labeler__username")
    )
    models = (
        RankingEntry.objects.filter(ranking__task__project=project)
        .values_list("completion__model_version__name", flat=True)
        .distinct()
        .order_by("completion__model_version__name")
    )
    return {"labelers": list(labelers), "models": list(models), "flags": list(project.flags)}


def rankings_for_review(
    *, project: Project, labeler: str = "", model: str = "", flag: str = ""
) -> QuerySet[Ranking]:
    """Rankings with their entries, completions and the model versions (reviewers see them);
    only a labeler's (by username), those with an output of a model version (by name), or those
    where some output got a flag (its code), when given."""
    entries = RankingEntry.objects.select_related("completion__model_version").order_by(
        "rank", "pk"
    )
    rankings = Ranking.objects.filter(task__project=project)
    if labeler:
        rankings = rankings.filter(labeler__username=labeler)
    if model:
        rankings = rankings.filter(
            pk__in=RankingEntry.objects.filter(completion__model_version__name=model,
                                               completion__model_version__project=project)
            .values("ranking_id")
        )  # fmt: skip
    if flag:
        # The flags are a JSON list of codes: its text holds "code" exactly when it has the code
        # (a text match works on SQLite too, where JSON containment does not).
        rankings = rankings.filter(
            pk__in=RankingEntry.objects.filter(flags__icontains=f'"{flag}"').values("ranking_id")
        )
    return (
        rankings.select_related("task__prompt", "labeler")
        .prefetch_related(Prefetch("entries", queryset=entries))
        .order_by("-created_at", "-pk")
    )


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


def comparisons_for_review(*, project_id: int, model: str | None = None) -> QuerySet[Comparison]:
    """A project's blind comparisons with both outputs and the models behind them, oldest first;
    `model` keeps those where it was one of the two."""
    comparisons = (
        Comparison.objects.filter(task__project_id=project_id)
        .select_related(
            "labeler",
            "task__prompt",
            "a_completion__model_version",
            "b_completion__model_version",
        )
        .order_by("pk")
    )
    if model is not None:
        comparisons = comparisons.filter(
            Q(a_completion__model_version__name=model) | Q(b_completion__model_version__name=model)
        )
    return comparisons


def tasks_for_review(*, project_id: int, kind: str | None = None) -> QuerySet[Task]:
    """A project's tasks, newest first, with their outputs in position order and the model
    behind each."""
    outputs = TaskCompletion.objects.select_related("completion__model_version").order_by(
        "position"
    )
    tasks = (
        Task.objects.filter(project_id=project_id)
        .select_related("prompt")
        .prefetch_related(Prefetch("task_completions", queryset=outputs))
        .order_by("-pk")
    )
    return tasks if kind is None else tasks.filter(kind=kind)


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
