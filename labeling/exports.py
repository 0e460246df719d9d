"""Database → plain records in the shapes TRL and `datasets` read. No ORM object leaves here.

- SFT: {"messages": [...prompt turns, {"role": "assistant", "content": demonstration}]}
- Preferences: conversational {"prompt": [...], "chosen": [assistant msg], "rejected": [...]},
  one record per strictly ordered pair of a ranking (all C(K,2) pairs, ties dropped).
- Rankings: one record per labeler ranking with all metadata, and the K-way shape the reward
  model trains on ({"prompt", "completions", "ranks"}).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import combinations
from typing import Any

from django.db.models import Prefetch, QuerySet

from .models import Demonstration, Project, Ranking, RankingEntry

CHUNK = 500


def _demonstrations(project: Project, split: str | None, ids: Iterable[int] | None) -> QuerySet:
    qs = Demonstration.objects.filter(prompt__project=project).select_related("prompt")
    if split:
        qs = qs.filter(prompt__split=split)
    if ids is not None:
        qs = qs.filter(pk__in=list(ids))
    return qs.order_by("pk")


def sft_records(
    *, project: Project, split: str | None = None, ids: Iterable[int] | None = None
) -> Iterator[dict[str, Any]]:
    for d in _demonstrations(project, split, ids).iterator(chunk_size=CHUNK):
        yield {
            "messages": [*d.prompt.messages, {"role": "assistant", "content": d.text}],
            "id": d.pk,
            "prompt_id": d.prompt_id,
            "split": d.prompt.split,
        }


def _rankings(project: Project, split: str | None, ids: Iterable[int] | None) -> QuerySet:
    entries = RankingEntry.objects.select_related("completion__model_version").order_by("pk")
    qs = (
        Ranking.objects.filter(task__project=project)
        .select_related("task__prompt", "labeler")
        .prefetch_related(Prefetch("entries", queryset=entries))
    )
    if split:
        qs = qs.filter(task__prompt__split=split)
    if ids is not None:
        qs = qs.filter(pk__in=list(ids))
    return qs.order_by("pk")


def ranking_records(
    *, project: Project, split: str | None = None, ids: Iterable[int] | None = None
) -> Iterator[dict[str, Any]]:
    for r in _rankings(project, split, ids).iterator(chunk_size=CHUNK):
        entries = sorted(r.entries.all(), key=lambda e: e.completion_id)
        prompt = r.task.prompt
        yield {
            "ranking_id": r.pk,
            "task_id": r.task_id,
            "prompt_id": prompt.pk,
            "split": prompt.split,
            "labeler_id": r.labeler_id,
            "labeler": r.labeler.username,
            "prompt": prompt.messages,
            "completions": [e.completion.text for e in entries],
            "ranks": [e.rank for e in entries],
            "likert": [e.likert for e in entries],
            "flags": [e.flags for e in entries],
            "completion_ids": [e.completion_id for e in entries],
            "model_versions": [e.completion.model_version.name for e in entries],
            "none_acceptable": r.none_acceptable,
            "notes": r.notes,
            "time_spent_ms": r.time_spent_ms,
            "shown_order": r.shown_order,
            "created_at": r.created_at.isoformat(),
        }


def preference_pairs(
    *, project: Project, split: str | None = None, ids: Iterable[int] | None = None
) -> Iterator[dict[str, Any]]:
    for record in ranking_records(project=project, split=split, ids=ids):
        items = list(zip(record["completions"], record["ranks"], strict=True))
        for (text_a, rank_a), (text_b, rank_b) in combinations(items, 2):
            if rank_a == rank_b:
                continue  # ties carry no preference (InstructGPT drops them)
            chosen, rejected = (text_a, text_b) if rank_a < rank_b else (text_b, text_a)
            yield {
                "prompt": record["prompt"],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
                "ranking_id": record["ranking_id"],
            }


def jsonl_lines(records: Iterable[dict[str, Any]]) -> Iterator[str]:
    for record in records:
        yield json.dumps(record, ensure_ascii=False) + "\n"


EXPORTS = {
    "sft": sft_records,
    "preferences": preference_pairs,
    "rankings": ranking_records,
}
