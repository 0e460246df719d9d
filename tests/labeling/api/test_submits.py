"""Submits: idempotent on the lease, 409 once expired, skip, drafts, strict bodies, body caps."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from labeling import queue
from labeling.models import Completion, Demonstration, Lease, Ranking, RankingEntry

from .conftest import entries_for

pytestmark = pytest.mark.django_db


def test_the_same_demonstration_submitted_twice_is_stored_once_and_answered_alike(
    personas, alice_leases, client_for
):
    alice = client_for(personas.alice)
    url = f"/api/v1/leases/{alice_leases.demonstration.pk}/demonstration/"
    body = {"text": "Once only.", "time_spent_ms": 1000}
    first = alice.post(url, body, format="json")
    second = alice.post(url, body, format="json")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json() == second.json()
    assert Demonstration.objects.count() == 1


def test_the_same_ranking_submitted_twice_is_stored_once_and_answered_alike(
    personas, alice_leases, client_for
):
    alice = client_for(personas.alice)
    url = f"/api/v1/leases/{alice_leases.ranking.pk}/ranking/"
    body = {"entries": entries_for(alice_leases.ranking, [2, 1, 1, 3])}
    first = alice.post(url, body, format="json")
    second = alice.post(url, body, format="json")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json() == second.json()
    assert Ranking.objects.count() == 1 and RankingEntry.objects.count() == 4


def test_a_submit_on_an_expired_lease_is_a_409_and_writes_nothing(
    personas, alice_leases, client_for, now
):
    Lease.objects.filter(pk=alice_leases.demonstration.pk).update(
        expires_at=now - timedelta(seconds=1)
    )
    response = client_for(personas.alice).post(
        f"/api/v1/leases/{alice_leases.demonstration.pk}/demonstration/",
        {"text": "Too late."},
        format="json",
    )
    assert response.status_code == 409
    assert Demonstration.objects.count() == 0


def test_a_submit_after_the_task_went_to_someone_else_is_a_409(
    project, personas, alice_leases, client_for, now
):
    lease = alice_leases.ranking
    Lease.objects.filter(pk=lease.pk).update(expires_at=now - timedelta(seconds=1))
    bobs = queue.claim_next(user_id=personas.bob.pk, project=project, kind="ranking", now=now)
    assert bobs.task_id == lease.task_id
    alice = client_for(personas.alice)
    assert alice.post(f"/api/v1/leases/{lease.pk}/reclaim/").status_code == 409
    submit = alice.post(
        f"/api/v1/leases/{lease.pk}/ranking/",
        {"entries": entries_for(lease, [1, 2, 3, 4])},
        format="json",
    )
    assert submit.status_code == 409
    assert Ranking.objects.count() == 0


def test_an_expired_lease_with_a_free_slot_can_be_reclaimed_and_submitted(
    personas, alice_leases, client_for, now
):
    lease = alice_leases.demonstration
    Lease.objects.filter(pk=lease.pk).update(expires_at=now - timedelta(seconds=1))
    alice = client_for(personas.alice)
    assert alice.post(f"/api/v1/leases/{lease.pk}/heartbeat/").status_code == 409
    reclaimed = alice.post(f"/api/v1/leases/{lease.pk}/reclaim/")
    assert reclaimed.status_code == 200 and reclaimed.json()["status"] == "active"
    submit = alice.post(
        f"/api/v1/leases/{lease.pk}/demonstration/", {"text": "Back."}, format="json"
    )
    assert submit.status_code == 201


def test_a_skipped_task_is_not_offered_to_the_skipper_again_but_is_to_others(
    project, personas, alice_leases, client_for
):
    alice = client_for(personas.alice)
    lease = alice_leases.demonstration
    assert alice.post(f"/api/v1/leases/{lease.pk}/skip/", {}, format="json").status_code == 400
    too_long = alice.post(f"/api/v1/leases/{lease.pk}/skip/", {"reason": "x" * 501}, format="json")
    assert too_long.status_code == 400
    skipped = alice.post(
        f"/api/v1/leases/{lease.pk}/skip/", {"reason": "I do not know Latin."}, format="json"
    )
    assert skipped.status_code == 200 and skipped.json()["status"] == "skipped"
    next_url = f"/api/v1/projects/{project.pk}/next/"
    assert alice.post(next_url, {"kind": "demonstration"}, format="json").status_code == 204
    bobs = client_for(personas.bob).post(next_url, {"kind": "demonstration"}, format="json")
    assert bobs.status_code == 200 and bobs.json()["task_id"] == lease.task_id
    assert Lease.objects.get(pk=lease.pk).skip_reason == "I do not know Latin."


def test_a_draft_is_saved_and_comes_back_with_the_lease(personas, alice_leases, client_for):
    alice = client_for(personas.alice)
    lease = alice_leases.demonstration
    saved = alice.post(f"/api/v1/leases/{lease.pk}/draft/", {"text": "Half wri"}, format="json")
    assert saved.status_code == 204
    assert alice.get(f"/api/v1/leases/{lease.pk}/").json()["draft"] == "Half wri"


def test_asking_twice_for_next_gives_back_the_same_lease(
    project, personas, alice_leases, client_for
):
    alice = client_for(personas.alice)
    url = f"/api/v1/projects/{project.pk}/next/"
    again = alice.post(url, {"kind": "ranking"}, format="json").json()
    assert again["lease_id"] == alice_leases.ranking.pk
    texts = dict(Completion.objects.values_list("pk", "text"))
    assert [(c["id"], c["text"]) for c in again["completions"]] == [
        (slot, texts[pk]) for slot, pk in zip("ABCD", alice_leases.ranking.shown_order, strict=True)
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"text": ""},
        {"text": "   \n "},
        {"text": "x" * 32_001},
        {"text": "nul\x00byte"},
        {"text": "ok", "time_spent_ms": -1},
        {"text": ["not", "text"]},
    ],
    ids=["empty", "whitespace", "oversized", "nul", "negative-time", "list"],
)
def test_a_bad_demonstration_is_a_400_and_writes_nothing(personas, alice_leases, client_for, body):
    response = client_for(personas.alice).post(
        f"/api/v1/leases/{alice_leases.demonstration.pk}/demonstration/", body, format="json"
    )
    assert response.status_code == 400
    assert Demonstration.objects.count() == 0


def _entry(slot, rank=1, likert=4, **extra):
    return {"completion": slot, "rank": rank, "likert": likert, **extra}


@pytest.mark.parametrize(
    ("make_entries", "says"),
    [
        (lambda ids, other: [_entry("A")] * 4, "A appear more than once"),
        (lambda ids, other: [_entry("A"), _entry("B"), _entry("C"), _entry("B")], "B appear"),
        (lambda ids, other: [_entry(s) for s in "ABC"], "missing: D"),
        (lambda ids, other: [_entry(s, rank=5) for s in "ABCD"], '"rank" must be between 1 and 4'),
        (lambda ids, other: [_entry(s, likert=8) for s in "ABCD"], "less than or equal to 7"),
        (lambda ids, other: [*[_entry(s) for s in "ABC"], _entry("E")], "A, B, C or D"),
        (lambda ids, other: [*[_entry(s) for s in "ABC"], _entry("d")], 'not "d"'),
        (lambda ids, other: [_entry(c) for c in ids], "by the letter it was shown with"),
        (lambda ids, other: [*[_entry(s) for s in "ABC"], _entry(other)], "letter it was shown"),
        (
            lambda ids, other: [*[_entry(s) for s in "ABC"], _entry(str(ids[3]))],
            "letter it was shown",
        ),
        (lambda ids, other: [_entry(s, flags=["nope"]) for s in "ABCD"], "not asked"),
    ],
    ids=[
        "same-slot-four-times",
        "a-slot-twice",
        "missing-slot",
        "rank-range",
        "likert-range",
        "unknown-slot",
        "lowercase-slot",
        "completion-ids-instead-of-slots",
        "foreign-completion-id",
        "completion-id-as-text",
        "unknown-flag",
    ],
)
def test_a_bad_ranking_is_a_400_that_says_why_and_writes_nothing(
    project, personas, alice_leases, client_for, make_entries, says
):
    """Outputs are named by slot letter (labeling/blinding.py): an unknown, repeated or missing
    letter, or a completion id where a letter belongs, is a 400; nothing is stored and the
    lease stays open for a corrected submit."""
    from tests.factories import CompletionFactory

    other = CompletionFactory(prompt__project=project).pk
    lease = alice_leases.ranking
    url = f"/api/v1/leases/{lease.pk}/ranking/"
    alice = client_for(personas.alice)
    response = alice.post(url, {"entries": make_entries(lease.shown_order, other)}, format="json")
    assert response.status_code == 400
    assert says in repr(response.json()), response.json()
    assert Ranking.objects.count() == 0 and RankingEntry.objects.count() == 0
    assert Lease.objects.get(pk=lease.pk).status == Lease.Status.ACTIVE
    fixed = alice.post(url, {"entries": entries_for(lease, [1, 2, 3, 4])}, format="json")
    assert fixed.status_code == 201


def test_a_ranking_by_slot_letters_is_stored_against_the_completions_shown_under_them(
    personas, alice_leases, client_for
):
    lease = alice_leases.ranking
    body = {
        "entries": [
            _entry("C", rank=1, likert=7),
            _entry("A", rank=2, likert=5),
            _entry("D", rank=2, likert=5),
            _entry("B", rank=3, likert=1, flags=["hallucination"]),
        ]
    }
    answer = client_for(personas.alice).post(
        f"/api/v1/leases/{lease.pk}/ranking/", body, format="json"
    )
    assert answer.status_code == 201
    a, b, c, d = lease.shown_order
    stored = {e.completion_id: (e.rank, e.likert, e.flags) for e in RankingEntry.objects.all()}
    assert stored == {
        c: (1, 7, []),
        a: (2, 5, []),
        d: (2, 5, []),
        b: (3, 1, ["hallucination"]),
    }
    # The answer speaks the labeler's letters back, and no completion id.
    assert [(e["completion"], e["rank"]) for e in answer.json()["entries"]] == [
        ("C", 1),
        ("A", 2),
        ("D", 2),
        ("B", 3),
    ]
    assert "shown_order" not in answer.json()


@pytest.mark.parametrize("field", ["labeler", "project", "status", "is_gold", "model_version"])
def test_a_body_that_sets_a_protected_field_is_a_400_and_stores_nothing(
    personas, alice_leases, client_for, field
):
    alice = client_for(personas.alice)
    demo = alice.post(
        f"/api/v1/leases/{alice_leases.demonstration.pk}/demonstration/",
        {"text": "Mine.", field: personas.bob.pk},
        format="json",
    )
    entries = entries_for(alice_leases.ranking, [1, 2, 3, 4])
    entries[0][field] = 1
    ranking = alice.post(
        f"/api/v1/leases/{alice_leases.ranking.pk}/ranking/", {"entries": entries}, format="json"
    )
    assert (demo.status_code, ranking.status_code) == (400, 400)
    assert field in demo.json()
    assert Demonstration.objects.count() == 0 and Ranking.objects.count() == 0


def test_a_3_mb_json_body_is_refused_with_a_413(personas, alice_leases, client_for, settings):
    body = json.dumps({"text": "x" * (3 * 1024 * 1024)})
    assert len(body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    response = client_for(personas.alice).post(
        f"/api/v1/leases/{alice_leases.demonstration.pk}/demonstration/",
        body,
        content_type="application/json",
    )
    assert response.status_code == 413
    assert Demonstration.objects.count() == 0


def test_malformed_json_is_a_400(personas, alice_leases, client_for):
    response = client_for(personas.alice).post(
        f"/api/v1/leases/{alice_leases.demonstration.pk}/demonstration/",
        '{"text": "unterminated',
        content_type="application/json",
    )
    assert response.status_code == 400
