"""Reads for reviewers: progress, per-labeler counts, agreement, submitted work.

Every queryset here is scoped to a project the caller belongs to (the view checked the
membership, labeling/access.py).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from itertools import combinations

from django.db.models import Count, Prefetch, Q, QuerySet

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
