"""List endpoints cap `?limit=` at settings.API_MAX_PAGE_SIZE: one request cannot make the server
serialise a whole table."""

from __future__ import annotations

import pytest
from django.conf import settings as project_settings

from labeling import queue, services
from tests.factories import demonstration_task

pytestmark = pytest.mark.django_db


def test_the_ceiling_is_a_thousand_rows():
    assert project_settings.API_MAX_PAGE_SIZE == 1000


def test_a_limit_of_100000_gets_at_most_the_ceiling_and_a_next_link(
    settings, project, personas, client_for, now
):
    settings.API_MAX_PAGE_SIZE = 3
    for _ in range(5):
        demonstration_task(project)
        lease = queue.claim_next(
            user_id=personas.alice.pk, project=project, kind="demonstration", now=now
        )
        services.demonstration_submit(
            lease_id=lease.pk, user_id=personas.alice.pk, text="x", now=now
        )
    url = f"/api/v1/projects/{project.pk}/demonstrations/"
    page = client_for(personas.reviewer).get(url, {"limit": 100_000}).json()
    assert page["count"] == 5 and len(page["results"]) == 3
    assert "limit=3" in page["next"]
    assert len(client_for(personas.reviewer).get(url, {"limit": 2}).json()["results"]) == 2


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ({"limit": "ten"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "-5"}, "limit"),
        ({"offset": "null"}, "offset"),
        ({"offset": "-1"}, "offset"),
        ({"offset": "2.5"}, "offset"),
    ],
)
def test_a_malformed_limit_or_offset_is_a_400_naming_it(project, personas, client_for, query, name):
    """Before: DRF answered the default page, or the first page, as if nothing were wrong."""
    response = client_for(personas.reviewer).get(
        f"/api/v1/projects/{project.pk}/demonstrations/", query
    )
    assert response.status_code == 400
    assert list(response.json()) == [name], response.json()


def test_a_zero_offset_and_a_limit_of_one_are_fine(project, personas, client_for):
    response = client_for(personas.reviewer).get(
        f"/api/v1/projects/{project.pk}/demonstrations/", {"limit": "1", "offset": "0"}
    )
    assert response.status_code == 200 and response.json()["count"] == 0
