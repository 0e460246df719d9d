"""Who may do what (BAD-INPUTS 1-8): every endpoint x role x method, and the named attacks."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils.timezone import now

from accounts.services import api_token_issue
from labeling import queue, services
from labeling.models import Demonstration, Lease, Membership, Ranking, Role
from tests.factories import demonstration_task, ranking_task

from .conftest import entries_for, jsonl

pytestmark = pytest.mark.django_db

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
ROLES = ["anonymous", "outsider", "labeler", "reviewer", "admin"]

# Who an endpoint's methods are meant for. "owner" is the labeler holding the lease; "creator"
# is staff (none of these personas is) or an admin of some project (access.can_create_project);
# any other method is meant for nobody ("staff").
ENDPOINTS: dict[str, tuple[str, dict[str, str]]] = {
    "token": ("/api/v1/auth/token/", {"POST": "anyone"}),
    "tokens": ("/api/v1/auth/tokens/", {"GET": "signed-in"}),
    "api-token": ("/api/v1/auth/tokens/{tok}/", {"DELETE": "owner"}),
    "projects": ("/api/v1/projects/", {"GET": "signed-in", "POST": "creator"}),
    "project": ("/api/v1/projects/{p}/", {"GET": "labeler", "PATCH": "admin"}),
    "next": ("/api/v1/projects/{p}/next/", {"POST": "labeler"}),
    "members": ("/api/v1/projects/{p}/members/", {"GET": "admin", "POST": "admin"}),
    "member": ("/api/v1/projects/{p}/members/{bob}/", {"DELETE": "admin"}),
    "invitations": ("/api/v1/projects/{p}/invitations/", {"POST": "admin"}),
    "prompts-import": ("/api/v1/projects/{p}/prompts/import/", {"POST": "admin"}),
    "ranking-tasks-import": ("/api/v1/projects/{p}/ranking-tasks/import/", {"POST": "admin"}),
    "export-sft": ("/api/v1/projects/{p}/export/sft/", {"GET": "reviewer"}),
    "export-preferences": ("/api/v1/projects/{p}/export/preferences/", {"GET": "reviewer"}),
    "export-rankings": ("/api/v1/projects/{p}/export/rankings/", {"GET": "reviewer"}),
    "progress": ("/api/v1/projects/{p}/progress/", {"GET": "reviewer"}),
    "agreement": ("/api/v1/projects/{p}/agreement/", {"GET": "reviewer"}),
    "labelers": ("/api/v1/projects/{p}/labelers/", {"GET": "reviewer"}),
    "evaluation": ("/api/v1/projects/{p}/evaluation/", {"GET": "reviewer"}),
    "runs": ("/api/v1/projects/{p}/runs/", {"GET": "reviewer", "POST": "admin"}),
    "evaluation-refresh": ("/api/v1/projects/{p}/evaluation/refresh/", {"POST": "reviewer"}),
    "evaluation-tasks": ("/api/v1/projects/{p}/evaluation-tasks/", {"POST": "admin"}),
    "models": ("/api/v1/projects/{p}/models/", {"GET": "reviewer"}),
    "model": ("/api/v1/projects/{p}/models/{model}/", {"GET": "reviewer"}),
    "model-completions": ("/api/v1/projects/{p}/models/{model}/completions/", {"GET": "reviewer"}),
    "registrations": (
        "/api/v1/projects/{p}/model-registrations/",
        {"GET": "admin", "POST": "admin"},
    ),
    "registration": ("/api/v1/projects/{p}/model-registrations/{registration}/", {"GET": "admin"}),
    "run": ("/api/v1/projects/{p}/runs/{run}/", {"GET": "reviewer"}),
    "run-cancel": ("/api/v1/projects/{p}/runs/{run}/cancel/", {"POST": "admin"}),
    "run-resume": ("/api/v1/projects/{p}/runs/{run}/resume/", {"POST": "admin"}),
    "rounds": ("/api/v1/projects/{p}/rounds/", {"GET": "reviewer", "POST": "admin"}),
    "round": ("/api/v1/projects/{p}/rounds/{round}/", {"GET": "reviewer"}),
    "round-cancel": ("/api/v1/projects/{p}/rounds/{round}/cancel/", {"POST": "admin"}),
    "demonstrations": ("/api/v1/projects/{p}/demonstrations/", {"GET": "labeler"}),
    "rankings": ("/api/v1/projects/{p}/rankings/", {"GET": "labeler"}),
    "comparisons": ("/api/v1/projects/{p}/comparisons/", {"GET": "reviewer"}),
    "tasks": ("/api/v1/projects/{p}/tasks/", {"GET": "reviewer"}),
    "lease": ("/api/v1/leases/{demo}/", {"GET": "owner"}),
    "heartbeat": ("/api/v1/leases/{demo}/heartbeat/", {"POST": "owner"}),
    "reclaim": ("/api/v1/leases/{demo}/reclaim/", {"POST": "owner"}),
    "skip": ("/api/v1/leases/{demo}/skip/", {"POST": "owner"}),
    "draft": ("/api/v1/leases/{demo}/draft/", {"POST": "owner"}),
    "demonstration": ("/api/v1/leases/{demo}/demonstration/", {"POST": "owner"}),
    "ranking": ("/api/v1/leases/{rank}/ranking/", {"POST": "owner"}),
    "comparison": ("/api/v1/leases/{rank}/comparison/", {"POST": "owner"}),
}
MEANT_FOR = {
    "anyone": set(ROLES),
    "signed-in": {"outsider", "labeler", "reviewer", "admin"},
    "labeler": {"labeler", "reviewer", "admin"},
    "reviewer": {"reviewer", "admin"},
    "admin": {"admin"},
    "owner": {"labeler"},
    "creator": {"outsider", "admin"},
    "staff": set(),
}


def _user(personas, role):
    return {
        "anonymous": None,
        "outsider": personas.outsider,
        "labeler": personas.alice,
        "reviewer": personas.reviewer,
        "admin": personas.admin,
    }[role]


def _url(template, project, personas, leases):
    alices_token = api_token_issue(user_id=personas.alice.pk, name="x", now=now(), lifetime=None)
    run = round_ = model = registration = None
    if {"{run}", "{round}", "{model}", "{registration}"} & set(re.findall(r"\{\w+\}", template)):
        from tests.factories import ModelVersionFactory
        from training.models import ModelRegistration, Round, TrainingRun

        base = ModelVersionFactory(project=project, kind="base")
        run = TrainingRun.objects.create(
            project=project, kind="sft", base_model=base, status="failed"
        ).pk
        round_ = Round.objects.create(project=project, number=1, policy=base).number
        model = base.pk
        registration = ModelRegistration.objects.create(
            project=project, name="reg", source_kind="directory", source="x"
        ).pk
    return template.format(
        registration=registration,
        model=model,
        run=run,
        round=round_,
        p=project.pk,
        bob=personas.bob.pk,
        demo=leases.demonstration.pk,
        rank=leases.ranking.pk,
        tok=alices_token.token.pk,
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_no_endpoint_answers_2xx_to_a_role_and_method_it_is_not_meant_for(
    project, personas, alice_leases, client_for, endpoint, role, method
):
    template, allowed = ENDPOINTS[endpoint]
    client = client_for(_user(personas, role))
    url = _url(template, project, personas, alice_leases)
    response = client.generic(method, url, "{}", content_type="application/json")
    if role in MEANT_FOR[allowed.get(method, "staff")]:
        assert response.status_code < 500
    elif role == "anonymous":
        # The token endpoint authenticates nobody, so it answers 405 to other methods.
        assert response.status_code == (405 if endpoint == "token" else 401)
    else:
        assert response.status_code in {403, 404, 405}, response.content


def test_every_api_route_is_in_the_matrix_with_the_methods_its_view_answers():
    """A new endpoint cannot skip the role x method test above: each /api/v1/ route is listed,
    and each method its view implements is meant for somebody."""
    from django.urls import URLPattern, URLResolver, get_resolver

    def routes(patterns, prefix=""):
        for entry in patterns:
            if isinstance(entry, URLResolver):
                yield from routes(entry.url_patterns, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern):
                yield prefix + str(entry.pattern), entry.callback

    def shape(route):  # "projects/<id:project_id>/runs/" and "projects/{p}/runs/" alike
        return re.sub(r"<[^>]+>|\{\w+\}", "*", route.removeprefix("/"))

    listed = {shape(template): allowed for template, allowed in ENDPOINTS.values()}
    for route, view in routes(get_resolver().url_patterns):
        if not route.startswith("api/v1/"):
            continue
        assert shape(route) in listed, f"{route} is not in ENDPOINTS"
        view_class = view.view_class
        implemented = {m.upper() for m in view_class.http_method_names if hasattr(view_class, m)}
        assert implemented - {"HEAD", "OPTIONS"} == set(listed[shape(route)]), route


def test_labeler_b_cannot_touch_labeler_a_s_leases_and_nothing_changes(
    personas, alice_leases, client_for
):
    bob = client_for(personas.bob)
    demo, rank = alice_leases.demonstration, alice_leases.ranking
    before = list(Lease.objects.order_by("pk").values())
    answers = [
        bob.get(f"/api/v1/leases/{demo.pk}/"),
        bob.post(f"/api/v1/leases/{demo.pk}/heartbeat/"),
        bob.post(f"/api/v1/leases/{demo.pk}/reclaim/"),
        bob.post(f"/api/v1/leases/{demo.pk}/skip/", {"reason": "mine now"}, format="json"),
        bob.post(f"/api/v1/leases/{demo.pk}/draft/", {"text": "x"}, format="json"),
        bob.post(f"/api/v1/leases/{demo.pk}/demonstration/", {"text": "x"}, format="json"),
        bob.post(
            f"/api/v1/leases/{rank.pk}/ranking/",
            {"entries": entries_for(rank, [1, 2, 3, 4])},
            format="json",
        ),
    ]
    assert [a.status_code for a in answers] == [404] * len(answers)
    assert list(Lease.objects.order_by("pk").values()) == before
    assert not Demonstration.objects.exists() and not Ranking.objects.exists()


def test_a_labeler_lists_only_their_own_submissions_and_a_reviewer_lists_all(
    project, personas, client_for, now
):
    for labeler in (personas.alice, personas.bob):
        demonstration_task(project)
        lease = queue.claim_next(user_id=labeler.pk, project=project, kind="demonstration", now=now)
        services.demonstration_submit(lease_id=lease.pk, user_id=labeler.pk, text="Mine.", now=now)
        ranking_task(project)
        lease = queue.claim_next(user_id=labeler.pk, project=project, kind="ranking", now=now)
        services.ranking_submit(
            lease_id=lease.pk, user_id=labeler.pk, entries=entries_for(lease, [1, 2, 3, 4]), now=now
        )

    def labelers(user, what):
        page = client_for(user).get(f"/api/v1/projects/{project.pk}/{what}/").json()
        return sorted(row["labeler"] for row in page["results"])

    for what in ("demonstrations", "rankings"):
        assert labelers(personas.alice, what) == ["alice_labeler"]
        assert labelers(personas.bob, what) == ["bob_labeler"]
        assert labelers(personas.reviewer, what) == ["alice_labeler", "bob_labeler"]


def test_a_labeler_reads_their_own_rankings_by_slot_letter_and_a_reviewer_by_completion_id(
    project, personas, client_for, now
):
    """Completion ids would let a labeler correlate outputs across tasks (labeling/blinding.py);
    reviewers are not blind."""
    ranking_task(project)
    lease = queue.claim_next(user_id=personas.alice.pk, project=project, kind="ranking", now=now)
    services.ranking_submit(
        lease_id=lease.pk,
        user_id=personas.alice.pk,
        entries=entries_for(lease, [2, 1, 4, 3]),
        now=now,
    )
    url = f"/api/v1/projects/{project.pk}/rankings/"
    [own] = client_for(personas.alice).get(url).json()["results"]
    assert [(e["completion"], e["rank"]) for e in own["entries"]] == [
        ("B", 1),
        ("A", 2),
        ("D", 3),
        ("C", 4),
    ]
    assert "shown_order" not in own
    [full] = client_for(personas.reviewer).get(url).json()["results"]
    a, b, c, d = lease.shown_order
    assert [(e["completion"], e["rank"]) for e in full["entries"]] == [
        (b, 1),
        (a, 2),
        (d, 3),
        (c, 4),
    ]
    assert full["shown_order"] == lease.shown_order


def test_a_labeler_sees_only_their_own_projects(project, personas, client_for):
    mine = client_for(personas.alice).get("/api/v1/projects/").json()["results"]
    theirs = client_for(personas.outsider).get("/api/v1/projects/").json()["results"]
    assert [p["id"] for p in mine] == [project.pk]
    assert [(p["id"], p["role"]) for p in theirs] == [(personas.other_project.pk, "admin")]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", ""),
        ("PATCH", ""),
        ("POST", "next/"),
        ("GET", "members/"),
        ("POST", "members/"),
        ("POST", "prompts/import/"),
        ("POST", "ranking-tasks/import/"),
        ("GET", "export/sft/"),
        ("GET", "progress/"),
        ("GET", "agreement/"),
        ("GET", "labelers/"),
        ("GET", "demonstrations/"),
        ("GET", "rankings/"),
    ],
)
def test_a_foreign_project_id_in_a_nested_url_is_a_404(personas, client_for, method, path):
    foreign = personas.other_project.pk
    for user in (personas.admin, personas.alice):
        response = client_for(user).generic(
            method, f"/api/v1/projects/{foreign}/{path}", "{}", content_type="application/json"
        )
        assert response.status_code == 404


def test_an_admin_cannot_remove_a_member_of_another_project_through_their_own(
    project, personas, client_for
):
    response = client_for(personas.admin).delete(
        f"/api/v1/projects/{project.pk}/members/{personas.outsider.pk}/"
    )
    assert response.status_code == 404  # not a member here: nothing to remove
    assert Membership.objects.filter(user=personas.outsider, role=Role.ADMIN).exists()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "export/sft/"),
        ("GET", "export/preferences/"),
        ("GET", "export/rankings/"),
        ("GET", "progress/"),
        ("GET", "agreement/"),
        ("GET", "labelers/"),
        ("GET", "members/"),
        ("POST", "members/"),
        ("POST", "prompts/import/"),
        ("POST", "ranking-tasks/import/"),
        ("PATCH", ""),
    ],
)
def test_a_labeler_calling_reviewer_or_admin_endpoints_gets_a_403(
    project, personas, client_for, method, path
):
    response = client_for(personas.alice).generic(
        method, f"/api/v1/projects/{project.pk}/{path}", "{}", content_type="application/json"
    )
    assert response.status_code == 403


def test_a_reviewer_cannot_manage_members_or_import(project, personas, client_for):
    reviewer = client_for(personas.reviewer)
    assert reviewer.get(f"/api/v1/projects/{project.pk}/members/").status_code == 403
    promote = reviewer.post(
        f"/api/v1/projects/{project.pk}/members/",
        {"username": "rita_reviewer", "role": "admin"},
        format="json",
    )
    assert promote.status_code == 403
    assert Membership.objects.get(user=personas.reviewer).role == Role.REVIEWER


def test_a_removed_reviewer_is_denied_on_their_next_request(project, personas, client_for):
    reviewer = client_for(personas.reviewer)
    export = f"/api/v1/projects/{project.pk}/export/sft/"
    assert reviewer.get(export).status_code == 200
    removed = client_for(personas.admin).delete(
        f"/api/v1/projects/{project.pk}/members/{personas.reviewer.pk}/"
    )
    assert removed.status_code == 204
    assert reviewer.get(export).status_code == 404
    assert reviewer.get(f"/api/v1/projects/{project.pk}/").status_code == 404


def test_a_demoted_reviewer_loses_reviewer_endpoints_at_once(project, personas, client_for):
    demoted = client_for(personas.admin).post(
        f"/api/v1/projects/{project.pk}/members/",
        {"username": "rita_reviewer", "role": "labeler"},
        format="json",
    )
    assert demoted.status_code == 200 and demoted.json()["role"] == "labeler"
    reviewer = client_for(personas.reviewer)
    assert reviewer.get(f"/api/v1/projects/{project.pk}/progress/").status_code == 403


def test_a_removed_labeler_can_no_longer_submit_on_their_lease(
    project, personas, alice_leases, client_for
):
    client_for(personas.admin).delete(f"/api/v1/projects/{project.pk}/members/{personas.alice.pk}/")
    response = client_for(personas.alice).post(
        f"/api/v1/leases/{alice_leases.demonstration.pk}/demonstration/",
        {"text": "Still here?"},
        format="json",
    )
    assert response.status_code == 404
    assert not Demonstration.objects.exists()


def test_the_last_admin_can_be_neither_removed_nor_demoted(project, personas, client_for):
    admin = client_for(personas.admin)
    url = f"/api/v1/projects/{project.pk}/members/"
    assert admin.delete(f"{url}{personas.admin.pk}/").status_code == 400
    demote = admin.post(url, {"username": "ada_admin", "role": "labeler"}, format="json")
    assert demote.status_code == 400
    assert Membership.objects.get(user=personas.admin).role == Role.ADMIN


def test_an_admin_adds_a_member_who_can_then_work(project, personas, client_for):
    from tests.factories import UserFactory, demonstration_task

    UserFactory(username="newcomer")
    demonstration_task(project)
    added = client_for(personas.admin).post(
        f"/api/v1/projects/{project.pk}/members/",
        {"username": "newcomer", "role": "labeler"},
        format="json",
    )
    assert added.status_code == 200
    newcomer = Membership.objects.get(user__username="newcomer").user
    offered = client_for(newcomer).post(
        f"/api/v1/projects/{project.pk}/next/", {"kind": "demonstration"}, format="json"
    )
    assert offered.status_code == 200


def test_staff_and_project_admins_create_projects_and_the_creator_becomes_admin(
    personas, client_for
):
    body = {"name": "Staff project", "slug": "staff-project", "k": 3}
    for someone in (personas.reviewer, personas.alice):
        refused = client_for(someone).post("/api/v1/projects/", body, format="json")
        assert refused.status_code == 403
    by_an_admin = {"name": "Admin project", "slug": "admin-project"}
    assert (
        client_for(personas.admin).post("/api/v1/projects/", by_an_admin, format="json").status_code
        == 201
    )
    personas.outsider.is_staff = True
    personas.outsider.save()
    created = client_for(personas.outsider).post("/api/v1/projects/", body, format="json")
    assert created.status_code == 201
    assert created.json()["role"] == "admin" and created.json()["k"] == 3
    assert Membership.objects.get(project_id=created.json()["id"]).user == personas.outsider
    bad = client_for(personas.outsider).post(
        "/api/v1/projects/", {"name": "X", "slug": "x", "k": 12}, format="json"
    )
    assert bad.status_code == 400


HOSTILE = '<script>alert(1)</script><img src=x onerror=alert(2)> hx-get="/x" {{ secret }} {% now %}'


def test_hostile_text_round_trips_as_data_in_json(project, personas, client_for, now):
    project.valid_percent = project.test_percent = 0
    project.save()
    admin = client_for(personas.admin)
    imported = admin.post(
        f"/api/v1/projects/{project.pk}/prompts/import/",
        {"records": [{"prompt": HOSTILE}]},
        format="json",
    )
    assert imported.status_code == 201
    alice = client_for(personas.alice)
    offered = alice.post(
        f"/api/v1/projects/{project.pk}/next/", {"kind": "demonstration"}, format="json"
    )
    assert offered["Content-Type"] == "application/json"
    assert offered.json()["prompt"]["messages"] == [{"role": "user", "content": HOSTILE}]
    written = alice.post(
        f"/api/v1/leases/{offered.json()['lease_id']}/demonstration/",
        {"text": HOSTILE},
        format="json",
    )
    assert written.status_code == 201 and written.json()["text"] == HOSTILE
    [record] = jsonl(
        client_for(personas.reviewer).get(f"/api/v1/projects/{project.pk}/export/sft/")
    )
    assert record["messages"] == [
        {"role": "user", "content": HOSTILE},
        {"role": "assistant", "content": HOSTILE},
    ]
    guidelines = admin.patch(
        f"/api/v1/projects/{project.pk}/", {"guidelines": HOSTILE}, format="json"
    )
    assert guidelines.json()["guidelines"] == HOSTILE


def test_an_expired_lease_of_someone_else_is_still_a_404_not_a_409(
    personas, alice_leases, client_for, now
):
    Lease.objects.filter(pk=alice_leases.demonstration.pk).update(
        expires_at=now - timedelta(seconds=1)
    )
    response = client_for(personas.bob).post(
        f"/api/v1/leases/{alice_leases.demonstration.pk}/demonstration/",
        {"text": "x"},
        format="json",
    )
    assert response.status_code == 404
