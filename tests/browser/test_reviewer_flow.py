"""A reviewer's day in real headless Chromium, by keyboard: r opens the rankings, f focuses the
filters and choosing a labeler narrows the list, w opens the dashboard where flags read as their
labels and model names link to their pages, and a page their role does not allow is our 403 page
with the way home (h)."""

from __future__ import annotations

import os

import pytest

from labeling import queue, services
from labeling.blinding import SLOTS
from labeling.models import Task
from tests.factories import ranking_task

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SCREENSHOTS = os.environ.get("INSTRUCTLOOP_SCREENSHOTS", "/tmp")


def _rank(project, user, now, flags):
    ranking_task(project)
    lease = queue.claim_next(user_id=user.pk, project=project, kind=Task.Kind.RANKING, now=now)
    entries = [{"completion": s, "rank": i + 1, "likert": 6 - i, "flags": flags if i else []}
               for i, s in enumerate(SLOTS[: len(lease.shown_order)])]  # fmt: skip
    ranking, _ = services.ranking_submit(lease_id=lease.pk, user_id=user.pk, entries=entries,
                                         time_spent_ms=95_000, now=now)  # fmt: skip
    return ranking


def test_a_reviewer_filters_rankings_reads_the_dashboard_and_finds_the_way_back_from_a_403(
    live_server, browser_page, project, personas, now, _close_server_connections
):
    page = browser_page
    _rank(project, personas.alice, now, ["hallucination"])
    bobs = _rank(project, personas.bob, now, [])
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", personas.reviewer.username)
    page.fill("#id_password", "pw-for-tests-123")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/")

    page.goto(f"{live_server.url}/p/{project.slug}/review/")
    page.keyboard.press("r")
    page.wait_for_url(f"{live_server.url}/p/{project.slug}/review/rankings/")
    assert page.locator("article.review-item").count() == 2
    assert page.locator("text=1 min 35 s").count() == 2  # not "95000 ms"
    page.keyboard.press("f")
    assert page.evaluate("document.activeElement.id") == "id_labeler"
    page.select_option("#id_labeler", "bob_labeler")  # submits on change
    page.wait_for_url("**/review/rankings/?labeler=bob_labeler**")
    assert page.locator("article.review-item").count() == 1
    assert page.locator(f"article.review-item >> text=#{bobs.pk} by").count() == 1
    page.screenshot(path=f"{SCREENSHOTS}/instructloop-rankings-filtered.png", full_page=True)

    page.keyboard.press("w")
    page.wait_for_url(f"{live_server.url}/p/{project.slug}/review/dashboard/**")
    header = page.locator("#metadata th", has_text="Hallucination (makes up information)")
    assert header.count() == 1
    model = page.locator("#metadata tbody td a").first
    name = model.inner_text()
    model.click()
    page.wait_for_url(f"{live_server.url}/p/{project.slug}/models/*/")
    assert name in page.locator("h1").inner_text()

    page.goto(f"{live_server.url}/p/{project.slug}/admin/")
    assert page.locator("#forbidden >> text=Not allowed").count() == 1
    page.keyboard.press("h")
    page.wait_for_url(f"{live_server.url}/")
