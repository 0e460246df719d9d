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
