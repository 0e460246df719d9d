"""Blind A/B evaluation: task creation from two models' outputs, random stored sides, submits."""

from __future__ import annotations

from collections import Counter

import pytest
from rest_framework.test import APIClient

from labeling import queue, services
from labeling.errors import Invalid
from labeling.models import Comparison, Split, Task
from tests.factories import (
    CompletionFactory,
    ModelVersionFactory,
    PromptFactory,
    api_key,
    member,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_models(project):
    sft = ModelVersionFactory(project=project, name="sft-1", kind="sft")
    ppo = ModelVersionFactory(project=project, name="ppo-1", kind="policy")
    return sft, ppo


def _outputs(project, models, n, split=Split.TEST):
    prompts = [PromptFactory(project=project, split=split) for _ in range(n)]
    for p in prompts:
        for m in models:
            CompletionFactory(prompt=p, model_version=m, text=f"{m.name} says hi to {p.pk}")
    return prompts


def test_one_task_per_test_prompt_both_models_answered_and_none_twice(project, two_models):
    _outputs(project, two_models, 3)
    _outputs(project, two_models[:1], 2)  # only one model answered: no task
    _outputs(project, two_models, 2, split=Split.TRAIN)  # not held out: no task
    assert (
        services.evaluation_tasks_create(
            project=project, model_a=two_models[0], model_b=two_models[1]
        )
        == 3
    )
    assert (
        services.evaluation_tasks_create(
            project=project, model_a=two_models[0], model_b=two_models[1]
        )
        == 0
    )
    assert Task.objects.filter(kind=Task.Kind.COMPARISON).count() == 3


def test_a_comparison_needs_two_different_models(project, two_models):
    prompt = PromptFactory(project=project)
    a = CompletionFactory(prompt=prompt, model_version=two_models[0])
    b = CompletionFactory(prompt=prompt, model_version=two_models[0])
    with pytest.raises(Invalid):
        services.comparison_task_create(project=project, prompt=prompt, first=a, second=b)


def test_sides_are_random_per_labeler_and_stored_with_the_judgement(project, two_models, now):
    project.overlap = 40
    project.save()
    (prompt,) = _outputs(project, two_models, 1)
    services.evaluation_tasks_create(project=project, model_a=two_models[0], model_b=two_models[1])
    a_models = Counter()
    for i in range(40):
        user = member(project, f"evaluator{i}")
        lease = queue.claim_next(user_id=user.pk, project=project, kind="comparison", now=now)
        comparison, created = services.comparison_submit(
            lease_id=lease.pk, user_id=user.pk, winner="a", now=now
        )
        assert created and comparison.a_completion_id == lease.shown_order[0]
        a_models[comparison.a_completion.model_version.name] += 1
    assert set(a_models) == {"sft-1", "ppo-1"}  # both models were shown as A to somebody


def test_a_repeat_submit_returns_the_first_judgement_and_a_bad_winner_is_rejected(
    project, personas, two_models, now
):
    _outputs(project, two_models, 1)
    services.evaluation_tasks_create(project=project, model_a=two_models[0], model_b=two_models[1])
    lease = queue.claim_next(user_id=personas.alice.pk, project=project, kind="comparison", now=now)
    with pytest.raises(Invalid):
        services.comparison_submit(
            lease_id=lease.pk, user_id=personas.alice.pk, winner="A", now=now
        )
    first, _ = services.comparison_submit(
        lease_id=lease.pk, user_id=personas.alice.pk, winner="tie", now=now
    )
    again, created = services.comparison_submit(
        lease_id=lease.pk, user_id=personas.alice.pk, winner="b", now=now
    )
    assert not created and again.pk == first.pk and Comparison.objects.get().winner == "tie"


def test_an_evaluator_never_learns_which_model_is_which_through_the_api(
    project, personas, two_models
):
    _outputs(project, two_models, 1)
    services.evaluation_tasks_create(project=project, model_a=two_models[0], model_b=two_models[1])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_key(personas.alice)}")
    task = client.post(
        f"/api/v1/projects/{project.pk}/next/", {"kind": "comparison"}, format="json"
    )
    assert task.status_code == 200
    body = task.content.decode()
    assert "sft-1" not in body.replace("sft-1 says", "") and "ppo-1" not in body.replace(
        "ppo-1 says", ""
    )
    assert "model" not in task.json()["completions"][0]
    # Sides by letter: a completion id would tell which side was sampled first (blinding.py).
    assert [c["id"] for c in task.json()["completions"]] == ["A", "B"]
    done = client.post(
        f"/api/v1/leases/{task.json()['lease_id']}/comparison/",
        {"winner": "both_bad"},
        format="json",
    )
    assert done.status_code == 201 and "model" not in done.content.decode()
    assert not any("completion" in key for key in done.json())
    assert Comparison.objects.get().winner == "both_bad"


def test_the_comparison_page_hides_models_and_works_without_javascript(
    project, personas, two_models
):
    from django.test import Client

    _outputs(project, two_models, 1)
    services.evaluation_tasks_create(project=project, model_a=two_models[0], model_b=two_models[1])
    client = Client()
    client.force_login(personas.alice)
    claimed = client.post(f"/p/{project.slug}/next/comparison/")
    assert claimed.status_code == 302
    page = client.get(claimed["Location"])
    html = page.content.decode()
    assert page.status_code == 200 and "Which output is better?" in html
    assert "sft-1 says" in html and "ppo-1 says" in html
    assert html.count("sft-1") == html.count(
        "sft-1 says"
    )  # the name appears only inside the text itself
    lease_id = int(claimed["Location"].rstrip("/").split("/")[-1])
    done = client.post(
        f"/leases/{lease_id}/comparison/", {"winner": "b", "notes": "", "time_spent_ms": 900}
    )
    assert done.status_code == 302
    comparison = Comparison.objects.get()
    assert comparison.winner == "b" and comparison.time_spent_ms == 900


def test_prompts_both_models_answered_with_the_same_text_get_no_task_and_are_counted(
    project, two_models
):
    sft, ppo = two_models
    same = PromptFactory(project=project, split=Split.TEST)
    CompletionFactory(prompt=same, model_version=sft, text="Paris.")
    CompletionFactory(prompt=same, model_version=ppo, text="Paris.\n")  # the same, give or take
    _outputs(project, two_models, 2)  # different texts: a task each
    made = services.evaluation_tasks_make(project=project, model_a=sft, model_b=ppo)
    assert made == services.EvaluationTasks(created=2, skipped_identical=1)
    assert not Task.objects.filter(kind=Task.Kind.COMPARISON, prompt=same).exists()
    # The int-answering entry point (training/ calls it) skips them too.
    other = PromptFactory(project=project, split=Split.TEST)
    CompletionFactory(prompt=other, model_version=sft, text="Same")
    CompletionFactory(prompt=other, model_version=ppo, text="Same")
    assert services.evaluation_tasks_create(project=project, model_a=sft, model_b=ppo) == 0
    assert Task.objects.filter(kind=Task.Kind.COMPARISON).count() == 2
