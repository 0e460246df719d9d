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


@pytest.fixture
def reward_models(project):
    """Three reward models as their runs registered them: 57.5% of 40 held-out pairs, 62% of
    300, and one trained before the pairs were counted."""
    return [
        ModelVersionFactory(project=project, name="rm-small", kind="reward",
                            metrics={"val/pair_accuracy": 0.575, "val/pairs": 40, "val_rankings": 10}),
        ModelVersionFactory(project=project, name="rm-large", kind="reward",
                            metrics={"val/pair_accuracy": 0.62, "val/pairs": 300, "val_rankings": 50}),
        ModelVersionFactory(project=project, name="rm-old", kind="reward",
                            metrics={"val/pair_accuracy": 0.6, "val_rankings": 9}),
    ]  # fmt: skip


def test_reward_model_accuracy_comes_with_its_pairs_and_wilson_interval(project, reward_models):
    small, large, old = selectors.evaluation_dashboard(project=project).reward_models
    assert small.held_out is not None and (small.held_out.pairs, small.held_out.rankings) == (
        40,
        10,
    )
    # 23 of 40: Wilson [0.4220, 0.7149] holds 50%, and 40 < 194 pairs.
    assert (small.held_out.low, small.held_out.high) == (
        pytest.approx(0.42195, abs=1e-5),
        pytest.approx(0.71491, abs=1e-5),
    )
    assert not small.held_out.excludes_chance and not small.held_out.enough_pairs
    # 186 of 300: [0.5639, 0.6731], clear of 50% on enough pairs.
    assert large.held_out is not None and large.held_out.excludes_chance
    assert large.held_out.enough_pairs and large.held_out.low == pytest.approx(0.56388, abs=1e-5)
    assert (old.model, old.accuracy, old.held_out) == ("rm-old", 0.6, None)


def test_the_dashboard_shows_n_the_interval_and_when_n_is_too_small(
    project, personas, reward_models
):
    reviewer = Client()
    reviewer.force_login(personas.reviewer)
    html = reviewer.get(f"/p/{project.slug}/review/dashboard/").content.decode()
    section = html[html.index('id="reward-models"') :]
    assert "40 (10)" in section and "0.422 – 0.715" in section
    assert "Too few pairs to tell 60% from 50% (194 needed)" in section
    assert "Not told from chance" in section
    assert "300 (50)" in section and "0.564 – 0.673" in section
    assert "Trained before held-out pairs were counted" in section


def test_the_model_page_and_the_api_give_a_reward_models_interval(project, personas, reward_models):
    from rest_framework.test import APIClient

    from tests.factories import api_key

    reviewer = Client()
    reviewer.force_login(personas.reviewer)
    page = reviewer.get(f"/p/{project.slug}/models/{reward_models[0].pk}/").content.decode()
    assert "0.422 – 0.715, over 40 pairs from 10 held-out rankings" in page
    assert "Too few pairs to tell 60% from 50% (194 needed)" in page
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_key(personas.reviewer)}")
    listed = client.get(f"/api/v1/projects/{project.pk}/models/").json()["results"]
    by_name = {m["name"]: m["held_out_accuracy"] for m in listed}
    assert by_name["rm-small"] == {
        "accuracy": 0.575, "pairs": 40, "rankings": 10, "low": pytest.approx(0.42195, abs=1e-5),
        "high": pytest.approx(0.71491, abs=1e-5), "excludes_chance": False,
        "enough_pairs": False, "pairs_needed": 194,
    }  # fmt: skip
    assert by_name["rm-old"] is None


def test_the_dashboard_names_flags_as_labelers_read_them_and_links_each_model(
    project, personas, judged, now
):
    from tests.factories import submitted_ranking

    submitted_ranking(project, personas.alice, now, flags=["fails_to_follow"])
    client = Client()
    client.force_login(personas.reviewer)
    html = client.get(f"/p/{project.slug}/review/dashboard/").content.decode()
    assert "failstofollow" not in html and ">Fails to follow the instruction</th>" in html
    assert ">Inappropriate for a customer assistant</th>" in html
    sft, ppo = judged
    assert f'<a href="/p/{project.slug}/models/{ppo.pk}/">ppo-1</a>' in html
