"""Naming a run's or a round's GPU queue (one per GPU type, INSTRUCTLOOP_GPU_QUEUES) over the API
and in the launch forms: a declared queue is kept on the row and its message goes to that queue
on the broker (read back from the broker itself, Redis or the filesystem one); any other name is
a 400 that lists the declared ones; the forms show a select only where there is a choice."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import (
    ModelVersionFactory,
    api_client,
    submitted_demonstration,
    submitted_ranking,
)
from tests.worker import messages_on, purge_queues
from training.dispatch import RUN_TASK
from training.models import Round, TrainingRun

pytestmark = pytest.mark.django_db

QUEUES = ["gpu", "gpu-big"]


@pytest.fixture
def queues(settings):
    """Two GPU types declared; the broker's GPU queues emptied of earlier tests' messages."""
    settings.TRAINING_GPU_QUEUES = QUEUES
    purge_queues(",".join(QUEUES))
    return QUEUES


@pytest.fixture
def base(project, personas, settings, tmp_path, now):
    """A base model, 2 demonstrations (SFT) and 2 rankings (reward model, rounds)."""
    settings.MODEL_ROOT = tmp_path / "models"
    (settings.MODEL_ROOT / "tiny-base").mkdir(parents=True)
    for n in range(2):
        submitted_demonstration(project, personas.alice, f"A good answer {n}.", now)
        submitted_ranking(project, personas.alice, now)
    return ModelVersionFactory(project=project, name="tiny-base", kind="base", path="tiny-base")


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_run_launched_over_the_api_on_a_declared_queue_is_sent_there(
    project, personas, base, queues, django_capture_on_commit_callbacks
):
    url = f"/api/v1/projects/{project.pk}/runs/"
    body = {"kind": "sft", "base_model": "tiny-base", "config": {"max_steps": 1}}
    with django_capture_on_commit_callbacks(execute=True):
        on_big = api_client(personas.admin).post(url, {**body, "queue": "gpu-big"}, format="json")
        default = api_client(personas.admin).post(url, body, format="json")
    assert on_big.status_code == default.status_code == 201, (on_big.content, default.content)
    assert (on_big.json()["queue"], default.json()["queue"]) == ("gpu-big", "")
    big, anywhere = (TrainingRun.objects.get(pk=r.json()["id"]) for r in (on_big, default))
    assert (big.queue, anywhere.queue) == ("gpu-big", "")
    assert messages_on("gpu-big") == [(RUN_TASK, [big.pk])]
    assert messages_on("gpu") == [(RUN_TASK, [anywhere.pk])], "naming none: the first queue"
    read = api_client(personas.reviewer).get(f"{url}{big.pk}/").json()["run"]
    assert (read["queue"], read["ran_on"]) == ("gpu-big", "")
    listed = {r["id"]: r["queue"] for r in api_client(personas.reviewer).get(url).json()["results"]}
    assert listed == {big.pk: "gpu-big", anywhere.pk: ""}


def test_an_unknown_queue_is_a_400_that_names_the_declared_ones_and_starts_nothing(
    project, personas, base, queues, django_capture_on_commit_callbacks
):
    admin = api_client(personas.admin)
    with django_capture_on_commit_callbacks(execute=True):
        run = admin.post(
            f"/api/v1/projects/{project.pk}/runs/",
            {"kind": "sft", "base_model": "tiny-base", "queue": "tpu"},
            format="json",
        )
        round_ = admin.post(
            f"/api/v1/projects/{project.pk}/rounds/",
            {"policy": "tiny-base", "queue": "tpu"},
            format="json",
        )
    for answer in (run, round_):
        assert answer.status_code == 400, answer.content
        assert answer.json()["detail"] == "No GPU queue 'tpu'; the queues are gpu, gpu-big."
        assert [e["key"] for e in answer.json()["errors"]] == ["queue"]
    assert not TrainingRun.objects.exists() and not Round.objects.exists()
    assert messages_on("gpu") == messages_on("gpu-big") == []


def test_a_single_declared_queue_takes_no_other_name_over_the_api(
    project, personas, base, settings
):
    settings.TRAINING_GPU_QUEUES = ["gpu"]
    answer = api_client(personas.admin).post(
        f"/api/v1/projects/{project.pk}/runs/",
        {"kind": "sft", "base_model": "tiny-base", "queue": "gpu-big"},
        format="json",
    )
    assert answer.status_code == 400
    assert answer.json()["detail"] == "No GPU queue 'gpu-big'; the queues are gpu."


def test_a_round_started_over_the_api_on_a_queue_sends_its_first_step_there(
    project, personas, base, queues, django_capture_on_commit_callbacks
):
    url = f"/api/v1/projects/{project.pk}/rounds/"
    body = {"policy": "tiny-base", "queue": "gpu-big", "config": {"reward": {"max_steps": 1}}}
    with django_capture_on_commit_callbacks(execute=True):
        started = api_client(personas.admin).post(url, body, format="json")
    assert started.status_code == 201, started.content
    assert started.json()["queue"] == "gpu-big"
    round_ = Round.objects.get()
    assert round_.queue == "gpu-big" and round_.reward_run.queue == "gpu-big"
    assert (
        messages_on("gpu-big") == [(RUN_TASK, [round_.reward_run.pk])] and messages_on("gpu") == []
    )
    detail = api_client(personas.reviewer).get(f"{url}1/").json()
    assert detail["round"]["queue"] == "gpu-big"
    assert detail["steps"][0]["run"]["queue"] == "gpu-big"


def test_the_launch_forms_show_no_queue_select_with_one_queue(project, personas, base, settings):
    settings.TRAINING_GPU_QUEUES = ["gpu"]
    for page in ("runs", "rounds"):
        html = _client(personas.admin).get(f"/p/{project.slug}/{page}/").content.decode()
        assert "Launch" in html or "Start" in html
        assert 'name="queue"' not in html, page


def test_the_run_form_offers_the_declared_queues_with_the_default_first_and_sends_there(
    project, personas, base, queues, django_capture_on_commit_callbacks
):
    url = f"/p/{project.slug}/runs/"
    form = _client(personas.admin).get(url).context["form"]
    assert form["queue"].value() in (None, "")  # the default is chosen unless changed
    assert list(form.fields["queue"].choices) == [("", "gpu (the default)"), ("gpu-big", "gpu-big")]
    html = _client(personas.admin).get(url).content.decode()
    assert '<select name="queue"' in html and '<option value="gpu-big">gpu-big</option>' in html
    fields = {"kind": "sft", "base_model": base.pk, "max_steps": 1, "confirm": "on"}
    with django_capture_on_commit_callbacks(execute=True):
        launched = _client(personas.admin).post(url, {**fields, "queue": "gpu-big"})
        default = _client(personas.admin).post(url, fields)
    assert launched.status_code == default.status_code == 302
    big, anywhere = TrainingRun.objects.order_by("pk")
    assert (big.queue, anywhere.queue) == ("gpu-big", "")
    assert messages_on("gpu-big") == [(RUN_TASK, [big.pk])]
    assert messages_on("gpu") == [(RUN_TASK, [anywhere.pk])]
    page = _client(personas.reviewer).get(f"{url}{big.pk}/").content.decode()
    assert '<span id="run-queue">GPU queue gpu-big</span>' in page

    refused = _client(personas.admin).post(url, {**fields, "queue": "tpu"})
    assert refused.status_code == 400 and refused.context["form"].errors["queue"]
    assert TrainingRun.objects.count() == 2


def test_the_round_form_sends_the_round_to_the_queue_chosen(
    project, personas, base, queues, django_capture_on_commit_callbacks
):
    url = f"/p/{project.slug}/rounds/"
    assert '<select name="queue"' in _client(personas.admin).get(url).content.decode()
    fields = {"policy": base.pk, "confirm": "on", "max_prompts": 8, "min_eos_rate": 0.5,
              "max_kl": 8, "max_mean_length": 512, "reward_steps": 1}  # fmt: skip
    refused = _client(personas.admin).post(url, {**fields, "queue": "tpu"})
    assert refused.status_code == 400 and refused.context["form"].errors["queue"]
    with django_capture_on_commit_callbacks(execute=True):
        started = _client(personas.admin).post(url, {**fields, "queue": "gpu-big"})
    assert started.status_code == 302
    round_ = Round.objects.get()
    assert round_.queue == round_.reward_run.queue == "gpu-big"
    assert (
        messages_on("gpu-big") == [(RUN_TASK, [round_.reward_run.pk])] and messages_on("gpu") == []
    )
    page = _client(personas.reviewer).get(f"{url}1/").content.decode()
    assert '<span id="round-queue">GPU queue gpu-big</span>' in page
