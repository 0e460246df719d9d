"""The labeler loop's hand-written API payloads: its request bodies checked and its answers
written without building serializers.

`next` and the ranking submit are the calls labelers make all day (docs/architecture.md, "The
labeler loop's hot path"). A body already of plain types and in range is taken as it is here;
anything else goes to its serializer, which judges it and words the errors. The ranking answer is
written out by hand. labeling/api/serializers.py stays the definition of every shape and the
OpenAPI schema; tests/labeling/api/test_fast_payloads.py checks that the two agree.
"""

from __future__ import annotations

from typing import Any

from labeling import blinding, selectors
from labeling.models import FLAG_CODES, MAX_K, Ranking, TaskKind
from labeling.services import MAX_NOTES_CHARS, MAX_TIME_SPENT_MS

from . import serializers as s

_ENTRY_KEYS = frozenset(s.RankingEntryInputSerializer().fields)
_RANKING_KEYS = frozenset(s.RankingSubmitSerializer().fields)
_SLOTS = frozenset(blinding.SLOTS)


def _slot(value: Any) -> bool:
    """A slot letter, as RankingEntryInputSerializer's ChoiceField takes it unchanged."""
    return type(value) is str and value in _SLOTS  # noqa: E721


def _plain_int(value: Any, low: int, high: int | None = None) -> bool:
    return (
        type(value) is int and value >= low and (high is None or value <= high)  # noqa: E721
    )


def _plain_text(value: Any, max_length: int, *, allow_blank: bool) -> bool:
    """Text DRF's CharField would take unchanged: no NUL or lone surrogate, no edge whitespace."""
    return (
        isinstance(value, str)
        and len(value) <= max_length
        and (allow_blank or value != "")
        and value == value.strip()
        and "\x00" not in value
        and not any("\ud800" <= ch <= "\udfff" for ch in value)
    )


def next_fast(data: Any) -> dict[str, Any] | None:
    """NextSerializer's validated_data for a body of exactly {"kind": <a task kind>}, without its
    field copies; None for anything else, which the serializer then judges."""
    if isinstance(data, dict) and data.keys() == {"kind"} and data["kind"] in TaskKind.values:
        return {"kind": data["kind"]}
    return None


def ranking_submit_fast(data: Any) -> dict[str, Any] | None:
    """RankingSubmitSerializer's validated_data for a body every value of which is already of its
    plain type and in range; None for anything else, which the serializer then judges and
    answers (the labeler loop's hot path: the nested serializer deep-copies its fields for every
    entry, the largest single cost of a submit). tests/labeling/api/test_fast_payloads.py checks the two
    agree."""
    if not isinstance(data, dict) or not data.keys() <= _RANKING_KEYS or "entries" not in data:
        return None
    entries = data["entries"]
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_K:
        return None
    parsed = []
    for entry in entries:
        if not isinstance(entry, dict) or not entry.keys() <= _ENTRY_KEYS:
            return None
        flags = entry.get("flags", [])
        if not (
            _slot(entry.get("completion"))
            and _plain_int(entry.get("rank"), 1, MAX_K)
            and _plain_int(entry.get("likert"), 1, 7)
            and isinstance(flags, list)
            and len(flags) <= len(FLAG_CODES)
            and all(_plain_text(f, 64, allow_blank=False) for f in flags)
        ):
            return None
        parsed.append(
            {
                "completion": entry["completion"],
                "rank": entry["rank"],
                "likert": entry["likert"],
                "flags": list(flags),
            }
        )
    none_acceptable = data.get("none_acceptable", False)
    notes = data.get("notes", "")
    time_spent_ms = data.get("time_spent_ms", 0)
    if not (
        type(none_acceptable) is bool  # noqa: E721
        and _plain_text(notes, MAX_NOTES_CHARS, allow_blank=True)
        and _plain_int(time_spent_ms, 0, MAX_TIME_SPENT_MS)
    ):
        return None
    return {
        "entries": parsed,
        "none_acceptable": none_acceptable,
        "notes": notes,
        "time_spent_ms": time_spent_ms,
    }


def ranking_data(ranking: Ranking, *, labeler: str) -> dict[str, Any]:
    """`LabelerRankingSerializer(ranking).data` written out by hand for the submit answer, the
    labeler loop's hot path (a ModelSerializer builds its fields anew on every call); the schema
    and the tests keep the serializer as the definition (tests/labeling/api/test_fast_payloads.py).
    Outputs by slot letter, as the labeler submitted them: no completion ids."""
    slots = blinding.slots(ranking.shown_order)
    return {
        "id": ranking.pk,
        "lease_id": ranking.lease_id,
        "task_id": ranking.task_id,
        "prompt_id": ranking.task.prompt_id,
        "labeler": labeler,
        "entries": [
            {
                "completion": slots[e.completion_id],
                "rank": e.rank,
                "likert": e.likert,
                "flags": e.flags,
            }
            for e in ranking.entries.all()
        ],
        "none_acceptable": ranking.none_acceptable,
        "notes": ranking.notes,
        "time_spent_ms": ranking.time_spent_ms,
        "created_at": selectors.iso_datetime(ranking.created_at),
    }
