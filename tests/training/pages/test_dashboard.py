"""Reviewer dashboard: win rates with intervals, ratings, metadata per model, RM accuracy."""

from __future__ import annotations

import pytest
from django.test import Client

from labeling import queue, services
from labeling.models import Split
from tests.factories import CompletionFactory, ModelVersionFactory, PromptFactory, member
from training import selectors

pytestmark = pytest.mark.django_db


@pytest.fixture
def judged(project, personas, now):
    """Three held-out prompts where ppo-1 beats sft-1 twice and ties once."""
    sft = ModelVersionFactory(project=project, name="sft-1", kind="sft")
    ppo = ModelVersionFactory(project=project, name="ppo-1", kind="policy")
    for _ in range(3):
        prompt = PromptFactory(project=project, split=Split.TEST)
        CompletionFactory(prompt=prompt, model_version=sft, text="short")
        CompletionFactory(prompt=prompt, model_version=ppo, text="a longer, better answer")
    services.evaluation_tasks_create(project=project, model_a=sft, model_b=ppo)
    verdicts = iter(["ppo", "ppo", "tie"])
    for _ in range(3):
        lease = queue.claim_next(
            user_id=personas.alice.pk, project=project, kind="comparison", now=now
        )
        verdict = next(verdicts)
        if verdict == "tie":
            winner = "tie"
        else:
            from labeling.models import Completion

            a_model = Completion.objects.get(pk=lease.shown_order[0]).model_version.name
            winner = "a" if a_model == "ppo-1" else "b"
        services.comparison_submit(
            lease_id=lease.pk, user_id=personas.alice.pk, winner=winner, now=now
        )
    return sft, ppo


def test_the_win_rate_counts_ties_half_against_the_oldest_model_by_default(project, judged):
    d = selectors.evaluation_dashboard(project=project)
    assert d.baseline == "sft-1" and d.comparisons == 3
    (w,) = d.win_rates
    assert (w.model, w.wins, w.ties, w.losses) == ("ppo-1", 2, 1, 0)
    assert w.rate == pytest.approx(2.5 / 3) and w.low <= w.rate <= w.high
    ratings = {r.model: r.rating for r in d.ratings}
    assert ratings["sft-1"] == pytest.approx(1000) and ratings["ppo-1"] > 1000


def test_reviewers_see_the_dashboard_and_labelers_do_not(project, personas, judged):
    reviewer = Client()
    reviewer.force_login(personas.reviewer)
    page = reviewer.get(f"/p/{project.slug}/review/dashboard/")
    html = page.content.decode()
    assert page.status_code == 200 and "ppo-1" in html and "0.833" in html
    labeler = Client()
    labeler.force_login(personas.alice)
    assert labeler.get(f"/p/{project.slug}/review/dashboard/").status_code == 403
    outsider = Client()
    outsider.force_login(member(personas.other_project, "eve"))
    assert outsider.get(f"/p/{project.slug}/review/dashboard/").status_code == 404


def test_an_empty_project_shows_the_dashboard_without_numbers(project, personas):
    reviewer = Client()
    reviewer.force_login(personas.reviewer)
    page = reviewer.get(f"/p/{project.slug}/review/dashboard/")
    assert page.status_code == 200 and b"No blind comparisons" in page.content
