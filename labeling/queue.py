"""The labeling queue: claim, heartbeat, reclaim, skip, and the lease check before a submit.

Every lock rule lives here.

- A task's free slots = overlap - (submitted leases + active unexpired leases). Any code that adds
  a lease to a task holds that task's row lock (SELECT ... FOR UPDATE) while it re-counts, so two
  claimers can never both take the last slot. Claimers first try SKIP LOCKED so they spread over
  tasks instead of queueing behind one another; only when every candidate is locked does a
  claimer wait, so nobody is told "nothing to do" while a slot is free.
- One lease row per (task, user), ever (a DB constraint): a labeler never gets a task twice.
- A submit locks its lease row (blocking, not skip-locked): of two identical submits the second
  waits and then sees the first's result, which is how submits are idempotent.
- On SQLite (the embedded default) FOR UPDATE is a no-op, but the connection begins every
  transaction IMMEDIATE (settings), which serialises writers: the same re-count then holds.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce

from .errors import Conflict, NotFound
from .models import Lease, Membership, Project, Role, Task

_shuffle = random.SystemRandom().shuffle


def _lease_commit_may_lag() -> None:
    """Let this transaction's commit return before its WAL reaches disk (PostgreSQL only).

    Only for lease bookkeeping (claim, heartbeat): if the server crashes in that instant the lease
    is gone and the labeler claims again; nothing they entered is lost. Submits never use this:
    they commit durably. Saves one fsync per claim, the largest single cost of the labeler loop.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def _holding(now: datetime) -> Q:
    """Leases that occupy a slot: submitted, or active and not yet expired."""
    return Q(status=Lease.Status.SUBMITTED) | Q(status=Lease.Status.ACTIVE, expires_at__gt=now)


def _slots_taken(task_id: int, now: datetime, *, excluding_lease: int | None = None) -> int:
    leases = Lease.objects.filter(_holding(now), task_id=task_id)
    if excluding_lease is not None:
        leases = leases.exclude(pk=excluding_lease)
    return leases.count()


def slots_taken(now: datetime) -> Coalesce:
    """Per task row: how many of its overlap slots are held now (an expression to annotate)."""
    taken = (
        Lease.objects.filter(_holding(now), task=OuterRef("pk"))
        .order_by()
        .values("task")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(taken, output_field=IntegerField()), Value(0))


def _candidates(*, user_id: int, project: Project, kind: str, now: datetime, tried: set[int]):
    mine_done = Lease.objects.filter(task=OuterRef("pk"), user_id=user_id).exclude(
        status=Lease.Status.ACTIVE
    )
    mine = Lease.objects.filter(task=OuterRef("pk"), user_id=user_id).values("pk")[:1]
    return (
        Task.objects.filter(project=project, kind=kind, done=False)
        .select_related("prompt", "project")
        .exclude(pk__in=tried)
        .exclude(prompt__submitted_by_id=user_id)
        .exclude(Exists(mine_done))
        .annotate(taken=slots_taken(now))
        .annotate(my_lease=Subquery(mine, output_field=IntegerField()))
        .filter(taken__lt=F("overlap"))
        .order_by("-priority", "id")
    )


def claim_next(*, user_id: int, project: Project, kind: str, now: datetime) -> Lease | None:
    """Lease the next task of `kind` for the user, or return None when nothing is left for them.

    A labeler who already holds an unexpired lease of this kind in the project gets that one back,
    so a refresh or a double click on "next" never takes a second slot.
    """
    with transaction.atomic():
        _lease_commit_may_lag()
        held = (
            Lease.objects.filter(
                user_id=user_id,
                task__project=project,
                task__kind=kind,
                status=Lease.Status.ACTIVE,
                expires_at__gt=now,
            )
            .select_related("task__prompt", "task__project")
            .order_by("created_at")
            .first()
        )
        if held is not None:
            return held
        tried: set[int] = set()
        while True:
            base = _candidates(user_id=user_id, project=project, kind=kind, now=now, tried=tried)
            task = base.select_for_update(skip_locked=True, of=("self",)).first()
            if task is None:
                # Every open candidate is locked by another claimer (or none is left): wait for
                # the first one instead of answering "nothing to do" while it may have slots.
                task = base.select_for_update(of=("self",)).first()
                if task is None:
                    return None
            # Re-count under the row lock: the subquery above ran before we held it.
            if _slots_taken(task.pk, now) >= task.overlap:
                tried.add(task.pk)
                continue
            return _lease_task(task=task, user_id=user_id, project=project, now=now)


def _lease_task(*, task: Task, user_id: int, project: Project, now: datetime) -> Lease:
    expires_at = now + timedelta(seconds=project.lease_seconds)
    if task.my_lease is not None:  # the user's own expired lease: re-activate it in place
        lease = Lease.objects.select_related("task__prompt", "task__project").get(pk=task.my_lease)
        lease.expires_at = expires_at
        lease.heartbeat_at = now
        lease.save(update_fields=["expires_at", "heartbeat_at"])
        return lease
    shown_order: list[int] = []
    if task.kind in (Task.Kind.RANKING, Task.Kind.COMPARISON):
        shown_order = list(task.task_completions.values_list("completion_id", flat=True))
        _shuffle(shown_order)
    return Lease.objects.create(
        task=task,
        user_id=user_id,
        status=Lease.Status.ACTIVE,
        shown_order=shown_order,
        created_at=now,
        expires_at=expires_at,
        heartbeat_at=now,
    )


def get_own_lease(*, lease_id: int, user_id: int) -> Lease:
    """The user's lease, in a project they still belong to; anyone else's is a 404."""
    lease = (
        Lease.objects.select_related("task__project", "task__prompt")
        .filter(pk=lease_id, user_id=user_id)
        .filter(
            Exists(Membership.objects.filter(project=OuterRef("task__project"), user_id=user_id))
        )
        .first()
    )
    if lease is None:
        raise NotFound("No such lease.")
    return lease


def _lock_own_lease(*, lease_id: int, user_id: int) -> Lease:
    lease = (
        Lease.objects.select_for_update(of=("self",))
        .select_related("task__project")
        .filter(pk=lease_id, user_id=user_id)
        .filter(
            Exists(
                Membership.objects.filter(
                    project=OuterRef("task__project"),
                    user_id=user_id,
                    role__in=[Role.LABELER, Role.REVIEWER, Role.ADMIN],
                )
            )
        )
        .first()
    )
    if lease is None:
        raise NotFound("No such lease.")
    return lease


def heartbeat(*, lease_id: int, user_id: int, now: datetime) -> Lease:
    """Extend an unexpired active lease. An expired one answers 409: reclaim it instead."""
    with transaction.atomic():
        _lease_commit_may_lag()
        lease = _lock_own_lease(lease_id=lease_id, user_id=user_id)
        if lease.status != Lease.Status.ACTIVE:
            raise Conflict(f"This task is already {lease.status}.")
        if lease.expires_at <= now:
            raise Conflict("Your lease on this task expired.")
        lease.expires_at = now + timedelta(seconds=lease.task.project.lease_seconds)
        lease.heartbeat_at = now
        lease.save(update_fields=["expires_at", "heartbeat_at"])
        return lease


def reclaim(*, lease_id: int, user_id: int, now: datetime) -> Lease:
    """Re-activate the user's expired lease if the task still has a free slot, else 409."""
    with transaction.atomic():
        lease = _lock_own_lease(lease_id=lease_id, user_id=user_id)
        if lease.status != Lease.Status.ACTIVE:
            raise Conflict(f"This task is already {lease.status}.")
        if lease.expires_at > now:
            return heartbeat(lease_id=lease_id, user_id=user_id, now=now)
        task = Task.objects.select_for_update().get(pk=lease.task_id)
        if _slots_taken(task.pk, now, excluding_lease=lease.pk) >= task.overlap:
            raise Conflict("Your lease expired and the task went to another labeler.")
        lease.expires_at = now + timedelta(seconds=lease.task.project.lease_seconds)
        lease.heartbeat_at = now
        lease.save(update_fields=["expires_at", "heartbeat_at"])
        return lease


def skip(*, lease_id: int, user_id: int, reason: str, now: datetime) -> Lease:
    """Give the task back to the queue; this labeler will not be offered it again."""
    with transaction.atomic():
        lease = _lock_own_lease(lease_id=lease_id, user_id=user_id)
        if lease.status == Lease.Status.SKIPPED:
            return lease
        if lease.status != Lease.Status.ACTIVE:
            raise Conflict(f"This task is already {lease.status}.")
        lease.status = Lease.Status.SKIPPED
        lease.skip_reason = reason
        lease.expires_at = now
        lease.save(update_fields=["status", "skip_reason", "expires_at"])
        return lease


def lock_for_submit(*, lease_id: int, user_id: int, now: datetime) -> Lease:
    """Lock the lease for a submit. Must run inside the submit's transaction.

    Returns the lease; its status is SUBMITTED when an identical submit already went through
    (the caller then returns that first result). Raises Conflict if expired or skipped.
    """
    lease = _lock_own_lease(lease_id=lease_id, user_id=user_id)
    if lease.status == Lease.Status.SUBMITTED:
        return lease
    if lease.status != Lease.Status.ACTIVE:
        raise Conflict(f"This task was {lease.status}; it cannot be submitted.")
    if lease.expires_at <= now:
        raise Conflict("Your lease on this task expired; reclaim it or take the next task.")
    return lease


def mark_submitted(*, lease: Lease, now: datetime) -> None:
    """Close the lease and, under the task's row lock, mark the task done when every slot is in."""
    lease.status = Lease.Status.SUBMITTED
    lease.submitted_at = now
    lease.save(update_fields=["status", "submitted_at"])
    task = Task.objects.select_for_update().get(pk=lease.task_id)
    submitted = Lease.objects.filter(task_id=task.pk, status=Lease.Status.SUBMITTED).count()
    if submitted >= task.overlap and not task.done:
        task.done = True
        task.save(update_fields=["done"])


def release_stale(*, now: datetime, older_than: timedelta) -> int:
    """Mark active leases that expired more than `older_than` ago as released; return how many.

    Housekeeping for the beat schedule: an expired lease already holds no slot (`_holding`), so
    this changes no count; it closes abandoned leases so lists of open work stay short. One
    UPDATE: a concurrent reclaim holds the row lock, and Postgres re-checks `expires_at` after it.
    """
    return Lease.objects.filter(
        status=Lease.Status.ACTIVE, expires_at__lte=now - older_than
    ).update(status=Lease.Status.RELEASED)
