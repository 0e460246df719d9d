"""Reviewer pages: paginated demonstrations and rankings with model names; htmx pages as rows."""

from __future__ import annotations

import pytest
from django.test import Client

from labeling import queue, services
from labeling.blinding import SLOTS
from labeling.models import Task
from tests.factories import demonstration_task, ranking_task

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _rank(project, user, now):
    task = ranking_task(project)
    lease = queue.claim_next(user_id=user.pk, project=project, kind=Task.Kind.RANKING, now=now)
    entries = [
        {"completion": slot, "rank": i + 1, "likert": 7 - i, "flags": []}
        for i, slot in enumerate(SLOTS[: len(lease.shown_order)])
    ]
    services.ranking_submit(lease_id=lease.pk, user_id=user.pk, entries=entries, now=now)
    return task


def test_reviewers_see_rankings_with_labeler_and_model_versions(project, personas, now):
    task = _rank(project, personas.alice, now)
    html = _client(personas.reviewer).get(f"/p/{project.slug}/review/rankings/").content.decode()
    assert "alice_labeler" in html
    for name in task.completions.values_list("model_version__name", flat=True):
        assert name in html


def test_review_pages_are_fragments_for_htmx_and_pages_without(project, personas, now):
    demonstration_task(project)
    lease = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind=Task.Kind.DEMONSTRATION, now=now
    )
    services.demonstration_submit(
        lease_id=lease.pk, user_id=personas.alice.pk, text="Shown to reviewers", now=now
    )
    client = _client(personas.reviewer)
    url = f"/p/{project.slug}/review/demonstrations/?page=1"
    fragment = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    page = client.get(url).content.decode()
    assert "Shown to reviewers" in fragment and "<html" not in fragment
    assert fragment.lstrip().startswith('<div id="rows">')
    assert "Shown to reviewers" in page and "<html" in page


def test_agreement_page_shows_counts_and_pairs(project, personas, now):
    _rank(project, personas.alice, now)
    html = _client(personas.admin).get(f"/p/{project.slug}/review/").content.decode()
    assert "alice_labeler" in html and "Pairwise agreement" in html


def test_review_rankings_query_count_does_not_grow_with_rows(
    project, personas, now, django_assert_max_num_queries
):
    for _ in range(3):
        _rank(project, personas.alice, now)
    client = _client(personas.reviewer)
    with django_assert_max_num_queries(8):
        assert client.get(f"/p/{project.slug}/review/rankings/").status_code == 200
