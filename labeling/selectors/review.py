"""Reads for reviewers: progress, per-labeler counts, agreement, submitted work.

Every queryset here is scoped to a project the caller belongs to (the view checked the
membership, labeling/access.py).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta

from django.db.models import Count, Prefetch, Q, QuerySet

from .. import stats
from ..models import Demonstration, Lease, Membership, Project, Ranking, RankingEntry, Role, Task


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


def labeler_agreement(*, project: Project) -> dict:
    """Pairwise agreement of labelers on the project's shared ranking tasks
    (stats.pairwise_agreement): overall, per labeler pair, per labeler, and how many completion
    pairs were compared, as a dict of Agreement's fields."""
    entries = RankingEntry.objects.filter(ranking__task__project=project).values_list(
        "ranking__task_id", "ranking__labeler_id", "completion_id", "rank"
    )
    return asdict(stats.pairwise_agreement(entries.iterator(chunk_size=5000)))


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
