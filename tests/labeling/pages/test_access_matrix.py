"""Role × page × method: anonymous → login, outsider → 404, lower role → 403, allowed → 2xx/3xx."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

LABELER_PAGES = ["/p/{slug}/next/demonstration/"]
REVIEWER_PAGES = [
    "/p/{slug}/review/",
    "/p/{slug}/review/demonstrations/",
    "/p/{slug}/review/rankings/",
]
ADMIN_PAGES = [
    "/p/{slug}/admin/",
    "/p/{slug}/admin/guidelines/",
    "/p/{slug}/admin/members/",
    "/p/{slug}/admin/import/",
]
ADMIN_POSTS = [
    "/p/{slug}/admin/guidelines/",
    "/p/{slug}/admin/members/",
    "/p/{slug}/admin/members/invite/",
    "/p/{slug}/admin/members/{victim}/role/",
    "/p/{slug}/admin/members/{victim}/remove/",
    "/p/{slug}/admin/import/prompts/",
    "/p/{slug}/admin/import/rankings/",
]

# Expected status per persona for GET of each page group.
MATRIX = {
    "outsider": {"labeler": 404, "reviewer": 404, "admin": 404},
    "alice": {"labeler": 200, "reviewer": 403, "admin": 403},
    "reviewer": {"labeler": 200, "reviewer": 200, "admin": 403},
    "admin": {"labeler": 200, "reviewer": 200, "admin": 200},
}
GROUPS = {"labeler": LABELER_PAGES, "reviewer": REVIEWER_PAGES, "admin": ADMIN_PAGES}


def _urls(group, project, personas):
    return [u.format(slug=project.slug, victim=personas.bob.pk) for u in GROUPS[group]]


@pytest.mark.parametrize("group", GROUPS)
def test_anonymous_visitors_are_sent_to_log_in(project, personas, group):
    for url in _urls(group, project, personas):
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_anonymous_home_redirects_to_log_in():
    response = Client().get("/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/?next=/"


@pytest.mark.parametrize("persona", MATRIX)
@pytest.mark.parametrize("group", GROUPS)
def test_each_role_gets_exactly_the_pages_it_should(project, personas, persona, group):
    client = Client()
    client.force_login(getattr(personas, persona))
    for url in _urls(group, project, personas):
        assert client.get(url).status_code == MATRIX[persona][group], url


@pytest.mark.parametrize("persona", ["outsider", "alice", "reviewer"])
def test_admin_posts_are_refused_below_admin_and_change_nothing(project, personas, persona):
    from labeling.models import Membership

    before = list(Membership.objects.order_by("pk").values_list("user_id", "role"))
    client = Client()
    client.force_login(getattr(personas, persona))
    expected = 404 if persona == "outsider" else 403
    for url in ADMIN_POSTS:
        url = url.format(slug=project.slug, victim=personas.bob.pk)
        assert client.post(url, {"role": "admin", "username": "x"}).status_code == expected, url
    assert list(Membership.objects.order_by("pk").values_list("user_id", "role")) == before


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_unsupported_methods_are_405_not_2xx(project, personas, method):
    client = Client()
    client.force_login(personas.admin)
    for url in ["/", f"/p/{project.slug}/admin/", f"/p/{project.slug}/review/"]:
        assert getattr(client, method)(url).status_code == 405


def test_a_removed_reviewer_is_denied_on_the_next_request(project, personas):
    from labeling import services

    client = Client()
    client.force_login(personas.reviewer)
    assert client.get(f"/p/{project.slug}/review/").status_code == 200
    services.membership_remove(project=project, user_id=personas.reviewer.pk)
    assert client.get(f"/p/{project.slug}/review/").status_code == 404
