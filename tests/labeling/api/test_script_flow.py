"""The path a labeling script follows, end to end, and the exports it produces."""

from __future__ import annotations

import json
from itertools import combinations

import pytest
from rest_framework.test import APIClient

from labeling import blinding, queue, services
from labeling.models import Demonstration, Lease, Ranking, RankingEntry
from tests.factories import demonstration_task, ranking_task

from .conftest import jsonl

pytestmark = pytest.mark.django_db


def _token(client, username):
    response = client.post(
        "/api/v1/auth/token/",
        {"username": username, "password": "pw-for-tests-123"},
        format="json",
    )
    assert response.status_code == 200
    return response.json()["token"]


def test_a_script_logs_in_labels_a_demonstration_and_a_ranking_and_exports_them(
    project, personas, client_for
):
    demo_task = demonstration_task(project)
    rank_task = ranking_task(project)
    model_names = set(
        rank_task.completions.values_list("model_version__name", flat=True).distinct()
    )

    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION=f"Token {_token(script, 'alice_labeler')}")

    # The project list shows my role.
    listing = script.get("/api/v1/projects/").json()
    assert [(p["id"], p["role"]) for p in listing["results"]] == [(project.pk, "labeler")]

    # Demonstration: next → heartbeat → submit.
    offered = script.post(
        f"/api/v1/projects/{project.pk}/next/", {"kind": "demonstration"}, format="json"
    )
    assert offered.status_code == 200
    task = offered.json()
    assert task["kind"] == "demonstration" and task["task_id"] == demo_task.pk
    assert task["prompt"] == {"id": demo_task.prompt_id, "messages": demo_task.prompt.messages}
    assert task["completions"] == [] and task["k"] == project.k
    assert task["flags"] == project.flags
    beat = script.post(f"/api/v1/leases/{task['lease_id']}/heartbeat/")
    assert beat.status_code == 200 and beat.json()["expires_at"] >= task["expires_at"]
    written = script.post(
        f"/api/v1/leases/{task['lease_id']}/demonstration/",
        {"text": "A helpful answer.", "time_spent_ms": 42_000},
        format="json",
    )
    assert written.status_code == 201
    assert written.json()["text"] == "A helpful answer."
    assert written.json()["labeler"] == "alice_labeler"

    # Ranking: next → the K outputs in the lease's shown order, never their model.
    offered = script.post(
        f"/api/v1/projects/{project.pk}/next/", {"kind": "ranking"}, format="json"
    )
    assert offered.status_code == 200
    task = offered.json()
    lease = Lease.objects.get(pk=task["lease_id"])
    # Each output by its slot letter in this labeler's shuffled order, never its id.
    shown = [c["id"] for c in task["completions"]]
    assert shown == ["A", "B", "C", "D"]
    text_of = dict(rank_task.completions.values_list("pk", "text"))
    assert [c["text"] for c in task["completions"]] == [text_of[pk] for pk in lease.shown_order]
    assert all(set(c) == {"id", "text"} for c in task["completions"])
    assert not any(name in json.dumps(task) for name in model_names)
    ranks = [1, 2, 2, 3]  # the 2nd and 3rd shown tie
    ranked = script.post(
        f"/api/v1/leases/{task['lease_id']}/ranking/",
        {
            "entries": [
                {"completion": c, "rank": r, "likert": 8 - r, "flags": ["hallucination"] * (r == 3)}
                for c, r in zip(shown, ranks, strict=True)
            ],
            "none_acceptable": False,
            "notes": "two were equally good",
            "time_spent_ms": 90_000,
        },
        format="json",
    )
    assert ranked.status_code == 201
    assert sorted((e["completion"], e["rank"]) for e in ranked.json()["entries"]) == sorted(
        zip(shown, ranks, strict=True)
    )

    # Nothing is left for me.
    empty = script.post(f"/api/v1/projects/{project.pk}/next/", {"kind": "ranking"}, format="json")
    assert empty.status_code == 204

    # The reviewer exports exactly what was submitted.
    reviewer = client_for(personas.reviewer)
    sft = reviewer.get(f"/api/v1/projects/{project.pk}/export/sft/")
    assert sft.status_code == 200
    assert sft["Content-Type"] == "application/x-ndjson"
    assert sft["Content-Disposition"].startswith("attachment;")
    assert [r["messages"] for r in jsonl(sft)] == [
        [*demo_task.prompt.messages, {"role": "assistant", "content": "A helpful answer."}]
    ]

    # Reviewers are not blind: the exports speak completion ids.
    rank_of = dict(zip(lease.shown_order, ranks, strict=True))
    expected_pairs = sorted(
        (text_of[a], text_of[b]) if rank_of[a] < rank_of[b] else (text_of[b], text_of[a])
        for a, b in combinations(lease.shown_order, 2)
        if rank_of[a] != rank_of[b]
    )
    pairs = jsonl(reviewer.get(f"/api/v1/projects/{project.pk}/export/preferences/"))
    assert len(pairs) == 6 - 1  # C(4,2) pairs minus the one tie
    assert sorted((p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs) == (
        expected_pairs
    )
    assert all(p["prompt"] == rank_task.prompt.messages for p in pairs)

    [raw] = jsonl(reviewer.get(f"/api/v1/projects/{project.pk}/export/rankings/"))
    ranking = Ranking.objects.get()
    assert raw["ranking_id"] == ranking.pk and raw["labeler"] == "alice_labeler"
    assert dict(zip(raw["completion_ids"], raw["ranks"], strict=True)) == rank_of
    assert dict(zip(raw["completion_ids"], raw["likert"], strict=True)) == {
        c: 8 - r for c, r in rank_of.items()
    }
    assert dict(zip(raw["completion_ids"], raw["flags"], strict=True)) == {
        c: ["hallucination"] if r == 3 else [] for c, r in rank_of.items()
    }
    assert set(raw["model_versions"]) == model_names
    assert raw["shown_order"] == lease.shown_order
    assert raw["notes"] == "two were equally good" and raw["time_spent_ms"] == 90_000
    assert raw["none_acceptable"] is False


def test_export_split_filters_and_a_bad_split_is_a_400(project, personas, client_for, now):
    task = demonstration_task(project)
    lease = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind="demonstration", now=now
    )
    services.demonstration_submit(lease_id=lease.pk, user_id=personas.alice.pk, text="Hi.", now=now)
    reviewer = client_for(personas.reviewer)
    url = f"/api/v1/projects/{project.pk}/export/sft/"
    assert len(jsonl(reviewer.get(url, {"split": task.prompt.split}))) == 1
    other = "test" if task.prompt.split != "test" else "train"
    assert jsonl(reviewer.get(url, {"split": other})) == []
    assert reviewer.get(url, {"split": "everything"}).status_code == 400


def test_a_client_asking_for_ndjson_gets_the_export(project, personas, client_for):
    response = client_for(personas.admin).get(
        f"/api/v1/projects/{project.pk}/export/rankings/", HTTP_ACCEPT="application/x-ndjson"
    )
    assert response.status_code == 200 and jsonl(response) == []


def test_progress_agreement_and_labelers_report_the_submitted_work(
    project, personas, client_for, now
):
    project.overlap = 2
    project.save()
    task = ranking_task(project)
    for labeler, ranks in ((personas.alice, [1, 2, 3, 4]), (personas.bob, [1, 2, 4, 3])):
        lease = queue.claim_next(user_id=labeler.pk, project=project, kind="ranking", now=now)
        ids = list(task.task_completions.values_list("completion_id", flat=True))
        slot_of = blinding.slots(lease.shown_order)  # each labeler has an order of their own
        services.ranking_submit(
            lease_id=lease.pk,
            user_id=labeler.pk,
            entries=[
                {"completion": slot_of[c], "rank": r, "likert": 4}
                for c, r in zip(ids, ranks, strict=True)
            ],
            now=now,
        )
    reviewer = client_for(personas.reviewer)
    progress = reviewer.get(f"/api/v1/projects/{project.pk}/progress/").json()
    assert progress["ranking"] == {"tasks": 1, "done": 1, "submitted": 2, "wanted": 2}
    agreement = reviewer.get(f"/api/v1/projects/{project.pk}/agreement/").json()
    assert agreement["comparisons"] == 6 and agreement["overall"] == pytest.approx(5 / 6)
    assert agreement["pairs"] == [
        {
            "labelers": sorted([personas.alice.pk, personas.bob.pk]),
            "agreement": pytest.approx(5 / 6),
        }
    ]
    rows = {
        r["username"]: r for r in reviewer.get(f"/api/v1/projects/{project.pk}/labelers/").json()
    }
    assert rows["alice_labeler"]["rankings"] == 1 and rows["bob_labeler"]["rankings"] == 1
    assert rows["rita_reviewer"]["rankings"] == 0
    assert RankingEntry.objects.count() == 8 and Demonstration.objects.count() == 0
