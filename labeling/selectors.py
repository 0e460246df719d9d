"""Reads for pages and the API: access checks, queue counts, progress, agreement.

Every queryset here is scoped to a project the caller belongs to; a foreign id is a 404.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import combinations

from django.db.models import Count, F, Q, QuerySet

from .errors import Forbidden, NotFound
from .models import (
    Completion,
    Demonstration,
    Lease,
    Membership,
    Project,
    Ranking,
    RankingEntry,
    Role,
    Task,
)


def membership_require(
    *,
    user_id: int,
    project_id: int | None = None,
    slug: str | None = None,
    role: str = Role.LABELER,
) -> Membership:
    """The caller's membership with at least `role`: not a member → 404, lower role → 403."""
    memberships = Membership.objects.select_related("project").filter(user_id=user_id)
    if project_id is not None:
        memberships = memberships.filter(project_id=project_id)
    elif slug is not None:
        memberships = memberships.filter(project__slug=slug)
    else:
        raise NotFound("No such project.")
    membership = memberships.first()
    if membership is None:
        raise NotFound("No such project.")
    if not membership.allows(role):
        raise Forbidden(f"This needs the {role} role in {membership.project.name}.")
    return membership


def projects_for_user(*, user_id: int) -> QuerySet[Project]:
    return Project.objects.filter(memberships__user_id=user_id).order_by("name")


def _open_slots_q(now: datetime) -> Q:
    return Q(leases__status=Lease.Status.SUBMITTED) | Q(
        leases__status=Lease.Status.ACTIVE, leases__expires_at__gt=now
    )


def waiting_counts(*, project: Project, user_id: int, now: datetime) -> dict[str, int]:
    """Tasks of each kind this user could be given now (approximate: ignores racing claimers)."""
    counts: dict[str, int] = {}
    for kind in Task.Kind.values:
        counts[kind] = (
            Task.objects.filter(project=project, kind=kind, done=False)
            .exclude(prompt__submitted_by_id=user_id)
            .exclude(leases__user_id=user_id)
            .annotate(taken=Count("leases", filter=_open_slots_q(now)))
            .filter(taken__lt=F("overlap"))
            .count()
        )
    return counts


@dataclass(frozen=True)
class HomeRow:
    project: Project
    role: str
    waiting: dict[str, int]
    held_lease_id: int | None


def home_rows(*, user_id: int, now: datetime) -> list[HomeRow]:
    rows = []
    memberships = Membership.objects.select_related("project").filter(user_id=user_id)
    for m in memberships.order_by("project__name"):
        held = (
            Lease.objects.filter(
                user_id=user_id,
                task__project=m.project,
                status=Lease.Status.ACTIVE,
                expires_at__gt=now,
            )
            .values_list("pk", flat=True)
            .first()
        )
        rows.append(
            HomeRow(
                project=m.project,
                role=m.role,
                waiting=waiting_counts(project=m.project, user_id=user_id, now=now),
                held_lease_id=held,
            )
        )
    return rows


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


def memberships_for_user(*, user_id: int) -> QuerySet[Membership]:
    """The caller's projects, each with their role."""
    return (
        Membership.objects.filter(user_id=user_id)
        .select_related("project")
        .order_by("project__name", "pk")
    )


def project_members(*, project: Project) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(project=project)
        .select_related("user")
        .order_by("user__username", "pk")
    )


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
