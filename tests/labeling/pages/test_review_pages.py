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


# Issue 18: what a reviewer reads, and narrowing the rankings list.


def _rank_with(project, user, now, *, flags=(), time_spent_ms=0, task=None):
    task = task or ranking_task(project)
    lease = queue.claim_next(user_id=user.pk, project=project, kind=Task.Kind.RANKING, now=now)
    entries = [
        {"completion": slot, "rank": i + 1, "likert": 7 - i, "flags": list(flags) if i == 0 else []}
        for i, slot in enumerate(SLOTS[: len(lease.shown_order)])
    ]
    ranking, _ = services.ranking_submit(lease_id=lease.pk, user_id=user.pk, entries=entries,
                                         time_spent_ms=time_spent_ms, now=now)  # fmt: skip
    return ranking


def test_pairwise_agreement_says_how_many_comparisons_each_pair_rests_on(project, personas, now):
    project.overlap = 2
    project.save(update_fields=["overlap"])
    task = ranking_task(project)
    for user in (personas.alice, personas.bob):
        _rank_with(project, user, now, task=task)
    html = _client(personas.reviewer).get(f"/p/{project.slug}/review/").content.decode()
    pairs = (project.k * (project.k - 1)) // 2  # both ordered every completion pair of the task
    assert f'<td>{pairs} <span class="muted">(too few to tell much)</span></td>' in html


def test_time_spent_reads_in_seconds_and_minutes_not_milliseconds(project, personas, now):
    _rank_with(project, personas.alice, now, time_spent_ms=83_000)
    html = _client(personas.reviewer).get(f"/p/{project.slug}/review/rankings/").content.decode()
    assert "1 min 23 s" in html and "83000" not in html and " ms" not in html


def test_the_rankings_list_filters_by_labeler_model_and_flag_and_pages_keep_them(
    project, personas, now
):
    mine = _rank_with(project, personas.alice, now, flags=["hallucination"])
    theirs = _rank_with(project, personas.bob, now)
    model = mine.entries.first().completion.model_version.name
    url = f"/p/{project.slug}/review/rankings/"
    client = _client(personas.reviewer)

    def shown(query):
        response = client.get(url + query)
        assert response.status_code == 200
        return {r.pk for r in response.context["page_obj"]}

    assert shown("") == {mine.pk, theirs.pk}
    assert shown("?labeler=bob_labeler") == {theirs.pk}
    assert shown("?flag=hallucination") == {mine.pk}
    assert shown(f"?model={model}") == {mine.pk}
    assert shown("?labeler=alice_labeler&flag=hallucination") == {mine.pk}
    assert shown("?labeler=nobody") == {mine.pk, theirs.pk}  # not offered: no filter
    html = client.get(url + "?flag=hallucination").content.decode()
    assert 'data-key-focus="f"' in html and "Hallucination (makes up information)" in html
    assert "Show all" in html


def test_the_rankings_pager_keeps_the_filters(project, personas, now):
    for _ in range(26):  # a page holds 25
        _rank_with(project, personas.alice, now)
    html = (
        _client(personas.reviewer)
        .get(f"/p/{project.slug}/review/rankings/?labeler=alice_labeler")
        .content.decode()
    )
    assert 'href="?labeler=alice_labeler&amp;page=2"' in html
