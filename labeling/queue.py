"""The labeling queue: claim, heartbeat, reclaim, skip, lock for submit, insert ranking, mark
submitted.

Every lock rule lives here.

- A task's free slots = overlap - (submitted leases + active unexpired leases). Any code that adds
  a lease to a task holds that task's row lock (SELECT ... FOR UPDATE) while it re-counts, so two
  claimers can never both take the last slot. Claimers first try SKIP LOCKED so they spread over
  tasks instead of queueing behind one another; only when every candidate is locked does a
  claimer wait, so nobody is told "nothing to do" while a slot is free.
- One lease row per (task, user), ever (a DB constraint): a labeler never gets a task twice.
- One active unexpired lease per (user, project, kind): a claim, and the reclaim of an expired
  lease, first take an advisory lock on that triple (statements.CLAIM_LOCK; SQLite serialises
  writers anyway), then look for the lease the user already holds. Taken first, before any row
  lock, in every transaction that takes it, so it never waits in a cycle with one.
- A submit locks its lease row (blocking, not skip-locked): of two identical submits the second
  waits and then sees the first's result, which is how submits are idempotent.
- On SQLite (the embedded default) FOR UPDATE is a no-op, but the connection begins every
  transaction IMMEDIATE (settings), which serialises writers: the same re-count then holds.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import connection, transaction
from django.db.models import Q, QuerySet

from . import access, sql
from .errors import Conflict
from .models import Lease, Project, Ranking, RankingEntry, Task
from .sql import statements


def _lease_commit_may_lag() -> None:
    """Lease bookkeeping may commit before its WAL is on disk (statements.COMMIT_MAY_LAG)."""
    if sql.postgres():
        sql.run(statements.COMMIT_MAY_LAG)


def _holding(now: datetime) -> Q:
    """Leases that occupy a slot: submitted, or active and not yet expired."""
    return Q(status=Lease.Status.SUBMITTED) | Q(status=Lease.Status.ACTIVE, expires_at__gt=now)


def _slots_taken(task_id: int, now: datetime, *, excluding_lease: int | None = None) -> int:
    leases = Lease.objects.filter(_holding(now), task_id=task_id)
    if excluding_lease is not None:
        leases = leases.exclude(pk=excluding_lease)
    return leases.count()


# The first key of the claim's advisory locks ("IL"); the second is a hash of the triple. Two
# triples that share a hash only take turns, and no other advisory lock uses this first key.
_CLAIM_LOCK_SPACE = 0x494C


def _claim_key(*, user_id: int, project_id: int, kind: str) -> tuple[int, int]:
    """statements.CLAIM_LOCK's two int4 keys for one (user, project, kind)."""
    digest = zlib.crc32(f"{user_id}:{project_id}:{kind}".encode())
    return _CLAIM_LOCK_SPACE, digest - 2**32 if digest >= 2**31 else digest


@dataclass(frozen=True)
class Claimed:
    """A claim's lease, and the rows of statements.LEASE_TASK for it when the claim read them
    already."""

    lease_id: int
    task_rows: list[tuple] | None = None


def _candidate(
    *, user_id: int, project_id: int, kind: str, now: datetime, tried: set[int], wait: bool
) -> tuple[int, int, int | None] | None:
    """(task id, overlap, my expired lease id) of the first candidate, row-locked (PostgreSQL).

    Without `wait` rows another claimer holds are skipped, so claimers spread over tasks.
    """
    query = statements.CANDIDATE.format(
        tried=f"AND t.id NOT IN ({sql.placeholders(len(tried))})" if tried else "",
        holding=statements.HOLDING,
        lock=sql.lock("FOR UPDATE OF t" if wait else "FOR UPDATE OF t SKIP LOCKED"),
    )
    params = [user_id, project_id, kind, *sorted(tried), user_id, user_id, sql.ts(now)]
    name = None if tried else ("il_candidate_wait" if wait else "il_candidate")
    return sql.one(query, params, name=name)


def claim(
    *, user_id: int, project_id: int, kind: str, lease_seconds: int, now: datetime
) -> Claimed | None:
    """Lease the next task of `kind` for the user; None when nothing is left for them.

    A labeler who already holds an unexpired lease of this kind in the project gets that one back,
    so a refresh or a double click on "next" never takes a second slot, even when the two calls
    run at once (statements.CLAIM_LOCK). On PostgreSQL a new lease comes back with its task's
    rows (`Claimed.task_rows`), read by the INSERT's statement.
    """
    with transaction.atomic():
        params = [user_id, project_id, kind, sql.ts(now)]
        key = _claim_key(user_id=user_id, project_id=project_id, kind=kind)
        first = [
            (None, statements.COMMIT_MAY_LAG, ()),
            (None, statements.CLAIM_PLANS, ()),
            ("il_claim_lock", statements.CLAIM_LOCK, key),
        ]
        held = sql.one(statements.HELD, params, name="il_held", pg_first=first)
        if held is not None:
            return Claimed(held[0])
        tried: set[int] = set()
        while True:
            candidate = partial(
                _candidate, user_id=user_id, project_id=project_id, kind=kind, now=now, tried=tried
            )
            found = candidate(wait=False)
            if found is None:
                # Every open candidate is locked by another claimer (or none is left): wait for
                # the first one instead of answering "nothing to do" while it may have slots.
                found = candidate(wait=True)
                if found is None:
                    return None
            task_id, overlap, mine = found
            expires_at = sql.ts(now + timedelta(seconds=lease_seconds))
            if mine is not None:  # the user's own expired lease: re-activate it in place
                # Re-count under the row lock: the candidate's count ran before we held it.
                if sql.value(statements.TAKEN, [task_id, sql.ts(now)]) >= overlap:
                    tried.add(task_id)
                    continue
                sql.run(statements.LEASE_REACTIVATE, [expires_at, sql.ts(now), mine])
                return Claimed(mine)
            claimed = _insert_lease(
                task_id=task_id, user_id=user_id, overlap=overlap, now=now, expires_at=expires_at
            )
            if claimed is None:  # the last slot went to a claim that committed meanwhile
                tried.add(task_id)
                continue
            return claimed


def _insert_lease(
    *, task_id: int, user_id: int, overlap: int, now: datetime, expires_at: Any
) -> Claimed | None:
    vendor = connection.vendor
    insert = statements.LEASE_INSERT.format(
        shuffled=statements.SHUFFLED_OUTPUTS[vendor],
        returning=statements.LEASE_TASK_COLUMNS if vendor == "postgresql" else "id",
    )
    params = [task_id, user_id, task_id, sql.ts(now), expires_at, sql.ts(now)]
    params += [task_id, sql.ts(now), overlap]
    if vendor != "postgresql":
        row = sql.one(insert, params, name="il_lease_insert")
        return None if row is None else Claimed(row[0])
    rows = sql.rows(statements.LEASE_CLAIM.format(insert=insert), params, name="il_lease_claim")
    return Claimed(rows[0][0], rows) if rows else None


def claim_next(*, user_id: int, project: Project, kind: str, now: datetime) -> Lease | None:
    """`claim`, returning the lease with its task, prompt and project (for pages)."""
    claimed = claim(
        user_id=user_id,
        project_id=project.pk,
        kind=kind,
        lease_seconds=project.lease_seconds,
        now=now,
    )
    if claimed is None:
        return None
    return Lease.objects.select_related("task__prompt", "task__project").get(pk=claimed.lease_id)


def _lock_own_lease(*, lease_id: int, user_id: int, lock_task: bool = False) -> Lease:
    """The user's lease, row-locked (and its task's row too with `lock_task`), with its task and
    the project settings the queue and the submits read (any other project field loads on access,
    as a deferred field does)."""
    query = statements.OWN_LEASE_LOCK.format(
        lease=sql.columns(Lease, "l"),
        task=sql.columns(Task, "t"),
        lock=sql.lock("FOR UPDATE OF l, t" if lock_task else "FOR UPDATE OF l"),
    )
    name = "il_lock_lease_task" if lock_task else "il_lock_lease"
    row = access.own_lease_row(query, lease_id=lease_id, user_id=user_id, name=name)
    n_lease, n_task = len(Lease._meta.concrete_fields), len(Task._meta.concrete_fields)
    lease = sql.instance(Lease, row[:n_lease])
    task = sql.instance(Task, row[n_lease : n_lease + n_task])
    k, flags, lease_seconds = row[n_lease + n_task :]
    task.project = Project.from_db(
        "default",
        ["id", "k", "flags", "lease_seconds"],
        [task.project_id, k, sql.json_out(flags), lease_seconds],
    )
    lease.task = task
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
    """Re-activate the user's expired lease if the task still has a free slot and they hold no
    other unexpired lease of its kind in the project (`next` gave them one meanwhile), else 409."""
    with transaction.atomic():
        task = access.lease_require(lease_id=lease_id, user_id=user_id).task
        if sql.postgres():  # before any row lock, as a claim takes it
            key = _claim_key(user_id=user_id, project_id=task.project_id, kind=task.kind)
            sql.run(statements.CLAIM_LOCK, key, name="il_claim_lock")
        lease = _lock_own_lease(lease_id=lease_id, user_id=user_id)
        if lease.status != Lease.Status.ACTIVE:
            raise Conflict(f"This task is already {lease.status}.")
        if lease.expires_at > now:
            return heartbeat(lease_id=lease_id, user_id=user_id, now=now)
        if sql.one(statements.HELD, [user_id, task.project_id, task.kind, sql.ts(now)]):
            raise Conflict(
                f"You already hold another {task.kind} task in this project: finish or skip it"
                " first."
            )
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


def lock_for_submit(*, lease_id: int, user_id: int, now: datetime, lock_task: bool = True) -> Lease:
    """Lock the lease for a submit, and its task's row for `mark_submitted` (a draft's autosave,
    which completes nothing, passes lock_task=False). Must run inside the submit's transaction.

    Returns the lease; its status is SUBMITTED when an identical submit already went through
    (the caller then returns that first result). Raises Conflict if expired or skipped.
    """
    lease = _lock_own_lease(lease_id=lease_id, user_id=user_id, lock_task=lock_task)
    if lease.status == Lease.Status.SUBMITTED:
        return lease
    if lease.status != Lease.Status.ACTIVE:
        raise Conflict(f"This task was {lease.status}; it cannot be submitted.")
    if lease.expires_at <= now:
        raise Conflict("Your lease on this task expired; reclaim it or take the next task.")
    return lease


def insert_ranking(
    *, lease: Lease, ranking: Ranking, entries: list[RankingEntry], now: datetime
) -> None:
    """Insert the ranking and its entries and close the lease (mark_submitted). The caller holds
    lock_for_submit's locks and has validated the entries.

    Hand-written statements, the labeler loop's hot path: on PostgreSQL one statement inserts the
    ranking and its entries and sets the lease to submitted (statements.RANKING_SUBMIT_PG).
    The rows are left on `ranking` (ids set, `entries` prefetched) so the answer needs no re-read.
    """
    head = [
        ranking.task_id,
        ranking.labeler_id,
        ranking.lease_id,
        ranking.none_acceptable,
        ranking.notes,
        ranking.time_spent_ms,
        sql.json_in(ranking.shown_order),
        sql.ts(ranking.created_at),
    ]
    values = [(e.completion_id, e.rank, e.likert, sql.json_in(e.flags)) for e in entries]
    one_pass = sql.postgres() and bool(entries)
    if one_pass:
        placeholders = ", ".join(["((SELECT id FROM r), %s, %s, %s, %s)"] * len(entries))
        found = sql.rows(
            statements.RANKING_SUBMIT_PG.format(values=placeholders),
            [*head, sql.ts(now), ranking.lease_id, *(v for row in values for v in row)],
            name=f"il_ranking_submit_{len(entries)}",
        )
        ranking.pk = found[0][1]
    else:
        ranking.pk = sql.value(statements.RANKING_INSERT, head, name="il_ranking_insert")
        placeholders = ", ".join(["(%s, %s, %s, %s, %s)"] * len(entries))
        found = sql.rows(
            statements.ENTRIES_INSERT.format(values=placeholders),
            [v for row in values for v in (ranking.pk, *row)],
            name=f"il_entries_{len(entries)}",
        )
    ranking._state.adding = False
    for entry, (pk, _) in zip(entries, sorted(found), strict=True):
        entry.pk = pk
        entry._state.adding = False
    entries.sort(key=lambda entry: (entry.rank, entry.pk))  # RankingEntry.Meta.ordering
    # As prefetch_related leaves it: a queryset whose results are already known (built bare:
    # a .filter() would compile a query nobody runs).
    result: QuerySet[RankingEntry] = QuerySet(model=RankingEntry)
    # Django's own private state, which the stubs do not declare.
    result._result_cache, result._prefetch_done = entries, True  # type: ignore[attr-defined]
    ranking._prefetched_objects_cache = {"entries": result}  # type: ignore[attr-defined]
    mark_submitted(lease=lease, now=now, lease_row_written=one_pass)


def mark_submitted(*, lease: Lease, now: datetime, lease_row_written: bool = False) -> None:
    """Close the lease and mark the task done when every slot is in. The caller holds the lease's
    and the task's row locks (lock_for_submit); `lease_row_written` when its own statement already
    set the lease's row to submitted (insert_ranking on PostgreSQL)."""
    lease.status = Lease.Status.SUBMITTED
    lease.submitted_at = now
    if not lease_row_written:
        sql.run(statements.LEASE_SUBMITTED, [sql.ts(now), lease.pk], name="il_lease_submitted")
    if not lease.task.done:
        sql.run(statements.TASK_DONE, [True, lease.task_id, lease.task_id], name="il_task_done")


def release_stale(*, now: datetime, older_than: timedelta) -> int:
    """Mark active leases that expired more than `older_than` ago as released; return how many.

    Housekeeping for the beat schedule: an expired lease already holds no slot (`_holding`), so
    this changes no count; it closes abandoned leases so lists of open work stay short. One
    UPDATE: a concurrent reclaim holds the row lock, and Postgres re-checks `expires_at` after it.
    """
    return Lease.objects.filter(
        status=Lease.Status.ACTIVE, expires_at__lte=now - older_than
    ).update(status=Lease.Status.RELEASED)
