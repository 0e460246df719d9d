"""Over the API: a model's outputs, blind A/B tasks between two models, and the judgements."""

from __future__ import annotations

import pytest

from labeling.models import Split, Task
from tests.factories import CompletionFactory, ModelVersionFactory, PromptFactory, api_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_models(project):
    """sft and ppo each answered 3 test prompts; ppo answered one more; sft one train prompt."""
    sft = ModelVersionFactory(project=project, name="sft-1", kind="sft")
    ppo = ModelVersionFactory(project=project, name="ppo-1", kind="policy", parent=sft)
    tests = [PromptFactory(project=project, split=Split.TEST, text=f"Q{i}?") for i in range(4)]
    for prompt in tests[:3]:
        CompletionFactory(prompt=prompt, model_version=sft, text=f"sft says {prompt.text}")
        CompletionFactory(prompt=prompt, model_version=ppo, text=f"ppo says {prompt.text}")
    CompletionFactory(prompt=tests[3], model_version=ppo, text="only ppo")
    train = PromptFactory(project=project, split=Split.TRAIN, text="Train?")
    CompletionFactory(prompt=train, model_version=sft, text="sft on train")
    return sft, ppo


def test_an_admin_creates_ab_tasks_between_two_models_once_per_prompt(
    project, personas, two_models
):
    url = f"/api/v1/projects/{project.pk}/evaluation-tasks/"
    body = {"model_a": "ppo-1", "model_b": "sft-1"}
    assert api_client(personas.reviewer).post(url, body, format="json").status_code == 403
    made = api_client(personas.admin).post(url, body, format="json")
    # not the ppo-only prompt
    assert made.status_code == 201 and made.json() == {"created": 3, "skipped_identical": 0}
    tasks = Task.objects.filter(project=project, kind="comparison")
    assert tasks.count() == 3
    assert {t.completions.count() for t in tasks} == {2}
    again = api_client(personas.admin).post(url, body, format="json")
    assert again.json() == {"created": 0, "skipped_identical": 0}  # those that have one: skipped


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"model_a": "ppo-1", "model_b": "nope"}, "No model named 'nope'"),
        ({"model_a": "ppo-1", "model_b": "ppo-1"}, "two different model versions"),
        ({"model_a": "ppo-1", "model_b": "sft-1", "split": "holdout"}, '"split":['),
        ({"model_a": "ppo-1"}, '"model_b":["This field is required."]'),
        ({"model_a": "ppo-1", "model_b": "sft-1", "k": 3}, '"k":["This field is not accepted."]'),
    ],
)
def test_a_bad_ab_request_is_a_400_that_names_the_problem_and_creates_nothing(
    project, personas, two_models, body, says
):
    answer = api_client(personas.admin).post(
        f"/api/v1/projects/{project.pk}/evaluation-tasks/", body, format="json"
    )
    assert answer.status_code == 400 and says in answer.content.decode(), answer.content
    assert not Task.objects.filter(kind="comparison").exists()


def test_a_reviewer_reads_the_judgements_with_both_outputs_and_their_models(
    project, personas, two_models
):
    api_client(personas.admin).post(
        f"/api/v1/projects/{project.pk}/evaluation-tasks/",
        {"model_a": "ppo-1", "model_b": "sft-1"},
        format="json",
    )
    alice = api_client(personas.alice)
    for winner in ("a", "b", "tie"):
        offered = alice.post(
            f"/api/v1/projects/{project.pk}/next/", {"kind": "comparison"}, format="json"
        ).json()
        judged = alice.post(
            f"/api/v1/leases/{offered['lease_id']}/comparison/", {"winner": winner}, format="json"
        )
        assert judged.status_code == 201, judged.content
    url = f"/api/v1/projects/{project.pk}/comparisons/"
    assert alice.get(url).status_code == 403  # a labeler would learn which model said what
    page = api_client(personas.reviewer).get(url).json()
    assert page["count"] == 3
    for row in page["results"]:
        assert {row["a"]["model"], row["b"]["model"]} == {"ppo-1", "sft-1"}
        assert row["a"]["text"] == f"{row['a']['model'].split('-')[0]} says {row['prompt']}"
        assert row["labeler"] == "alice_labeler"
    assert [r["winner"] for r in page["results"]] == ["a", "b", "tie"]
    only = api_client(personas.reviewer).get(url, {"model": "nobody"}).json()
    assert only["count"] == 0


def test_a_reviewer_pages_through_a_models_outputs_by_split(project, personas, two_models):
    sft, _ = two_models
    url = f"/api/v1/projects/{project.pk}/models/{sft.pk}/completions/"
    assert api_client(personas.alice).get(url).status_code == 403
    reviewer = api_client(personas.reviewer)
    everything = reviewer.get(url).json()
    assert everything["count"] == 4
    test = reviewer.get(url, {"split": "test", "limit": 2}).json()
    assert test["count"] == 3 and len(test["results"]) == 2 and test["next"]
    assert {r["split"] for r in test["results"]} == {"test"}
    assert test["results"][0]["text"] == "sft says Q0?" and test["results"][0]["prompt"] == "Q0?"
    bad = reviewer.get(url, {"split": "holdout"})
    assert bad.status_code == 400 and "split must be one of" in bad.json()["detail"]
    foreign = ModelVersionFactory(project=personas.other_project)
    missing = reviewer.get(f"/api/v1/projects/{project.pk}/models/{foreign.pk}/completions/")
    assert missing.status_code == 404


def test_a_reviewer_reads_the_queue_newest_first_with_each_outputs_model(
    project, personas, two_models
):
    from tests.factories import demonstration_task, ranking_task

    demonstration_task(project)
    ranked = ranking_task(project)
    api_client(personas.admin).post(
        f"/api/v1/projects/{project.pk}/evaluation-tasks/",
        {"model_a": "ppo-1", "model_b": "sft-1"},
        format="json",
    )
    url = f"/api/v1/projects/{project.pk}/tasks/"
    assert api_client(personas.alice).get(url).status_code == 403
    reviewer = api_client(personas.reviewer)
    everything = reviewer.get(url).json()
    assert everything["count"] == 5
    ids = [t["id"] for t in everything["results"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    [ranking] = reviewer.get(url, {"kind": "ranking"}).json()["results"]
    assert ranking["id"] == ranked.pk and ranking["prompt"] == ranked.prompt.text
    outputs = ranked.task_completions.order_by("position").select_related("completion")
    assert [(o["completion"], o["position"], o["text"]) for o in ranking["completions"]] == [
        (tc.completion_id, tc.position, tc.completion.text) for tc in outputs
    ]
    ab = reviewer.get(url, {"kind": "comparison"}).json()["results"]
    assert len(ab) == 3 and all(
        {o["model"] for o in t["completions"]} == {"ppo-1", "sft-1"} for t in ab
    )
    bad = reviewer.get(url, {"kind": "rankings"})
    assert bad.status_code == 400 and "kind must be one of" in bad.json()["detail"]


def test_prompts_both_models_answered_alike_get_no_ab_task_and_the_answer_counts_them(
    project, personas, two_models
):
    sft, ppo = two_models
    same = PromptFactory(project=project, split=Split.TEST, text="Same?")
    CompletionFactory(prompt=same, model_version=sft, text="Yes.")
    CompletionFactory(prompt=same, model_version=ppo, text=" Yes.\n")
    made = api_client(personas.admin).post(
        f"/api/v1/projects/{project.pk}/evaluation-tasks/",
        {"model_a": "ppo-1", "model_b": "sft-1"},
        format="json",
    )
    assert made.json() == {"created": 3, "skipped_identical": 1}
    assert not Task.objects.filter(prompt=same).exists()
