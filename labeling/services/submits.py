"""A labeler's submits under a lease: demonstrations (and their drafts), rankings, A/B
judgements. Each validates its input, then locks the lease through queue.py and writes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction

from .. import blinding, queue
from ..errors import Invalid
from ..models import (
    MAX_RESPONSE_CHARS,
    Comparison,
    Demonstration,
    DemonstrationDraft,
    Lease,
    Ranking,
    RankingEntry,
    Task,
    Winner,
)
from ..text import newlines_normalise

MAX_TIME_SPENT_MS = 24 * 3600 * 1000
MAX_NOTES_CHARS = 5000


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
    text = newlines_normalise(text)
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
    text = newlines_normalise(text)
    if len(text) > MAX_RESPONSE_CHARS:
        raise Invalid(f"The draft is longer than {MAX_RESPONSE_CHARS:,} characters.")
    if "\x00" in text:  # PostgreSQL text cannot hold it: the insert fails
        raise Invalid("The draft contains a NUL character.")
    with transaction.atomic():
        lease = queue.lock_for_submit(lease_id=lease_id, user_id=user_id, now=now, lock_task=False)
        if lease.status == Lease.Status.SUBMITTED:
            return
        DemonstrationDraft.objects.update_or_create(
            lease=lease, defaults={"text": text, "updated_at": now}
        )


@dataclass(frozen=True)
class EntryInput:
    completion: int  # the completion id its slot letter stands for in this lease
    rank: int
    likert: int
    flags: tuple[str, ...] = ()


def _validate_entries(
    entries: Sequence[Any], *, shown_order: Sequence[int], k: int, asked_flags: set[str]
) -> list[EntryInput]:
    """The entries with their slot letters mapped to the lease's completion ids (blinding.py):
    every output of the task exactly once, each named by the letter the labeler was shown."""
    ids = blinding.completion_ids(shown_order)
    letters = blinding.slot_names(len(ids))
    errors: list[str] = []
    parsed: list[EntryInput] = []
    for i, raw in enumerate(entries):
        where = f"entry {i + 1}"
        if not isinstance(raw, dict):
            errors.append(f"{where} must be an object")
            continue
        slot = raw.get("completion")
        if not isinstance(slot, str) or slot not in ids:
            errors.append(
                f'{where}: "completion" must be the letter of one of the outputs shown, {letters}'
            )
            continue
        values = {}
        for key, low, high in (("rank", 1, k), ("likert", 1, 7)):
            value = raw.get(key)
            if isinstance(value, bool) or not isinstance(value, int):
                errors.append(f'{where}: "{key}" must be a whole number')
                break
            if not low <= value <= high:
                errors.append(f'{where}: "{key}" must be between {low} and {high}')
                break
            values[key] = value
        else:
            flags = raw.get("flags", ())
            if not isinstance(flags, list | tuple) or not all(isinstance(f, str) for f in flags):
                errors.append(f'{where}: "flags" must be a list of flag codes')
                continue
            unknown = set(flags) - asked_flags
            if unknown:
                errors.append(
                    f"{where}: flag(s) not asked in this project: {', '.join(sorted(unknown))}"
                )
                continue
            parsed.append(
                EntryInput(completion=ids[slot], flags=tuple(sorted(set(flags))), **values)
            )
    if errors:
        raise Invalid("The ranking is not valid.", details=[{"error": e} for e in errors])
    given = [raw["completion"] for raw in entries]
    twice = sorted({slot for slot in given if given.count(slot) > 1})
    if twice:
        raise Invalid(f"Output(s) {', '.join(twice)} appear more than once in the ranking.")
    missing = [slot for slot in ids if slot not in given]
    if missing:
        raise Invalid(f"Rank every output of the task ({letters}); missing: {', '.join(missing)}.")
    return parsed


def ranking_contradictions(entries: Sequence[dict[str, Any]]) -> list[str]:
    """Where a ranking's order contradicts its own ratings: an output ranked strictly below one
    it rated strictly lower ("C (rated 6) is ranked below D (rated 2)"), by slot letter. Ties
    and equal ratings contradict nothing. The page asks the labeler to confirm such an order
    rather than store it silently (ranks once started pre-filled with the shown order, so
    rate-then-submit stored "1st" for an output rated 1 of 7: issue 18)."""
    found = []
    for worse in entries:
        for better in entries:
            if worse["rank"] > better["rank"] and worse["likert"] > better["likert"]:
                found.append(
                    f"{worse['completion']} (rated {worse['likert']}) is ranked below"
                    f" {better['completion']} (rated {better['likert']})"
                )
    return found


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

    Each entry names its output by the slot letter the labeler was shown ({"completion": "A",
    "rank": 1, "likert": 6, "flags": [...]}), never by completion id (labeling/blinding.py); the
    letters are mapped to the lease's completions under its lock. Returns (ranking, created); a repeated submit returns the first ranking with created=False.
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
        # What the labeler was shown is the task's outputs (the claim copied them, shuffled),
        # named by their slot letters in that order.
        parsed = _validate_entries(
            entries,
            shown_order=lease.shown_order,
            k=len(lease.shown_order),  # ranks go up to the task's outputs (K, or fewer)
            asked_flags=set(project.flags),
        )
        ranking = Ranking(
            task=task,
            labeler_id=user_id,
            lease=lease,
            none_acceptable=none_acceptable,
            notes=newlines_normalise(notes.strip()),
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
            notes=newlines_normalise(notes.strip()),
            time_spent_ms=time_spent_ms,
            created_at=now,
        )
        queue.mark_submitted(lease=lease, now=now)
        return comparison, True
