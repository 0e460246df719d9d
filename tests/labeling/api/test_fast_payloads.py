"""The labeler loop's hand-written SQL answers exactly what the serializers define.

`next`, the lease detail and the ranking submit build their JSON from SQL rows (labeling/sql/,
labeling/api/fast.py); LeaseTaskSerializer and LabelerRankingSerializer stay the definition (and
the OpenAPI schema). Each test compares the fast answer with the serializer's output over a fresh ORM
read of the same rows.
"""

from __future__ import annotations

import json
import random

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.renderers import JSONRenderer

from accounts.models import ApiToken
from labeling import queue, services, sql
from labeling.api import fast
from labeling.api import serializers as s
from labeling.errors import Invalid
from labeling.models import FLAG_CODES, MAX_K, DemonstrationDraft, Lease, Ranking, Task
from labeling.services import MAX_NOTES_CHARS, MAX_TIME_SPENT_MS
from tests.factories import demonstration_task, ranking_task

from .conftest import entries_for

pytestmark = pytest.mark.django_db


def _serialized_lease(lease_id: int) -> dict:
    lease = Lease.objects.select_related("task__prompt", "task__project").get(pk=lease_id)
    return dict(s.LeaseTaskSerializer(lease).data)


def test_next_answers_a_ranking_lease_as_the_serializer_does(project, personas, client_for):
    ranking_task(project, texts=["<b>one</b>", "two", "three", "four"])
    response = client_for(personas.alice).post(
        f"/api/v1/projects/{project.pk}/next/", {"kind": "ranking"}, format="json"
    )
    assert response.status_code == 200
    body = response.json()
    assert body == _serialized_lease(body["lease_id"])
    assert [c["text"] for c in body["completions"]] != [] and body["draft"] is None
    assert "model_version" not in str(body)  # the labeler never learns which model wrote what


def test_next_answers_a_demonstration_lease_with_its_draft(project, personas, client_for, now):
    demonstration_task(project)
    alice = client_for(personas.alice)
    first = alice.post(
        f"/api/v1/projects/{project.pk}/next/", {"kind": "demonstration"}, format="json"
    ).json()
    DemonstrationDraft.objects.create(lease_id=first["lease_id"], text="half done", updated_at=now)
    again = alice.post(
        f"/api/v1/projects/{project.pk}/next/", {"kind": "demonstration"}, format="json"
    ).json()
    assert again["lease_id"] == first["lease_id"]  # the held lease comes back
    assert again["draft"] == "half done"
    assert again == _serialized_lease(first["lease_id"])
    detail = alice.get(f"/api/v1/leases/{first['lease_id']}/").json()
    assert detail == again


def test_the_ranking_submit_answer_is_the_serializers_view_of_the_stored_rows(
    project, personas, alice_leases, client_for
):
    project.flags = ["hallucination", "fails_to_follow"]
    project.save(update_fields=["flags"])
    entries = entries_for(alice_leases.ranking, [2, 1, 1, 3], flags=["hallucination"])
    entries[1]["likert"] = 7
    body = {"entries": entries, "notes": "  tie for first  ", "time_spent_ms": 1234}
    url = f"/api/v1/leases/{alice_leases.ranking.pk}/ranking/"
    first = client_for(personas.alice).post(url, body, format="json")
    assert first.status_code == 201
    stored = Ranking.objects.select_related("labeler", "task").get(pk=first.json()["id"])
    assert first.json() == dict(s.LabelerRankingSerializer(stored).data)
    assert first.json()["notes"] == "tie for first"
    replay = client_for(personas.alice).post(url, body, format="json")
    assert (replay.status_code, replay.json()) == (200, first.json())


def test_the_service_returns_the_ranking_with_its_entries_without_reading_them_again(
    project, personas, alice_leases, now, django_assert_num_queries
):
    lease = alice_leases.ranking
    ranking, created = services.ranking_submit(
        lease_id=lease.pk,
        user_id=personas.alice.pk,
        entries=entries_for(lease, [1, 2, 3, 4]),
        now=now,
    )
    assert created
    with django_assert_num_queries(0):
        ranks = [(e.completion_id, e.rank) for e in ranking.entries.all()]
    fresh = [(e.completion_id, e.rank) for e in Ranking.objects.get(pk=ranking.pk).entries.all()]
    assert ranks == fresh and len(ranks) == 4
    assert all(e.pk is not None for e in ranking.entries.all())


def test_a_lease_read_by_sql_loads_any_other_project_field_on_access(
    project, personas, alice_leases, now
):
    lease = queue.lock_for_submit(
        lease_id=alice_leases.ranking.pk, user_id=personas.alice.pk, now=now
    )
    assert lease.task.project.lease_seconds == project.lease_seconds
    assert lease.task.project.name == project.name  # deferred, then loaded: never a default
    assert lease.task.kind == Task.Kind.RANKING and lease.expires_at.tzinfo is not None


def test_an_unknown_token_and_an_inactive_users_token_are_401(project, personas, client_for):
    url = f"/api/v1/projects/{project.pk}/next/"
    stranger = client_for()
    stranger.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert stranger.post(url, {"kind": "ranking"}, format="json").status_code == 401
    alice = client_for(personas.alice)
    get_user_model().objects.filter(pk=personas.alice.pk).update(is_active=False)
    response = alice.post(url, {"kind": "ranking"}, format="json")
    assert response.status_code == 401
    assert ApiToken.objects.filter(user=personas.alice).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements: PostgreSQL")
def test_a_prepared_statement_is_prepared_again_on_a_new_connection():
    query = "SELECT %s + 1"
    assert sql.one(query, [1], name="il_test_plus_one") == (2,)
    connection.close()  # as Django does after CONN_MAX_AGE or a broken connection
    assert sql.one(query, [41], name="il_test_plus_one") == (42,)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE name = 'il_test_plus_one'"
        )
        assert cursor.fetchone() == (1,)


# Per field: values the serializer takes as they are, then values it converts or refuses.
_VALUES = {
    "completion": (["A", "D", "I"], ["J", "a", "", "AB", 1, 7, 10**12, "7", True, None, ["A"]]),
    "rank": ([1, 2, MAX_K], [MAX_K + 1, 0, "1", 1.5, False]),
    "likert": ([1, 4, 7], [8, 0, "5", None]),
    "flags": (
        [[], ["hallucination"], ["a" * 64]],
        [["a" * 65], [""], [" x"], ["x\x00"], "x", [1], ["\ud800"], ["f"] * (len(FLAG_CODES) + 1)],
    ),
    "notes": (["", "fine", "x" * MAX_NOTES_CHARS], [" padded ", "x" * (MAX_NOTES_CHARS + 1), "nul\x00", 5, None]),
    "none_acceptable": ([True, False], ["true", 1, None]),
    "time_spent_ms": ([0, 1000, MAX_TIME_SPENT_MS], [MAX_TIME_SPENT_MS + 1, -1, "9", 2.0]),
}  # fmt: skip


def _value(rng: random.Random, key: str) -> object:
    good, bad = _VALUES[key]
    return rng.choice(good if rng.random() < 0.9 else bad)


def _random_body(rng: random.Random) -> object:
    """A ranking body, well-formed or off in one of the ways a client gets it wrong."""
    entries = []
    for _ in range(rng.choice([1, 2, 4, MAX_K] * 6 + [0, MAX_K + 1])):
        entry = {key: _value(rng, key) for key in ("completion", "rank", "likert")}
        if rng.random() < 0.7:
            entry["flags"] = _value(rng, "flags")
        if rng.random() < 0.02:
            entry["model_version"] = 3
        if rng.random() < 0.02:
            del entry["rank"]
        entries.append(entry)
    body: dict = {"entries": entries if rng.random() < 0.98 else {"0": entries}}
    for key in ("notes", "none_acceptable", "time_spent_ms"):
        if rng.random() < 0.6:
            body[key] = _value(rng, key)
    if rng.random() < 0.02:
        body["labeler"] = "someone_else"
    if rng.random() < 0.02:
        return [body]
    return body


def test_the_fast_ranking_body_check_accepts_only_what_the_serializer_accepts_alike():
    """4,000 bodies, right and wrong: whenever the fast check answers, the serializer accepts the
    same body with the same values; whatever it declines goes to the serializer, which judges."""
    rng = random.Random(7)
    answered = declined_valid = 0
    for _ in range(4000):
        body = _random_body(rng)
        fast_data = fast.ranking_submit_fast(body)
        serializer = s.RankingSubmitSerializer(data=body)
        if fast_data is not None:
            answered += 1
            assert serializer.is_valid(), (body, serializer.errors)
            expected = dict(serializer.validated_data)
            expected["entries"] = [dict(e) for e in expected["entries"]]
            assert fast_data == expected, body
        elif serializer.is_valid():
            declined_valid += 1  # e.g. "7" for 7: the serializer converts it, the fast path defers
    assert answered > 200 and declined_valid > 0


@pytest.mark.parametrize(
    "body",
    [{}, {"kind": "bogus"}, {"kind": ["ranking"]}, {"kind": "ranking", "user": 1}, ["ranking"]],
    ids=["empty", "unknown-kind", "list-kind", "extra-field", "not-an-object"],
)
def test_next_with_a_bad_body_is_a_400_with_the_serializers_errors(
    project, personas, client_for, body
):
    ranking_task(project)
    response = client_for(personas.alice).post(
        f"/api/v1/projects/{project.pk}/next/", body, format="json"
    )
    assert response.status_code == 400
    serializer = s.NextSerializer(data=body)
    assert not serializer.is_valid()
    assert response.json() == json.loads(JSONRenderer().render(serializer.errors))
    assert not Lease.objects.exists()


# `next` + the ranking submit once each statement is prepared: the labeler loop's round trips.
# In a test each transaction is a savepoint (SAVEPOINT and RELEASE are counted where production
# runs BEGIN and COMMIT, which Django does not log): 13 on PostgreSQL as docs/architecture.md says;
# SQLite runs the claim's answer and the submit's lease update as statements of their own.
STATEMENTS_PER_ANNOTATION = {"postgresql": 13, "sqlite": 16}


def test_an_annotation_runs_a_fixed_number_of_statements(project, personas, client_for):
    for _ in range(3):
        ranking_task(project)
    alice = client_for(personas.alice)

    def annotate() -> None:
        lease = alice.post(
            f"/api/v1/projects/{project.pk}/next/", {"kind": "ranking"}, format="json"
        ).json()
        entries = [
            {"completion": c["id"], "rank": i + 1, "likert": 4}  # the slot letter
            for i, c in enumerate(lease["completions"])
        ]
        submitted = alice.post(
            f"/api/v1/leases/{lease['lease_id']}/ranking/", {"entries": entries}, format="json"
        )
        assert submitted.status_code == 201

    annotate()  # prepares the statements on this connection (PostgreSQL)
    with CaptureQueriesContext(connection) as statements:
        annotate()
    assert len(statements) == STATEMENTS_PER_ANNOTATION[connection.vendor]


def test_a_ranking_task_of_fewer_outputs_than_the_projects_k_is_ranked_over_its_own(
    project, personas, client_for
):
    """A sampling run makes a task of 3 different outputs when the 4th repeated one of them: K
    in the answer is 3, on both paths, and ranks go to 3."""
    from labeling import services
    from labeling.models import Completion

    assert project.k == 4
    task = ranking_task(project, texts=["one", "two", "three", "four"])
    three = list(Completion.objects.filter(prompt=task.prompt).order_by("pk")[:3])
    services.ranking_task_create(project=project, prompt=task.prompt, completions=three)
    task.delete()
    alice = client_for(personas.alice)
    body = alice.post(
        f"/api/v1/projects/{project.pk}/next/", {"kind": "ranking"}, format="json"
    ).json()
    assert body["k"] == 3 and len(body["completions"]) == 3
    assert body == _serialized_lease(body["lease_id"])
    url = f"/api/v1/leases/{body['lease_id']}/ranking/"
    too_far = [{"completion": c["id"], "rank": 4, "likert": 4} for c in body["completions"]]
    assert alice.post(url, {"entries": too_far}, format="json").status_code == 400
    ranked = [
        {"completion": c["id"], "rank": i + 1, "likert": 4}
        for i, c in enumerate(body["completions"])
    ]
    assert alice.post(url, {"entries": ranked}, format="json").status_code == 201
    with pytest.raises(Invalid, match="2 to 9 completions"):
        services.ranking_task_create(project=project, prompt=task.prompt, completions=three[:1])
