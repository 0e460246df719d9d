"""The exports' hand-written reads (labeling/exports.py) against the plain ORM reading they
replaced, written here as the reference: on a small project with ties, flags, two labelers per
task, three splits, non-ASCII text and a second project beside it, every kind gives the same
records, with and without a split, `after` and `ids`; and the Parquet file holds them too."""

from __future__ import annotations

import io
import json
from itertools import combinations
from typing import Any

import pyarrow.parquet as pq
import pytest
from django.db.models import Prefetch

from labeling import blinding, exports, queue, services
from labeling.models import Demonstration, Ranking, RankingEntry, Split, Task
from tests.factories import PromptFactory, demonstration_task, member, ranking_task

pytestmark = pytest.mark.django_db


# --- the reference: the ORM export as it was ------------------------------------------------


def plain_sft(*, project, split=None, ids=None, after=0) -> list[dict[str, Any]]:
    qs = Demonstration.objects.filter(prompt__project=project, pk__gt=after)
    qs = qs.select_related("prompt").order_by("pk")
    if split:
        qs = qs.filter(prompt__split=split)
    if ids is not None:
        qs = qs.filter(pk__in=list(ids))
    return [
        {
            "messages": [*d.prompt.messages, {"role": "assistant", "content": d.text}],
            "id": d.pk,
            "prompt_id": d.prompt_id,
            "split": d.prompt.split,
        }
        for d in qs
    ]


def plain_rankings(*, project, split=None, ids=None, after=0) -> list[dict[str, Any]]:
    entries = RankingEntry.objects.select_related("completion__model_version").order_by("pk")
    qs = (
        Ranking.objects.filter(task__project=project, pk__gt=after)
        .select_related("task__prompt", "labeler")
        .prefetch_related(Prefetch("entries", queryset=entries))
        .order_by("pk")
    )
    if split:
        qs = qs.filter(task__prompt__split=split)
    if ids is not None:
        qs = qs.filter(pk__in=list(ids))
    records = []
    for r in qs:
        entries = sorted(r.entries.all(), key=lambda e: e.completion_id)
        prompt = r.task.prompt
        records.append(
            {
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
        )
    return records


def plain_preferences(*, project, split=None, ids=None, after=0) -> list[dict[str, Any]]:
    pairs = []
    for record in plain_rankings(project=project, split=split, ids=ids, after=after):
        items = list(zip(record["completions"], record["ranks"], strict=True))
        for (text_a, rank_a), (text_b, rank_b) in combinations(items, 2):
            if rank_a == rank_b:
                continue
            chosen, rejected = (text_a, text_b) if rank_a < rank_b else (text_b, text_a)
            pairs.append(
                {
                    "prompt": record["prompt"],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                    "ranking_id": record["ranking_id"],
                }
            )
    return pairs


PLAIN = {"sft": plain_sft, "rankings": plain_rankings, "preferences": plain_preferences}

# Each labeler's ranks per task, in the shown order: ties, a full order, all tied.
RANKS = [[1, 2, 2, 3], [2, 1, 4, 3], [1, 1, 1, 1], [4, 3, 2, 1]]


def _rank_all(project, labeler, now, *, offset: int) -> None:
    while lease := queue.claim_next(
        user_id=labeler.pk, project=project, kind=Task.Kind.RANKING, now=now
    ):
        slot_of = blinding.slots(lease.shown_order)
        ranks = RANKS[(lease.task_id + offset) % len(RANKS)]
        services.ranking_submit(
            lease_id=lease.pk,
            user_id=labeler.pk,
            entries=[
                {
                    "completion": slot_of[c],
                    "rank": r,
                    "likert": 8 - r,
                    "flags": ["hallucination"] * (r == 4),
                }
                for c, r in zip(lease.shown_order, ranks, strict=True)
            ],
            none_acceptable=ranks == [4, 3, 2, 1],
            notes=f'notes «{offset}» \u2028 "quoted"' * (lease.task_id % 2),
            time_spent_ms=1000 + lease.task_id,
            now=now,
        )


def _demonstrate_all(project, labeler, now) -> None:
    while lease := queue.claim_next(
        user_id=labeler.pk, project=project, kind=Task.Kind.DEMONSTRATION, now=now
    ):
        services.demonstration_submit(
            lease_id=lease.pk, user_id=labeler.pk, text=f"Réponse n°{lease.task_id} ✓", now=now
        )


@pytest.fixture
def world(project, personas, now):
    return build_world(project, personas, now)


def build_world(project, personas, now):
    """Two labelers rank 6 tasks (overlap 2) and write 6 demonstrations over three splits; the
    outsider's project has work of its own, which no export of `project` may show."""
    project.overlap = 2
    project.demo_overlap = 2
    project.save()
    splits = [Split.TRAIN, Split.VALID, Split.TEST]
    for i in range(6):
        prompt = PromptFactory(project=project, split=splits[i % 3])
        if i == 0:  # a conversation, not one turn
            prompt.messages = [
                {"role": "system", "content": "Be brief. <script>x</script>"},
                {"role": "user", "content": prompt.text},
            ]
            prompt.save()
        ranking_task(project, prompt)
        demonstration_task(project, PromptFactory(project=project, split=splits[i % 3]))
    for offset, labeler in enumerate((personas.alice, personas.bob)):
        _rank_all(project, labeler, now, offset=offset)
        _demonstrate_all(project, labeler, now)
    other = personas.other_project
    stranger = member(other, "sam_elsewhere")
    ranking_task(other)
    demonstration_task(other)
    _rank_all(other, stranger, now, offset=0)
    _demonstrate_all(other, stranger, now)
    return project


def test_the_world_holds_what_the_parity_tests_need(world):
    assert Ranking.objects.filter(task__project=world).count() == 12
    assert Demonstration.objects.filter(task__project=world).count() == 12
    assert Ranking.objects.exclude(task__project=world).count() == 1
    ranks = [r["ranks"] for r in plain_rankings(project=world)]
    assert any(len(set(r)) < len(r) for r in ranks) and any(len(set(r)) == 4 for r in ranks)
    assert any(r["none_acceptable"] for r in plain_rankings(project=world))
    assert any(any(f) for r in plain_rankings(project=world) for f in r["flags"])


@pytest.mark.parametrize("kind", ["sft", "rankings", "preferences"])
@pytest.mark.parametrize("split", [None, Split.TRAIN, Split.TEST])
def test_each_export_gives_the_plain_records(world, kind, split):
    fast = list(exports.EXPORTS[kind](project=world, split=split))
    assert fast == PLAIN[kind](project=world, split=split)
    assert fast  # the split is not empty: the comparison compares something


@pytest.mark.parametrize("kind", ["sft", "rankings", "preferences"])
def test_each_export_after_an_id_gives_the_plain_records_after_it(world, kind):
    full = PLAIN[kind](project=world)
    key = "id" if kind == "sft" else "ranking_id"
    middle = full[len(full) // 2][key]
    fast = list(exports.EXPORTS[kind](project=world, after=middle))
    assert fast == PLAIN[kind](project=world, after=middle)
    assert fast and all(r[key] > middle for r in fast) and len(fast) < len(full)
    assert list(exports.EXPORTS[kind](project=world, split=Split.VALID, after=middle)) == (
        PLAIN[kind](project=world, split=Split.VALID, after=middle)
    )
    assert list(exports.EXPORTS[kind](project=world, after=full[-1][key])) == []


@pytest.mark.parametrize("kind", ["sft", "rankings", "preferences"])
def test_each_export_of_given_ids_gives_those_of_the_project(world, personas, kind):
    """A training run's frozen dataset: its ids, in any order, with repeats and foreign ones."""
    model = Demonstration if kind == "sft" else Ranking
    mine = list(model.objects.filter(task__project=world).values_list("pk", flat=True))
    foreign = list(model.objects.exclude(task__project=world).values_list("pk", flat=True))
    ids = [*mine[::-2], mine[0], *foreign]
    fast = list(exports.EXPORTS[kind](project=world, ids=ids))
    assert fast == PLAIN[kind](project=world, ids=ids)
    assert fast and list(exports.EXPORTS[kind](project=world, ids=[])) == []


def test_pages_follow_each_other_without_gap_or_repeat(world, monkeypatch):
    """Pages of 5 over 12 rankings (and 3 over a frozen dataset): the keyset moves on exactly."""
    monkeypatch.setattr(exports, "PAGE", 5)
    assert list(exports.ranking_records(project=world)) == plain_rankings(project=world)
    assert list(exports.preference_pairs(project=world)) == plain_preferences(project=world)
    monkeypatch.setattr(exports, "PAGE", 3)
    ids = list(Demonstration.objects.values_list("pk", flat=True))
    assert list(exports.sft_records(project=world, ids=ids)) == plain_sft(project=world, ids=ids)


def test_json_lines_hold_the_records_in_chunks_of_whole_lines(world):
    records = plain_rankings(project=world)
    chunks = list(exports.jsonl_chunks(iter(records), lines=5))
    assert [c.count(b"\n") for c in chunks] == [5, 5, 2]
    assert all(c.endswith(b"\n") for c in chunks)
    # Split on newlines only: str.splitlines also splits at the U+2028 inside a note's text.
    lines = b"".join(chunks).split(b"\n")
    assert lines.pop() == b""
    assert [json.loads(line) for line in lines] == records


@pytest.mark.parametrize("kind", ["sft", "rankings", "preferences"])
def test_the_parquet_file_reads_back_as_the_records(world, kind, monkeypatch):
    monkeypatch.setattr(exports, "PAGE", 3)  # a row group is made of several pages
    records = PLAIN[kind](project=world)
    chunks = list(exports.parquet_chunks(kind, exports.EXPORTS[kind](project=world), row_group=4))
    groups = -(-len(records) // 4)
    # Each full group is sent as soon as it is written; the last one goes with the footer.
    assert len(chunks) == len(records) // 4 + 1
    parquet = pq.ParquetFile(io.BytesIO(b"".join(chunks)))
    assert parquet.metadata.num_rows == len(records)
    assert parquet.metadata.num_row_groups == groups
    assert parquet.read().to_pylist() == records


def test_an_empty_export_is_still_a_parquet_file_with_its_columns(project):
    table = pq.read_table(io.BytesIO(b"".join(exports.parquet_chunks("rankings", iter([])))))
    assert table.num_rows == 0 and table.schema == exports.parquet_schema("rankings")
