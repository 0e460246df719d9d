"""Reads for a labeler's work: the home page, today's counts, the task page and the API's task
payload. A lease is read for its owner only (access.lease_require)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import access, sql
from ..blinding import SLOTS
from ..errors import NotFound
from ..models import (
    FLAG_CHOICES,
    Completion,
    Demonstration,
    DemonstrationDraft,
    Lease,
    Membership,
    Project,
    Ranking,
    Task,
)
from ..sql import statements

FLAG_LABELS = dict(FLAG_CHOICES)


@dataclass(frozen=True)
class HomeRow:
    project: Project
    role: str
    waiting: dict[str, int]  # at most statements.WAITING_CAP + 1
    held_lease_id: int | None

    @property
    def waiting_shown(self) -> dict[str, str]:
        """The counts as the page shows them: past the cap, "1000+"."""
        cap = statements.WAITING_CAP
        return {kind: f"{cap}+" if n > cap else str(n) for kind, n in self.waiting.items()}


def home_rows(*, user_id: int, now: datetime) -> list[HomeRow]:
    """The user's projects with what waits for them per task kind (counted up to
    statements.WAITING_CAP + 1: the page says "1000+"): three queries in all."""
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
    open_tasks = sql.rows(statements.WAITING, [user_id, user_id, sql.ts(now), user_id])
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


@dataclass(frozen=True)
class NextReady:
    """What `/p/<slug>/next/<kind>/` shows on a GET, which claims nothing: the task of that kind
    the labeler holds already, else how many wait (up to statements.WAITING_CAP + 1)."""

    held_lease_id: int | None
    waiting: int

    @property
    def waiting_shown(self) -> str:
        cap = statements.WAITING_CAP
        return f"{cap}+" if self.waiting > cap else str(self.waiting)


def next_ready(*, user_id: int, project: Project, kind: str, now: datetime) -> NextReady:
    held = (
        Lease.objects.filter(
            user_id=user_id,
            task__project=project,
            task__kind=kind,
            status=Lease.Status.ACTIVE,
            expires_at__gt=now,
        )
        .order_by("created_at")
        .values_list("pk", flat=True)
        .first()
    )
    if held is not None:
        return NextReady(held_lease_id=held, waiting=0)
    open_tasks = sql.rows(statements.WAITING, [user_id, user_id, sql.ts(now), user_id])
    waiting = next((n for p, k, n in open_tasks if p == project.pk and k == kind), 0)
    return NextReady(held_lease_id=None, waiting=waiting)


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


@dataclass(frozen=True)
class ShownCompletion:
    """An output as its labeler sees it: its slot letter (the handle the page submits, see
    labeling/blinding.py) and its text; never its id or model."""

    label: str
    text: str


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

    Completions come in the lease's shown_order with their slot letters A, B, C...; only their
    text reaches the template, not their id nor the model that wrote them, so it cannot leak
    either (labeling/blinding.py).
    """
    lease = access.lease_require(lease_id=lease_id, user_id=user_id)
    project = lease.task.project
    completions: list[ShownCompletion] = []
    draft_text = ""
    if lease.task.kind in (Task.Kind.RANKING, Task.Kind.COMPARISON):
        completions = [
            ShownCompletion(label=slot, text=text) for slot, text in shown_completions(lease=lease)
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


def lease_task(*, lease_id: int, rows: list[tuple] | None = None) -> dict[str, Any]:
    """What a labeler is asked to do under a lease, as the API answers it (LeaseTaskSerializer's
    shape): the prompt, the outputs in this labeler's order by slot letter (never their id nor
    their model: labeling/blinding.py), the flags asked,
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
            {"id": slot, "text": texts[pk]}
            for slot, pk in zip(SLOTS, sql.json_out(shown_order), strict=False)
        ],
        "flags": sql.json_out(flags),
        # A ranking's K is its own number of outputs (a sampled task may have fewer than the
        # project's K when only that many differed).
        "k": len(sql.json_out(shown_order)) if kind == Task.Kind.RANKING else k,
        "draft": draft if kind == Task.Kind.DEMONSTRATION else None,
    }


def iso_datetime(value: datetime) -> str:
    """As DRF writes a datetime: ISO 8601 in UTC, with Z."""
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def shown_completions(*, lease: Lease) -> list[tuple[str, str]]:
    """(slot letter, text) of the lease's completions in the order its labeler sees them, never
    their id nor their model."""
    texts = dict(Completion.objects.filter(pk__in=lease.shown_order).values_list("pk", "text"))
    return [(slot, texts[pk]) for slot, pk in zip(SLOTS, lease.shown_order, strict=False)]
