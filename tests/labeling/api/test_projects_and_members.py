"""Projects and members through the API and the pages alike: who creates projects, a project
without flags, removing someone who is not a member."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from labeling.models import Membership, Project, Role
from tests.factories import UserFactory, api_key, ranking_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(client_for):
    """An API client that answers a server error as a response, as a real server does."""

    def make(user):
        client = client_for(user)
        client.raise_request_exception = False
        return client

    return make


def _browser(user) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def test_a_project_created_with_no_flags_asks_none(personas, api):
    """An empty list is a choice (a project may rank without flags). Before: a 500."""
    response = api(personas.admin).post(
        "/api/v1/projects/", {"name": "No flags", "slug": "no-flags", "flags": []}, format="json"
    )
    assert response.status_code == 201 and response.json()["flags"] == []
    assert Project.objects.get(slug="no-flags").flags == []
    defaulted = api(personas.admin).post(
        "/api/v1/projects/", {"name": "Defaults", "slug": "defaults"}, format="json"
    )
    assert defaulted.json()["flags"] == Project().flags  # no "flags" at all: the defaults


def test_a_labeler_ranks_in_a_project_that_asks_no_flags(project, personas, api):
    project.flags = []
    project.save(update_fields=["flags"])
    ranking_task(project)
    alice = api(personas.alice)
    lease = alice.post(f"/api/v1/projects/{project.pk}/next/", {"kind": "ranking"}, format="json")
    assert lease.json()["flags"] == []
    entries = [
        {"completion": c["id"], "rank": i + 1, "likert": 4}
        for i, c in enumerate(lease.json()["completions"])
    ]
    submitted = alice.post(
        f"/api/v1/leases/{lease.json()['lease_id']}/ranking/", {"entries": entries}, format="json"
    )
    assert submitted.status_code == 201


def test_removing_someone_who_is_not_a_member_is_a_404_and_removes_nothing(project, personas, api):
    """Before: a 204, as if something had been removed."""
    admin = api(personas.admin)
    url = f"/api/v1/projects/{project.pk}/members/{{}}/"
    before = Membership.objects.count()
    assert admin.delete(url.format(personas.outsider.pk)).status_code == 404  # elsewhere only
    assert Membership.objects.count() == before
    assert admin.delete(url.format(personas.bob.pk)).status_code == 204
    second = admin.delete(url.format(personas.bob.pk))
    assert second.status_code == 404 and second.json() == {"detail": "No such member."}


def test_a_project_created_on_the_page_with_no_flags_ticked_asks_none(personas):
    """Before: the model refused the empty list in full_clean, uncaught: a 500."""
    response = _browser(personas.admin).post(
        "/projects/new/",
        {"name": "No flags", "slug": "no-flags", "k": "4", "overlap": "1", "demo_overlap": "1"},
    )
    assert response.status_code == 302
    assert Project.objects.get(slug="no-flags").flags == []


def test_removing_a_non_member_on_the_page_is_a_404(project, personas):
    """Before: the members page with "Member removed."."""
    response = _browser(personas.admin).post(
        f"/p/{project.slug}/admin/members/{personas.outsider.pk}/remove/"
    )
    assert response.status_code == 404
    assert Membership.objects.filter(user=personas.outsider).count() == 1


def test_the_page_and_the_api_agree_on_who_may_create_projects(personas):
    """Staff, and admins of some project (access.can_create_project). Before: the page let
    project admins in, the API only staff."""
    staff = UserFactory(username="stella_staff", is_staff=True)
    people = {
        "labeler": personas.alice,
        "reviewer": personas.reviewer,
        "admin here": personas.admin,
        "admin elsewhere": personas.outsider,
        "staff": staff,
    }
    page, api = {}, {}
    for who, user in people.items():
        page[who] = _browser(user).get("/projects/new/").status_code
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {api_key(user)}")
        slug = who.replace(" ", "-")
        api[who] = client.post(
            "/api/v1/projects/", {"name": who, "slug": slug}, format="json"
        ).status_code
    assert page == {
        "labeler": 403,
        "reviewer": 403,
        "admin here": 200,
        "admin elsewhere": 200,
        "staff": 200,
    }
    assert {who: code == 200 for who, code in page.items()} == {
        who: code == 201 for who, code in api.items()
    }
    assert set(
        Project.objects.filter(slug__in=["staff", "admin-here"]).values_list("slug", flat=True)
    ) == {
        "staff",
        "admin-here",
    }
    assert Membership.objects.get(project__slug="staff", user=staff).role == Role.ADMIN


def test_an_admin_invites_over_the_api_and_the_link_sets_a_password_that_gets_a_token(
    project, personas, api
):
    url = f"/api/v1/projects/{project.pk}/invitations/"
    body = {"username": "nina", "email": "nina@example.org", "role": "reviewer"}
    assert api(personas.reviewer).post(url, body, format="json").status_code == 403
    invited = api(personas.admin).post(url, body, format="json")
    assert invited.status_code == 201, invited.content
    answer = invited.json()
    assert (answer["username"], answer["role"]) == ("nina", "reviewer")
    link = answer["invite_link"].replace("http://testserver", "")
    assert link.startswith("/accounts/reset/")
    browser = Client()
    set_form = browser.get(link, follow=True)
    done = browser.post(
        set_form.redirect_chain[-1][0],
        {"new_password1": "a-long-new-pass-42", "new_password2": "a-long-new-pass-42"},
    )
    assert done.status_code == 302
    token = APIClient().post(
        "/api/v1/auth/token/", {"username": "nina", "password": "a-long-new-pass-42"}, format="json"
    )
    assert token.status_code == 200
    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION=f"Token {token.json()['token']}")
    assert script.get(f"/api/v1/projects/{project.pk}/progress/").status_code == 200
    again = api(personas.admin).post(url, body, format="json")
    assert again.status_code == 400 and "already exists; add them instead" in again.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "has space", "role": "labeler"}, "username"),
        ({"username": "nina", "email": "not-an-address"}, "email"),
        ({"username": "nina", "role": "owner"}, "role"),
        ({"username": "nina", "password": "x"}, "password"),
    ],
)
def test_a_bad_invitation_is_a_400_on_its_field_and_creates_nobody(
    project, personas, api, body, field
):
    answer = api(personas.admin).post(
        f"/api/v1/projects/{project.pk}/invitations/", body, format="json"
    )
    assert answer.status_code == 400 and field in answer.json(), answer.json()
    assert not Membership.objects.filter(user__username__in=["nina", "has space"]).exists()


def test_an_admin_changes_settings_over_the_api_and_only_the_fields_sent_change(
    project, personas, api
):
    url = f"/api/v1/projects/{project.pk}/"
    before = api(personas.admin).get(url).json()
    changed = api(personas.admin).patch(
        url, {"k": 3, "overlap": 2, "flags": ["hallucination"], "test_percent": 25}, format="json"
    )
    assert changed.status_code == 200, changed.content
    after = changed.json()
    assert (after["k"], after["overlap"], after["flags"], after["test_percent"]) == (
        3, 2, ["hallucination"], 25,
    )  # fmt: skip
    unchanged = {"name", "guidelines", "demo_overlap", "lease_seconds", "valid_percent"}
    assert {f: after[f] for f in unchanged} == {f: before[f] for f in unchanged}
    project.refresh_from_db()
    assert (project.k, project.overlap, project.test_percent) == (3, 2, 25)
    assert api(personas.reviewer).patch(url, {"k": 5}, format="json").status_code == 403


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"k": 12}, '"k":'),
        ({"valid_percent": 60, "test_percent": 50}, "add up to more than 100"),
        ({"name": "Taken"}, "A project with this name already exists"),
        ({"flags": ["rude"]}, '"flags":'),
        ({"slug": "new-slug"}, '"slug":["This field is not accepted."]'),
        ({"guidelines": "a\x00b"}, "Null characters are not allowed"),
    ],
)
def test_bad_settings_are_a_400_that_names_them_and_change_nothing(
    project, personas, api, body, says
):
    from tests.factories import ProjectFactory

    ProjectFactory(name="Taken")
    before = Project.objects.filter(pk=project.pk).values().get()
    answer = api(personas.admin).patch(f"/api/v1/projects/{project.pk}/", body, format="json")
    assert answer.status_code == 400 and says in answer.content.decode(), answer.content
    assert Project.objects.filter(pk=project.pk).values().get() == before
