"""Round screens: start a round (admin), follow its stages, read a model version's lineage."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import ModelVersionFactory, api_client, submitted_ranking
from training import loop, rounds, stages, storage
from training.engine.config import RewardConfig
from training.models import Round

pytestmark = pytest.mark.django_db


@pytest.fixture
def sft(project, personas, settings, tmp_path, now):
    settings.MODEL_ROOT = tmp_path / "models"
    (settings.MODEL_ROOT / "sft").mkdir(parents=True)
    for _ in range(2):  # the fewest a launch form takes (it asks to confirm fewer than 32)
        submitted_ranking(project, personas.alice, now)
    return ModelVersionFactory(project=project, name="sft-0", kind="sft", path="sft")


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_an_admin_starts_a_round_and_sees_its_first_stage(project, personas, sft):
    response = _client(personas.admin).post(
        f"/p/{project.slug}/rounds/",
        {
            "policy": sft.pk,
            "confirm": "on",
            "max_prompts": 8,
            "min_eos_rate": 0.6,
            "max_kl": 10,
            "max_mean_length": 64,
            "min_reward_gain": 0.05,
            "reward_steps": 5,
            "sample_temperature": 0.7,
            "rank_temperature": 1.0,
        },
    )
    round_ = Round.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/p/{project.slug}/rounds/1/"
    assert round_.config["gate"] == {
        "min_eos_rate": 0.6, "max_kl": 10.0, "max_mean_length": 64.0, "min_reward_gain": 0.05,
        "min_held_out_gain": 0.0, "min_pair_accuracy": 0.5,
    }  # fmt: skip
    # The reward step's run stores its resolved config: what was asked, and every default.
    assert round_.reward_run.config == {**stages.stage("reward").resolve({}), "max_steps": 5}
    assert round_.config["sample"] == {"temperature": 0.7}
    assert round_.config["rank_sample"] == {"temperature": 1.0}
    page = _client(personas.reviewer).get(f"/p/{project.slug}/rounds/1/")
    assert (
        page.status_code == 200
        and b"Reward model" in page.content
        and b'hx-trigger="every 3s"' in page.content
    )
    fragment = _client(personas.reviewer).get(
        f"/p/{project.slug}/rounds/1/", headers={"HX-Request": "true"}
    )
    assert b"<html" not in fragment.content


def test_rounds_are_for_reviewers_to_read_and_admins_to_start(project, personas, sft):
    assert _client(personas.alice).get(f"/p/{project.slug}/rounds/").status_code == 403
    assert _client(personas.outsider).get(f"/p/{project.slug}/rounds/").status_code == 404
    assert (
        _client(personas.reviewer)
        .post(f"/p/{project.slug}/rounds/", {"policy": sft.pk})
        .status_code
        == 403
    )
    assert not Round.objects.exists()


def test_lineage_shows_the_run_config_and_exact_rows_a_model_was_trained_on(project, personas, sft):
    _client(personas.admin).post(
        f"/p/{project.slug}/rounds/",
        {
            "policy": sft.pk,
            "confirm": "on",
            "max_prompts": 8,
            "min_eos_rate": 0.5,
            "max_kl": 25,
            "max_mean_length": 512,
        },
    )
    run = Round.objects.get().reward_run
    rm = ModelVersionFactory(project=project, name="rm-1", kind="reward", path="", parent=sft)
    run.model_version = rm
    run.save(update_fields=["model_version"])
    page = _client(personas.reviewer).get(f"/p/{project.slug}/models/{rm.pk}/")
    html = page.content.decode()
    assert page.status_code == 200 and f"run {run.pk}" in html
    ids = ", ".join(map(str, run.dataset["rankings"]))
    assert f"rankings: 2 rows, ids {ids}" in html and "sft-0" in html
    # The config it ran with, defaults included: the learning rate nobody typed is there.
    assert f"<td><code>lr</code></td><td><code>{RewardConfig.lr}</code></td>" in html


def test_an_admin_cancels_a_running_round_from_its_page(project, personas, sft):
    form = {"policy": sft.pk, "confirm": "on", "max_prompts": 8, "min_eos_rate": 0.5, "max_kl": 8,
            "max_mean_length": 512}  # fmt: skip
    _client(personas.admin).post(f"/p/{project.slug}/rounds/", form)
    page = _client(personas.admin).get(f"/p/{project.slug}/rounds/1/")
    assert b"Cancel round" in page.content
    assert _client(personas.reviewer).post(f"/p/{project.slug}/rounds/1/cancel/").status_code == 403
    assert _client(personas.outsider).post(f"/p/{project.slug}/rounds/1/cancel/").status_code == 404
    response = _client(personas.admin).post(f"/p/{project.slug}/rounds/1/cancel/")
    assert response.status_code == 302 and response["Location"] == f"/p/{project.slug}/rounds/1/"
    assert Round.objects.get().status == "cancelled"
    page = _client(personas.admin).get(f"/p/{project.slug}/rounds/1/")
    assert b"Cancel round" not in page.content and b"Cancelled by an admin." in page.content


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"k": 1}, "k"), ({"k": 10}, "k"), ({"rank_temperature": 0}, "rank_temperature"),
     ({"sample_temperature": 0}, "sample_temperature")],
)  # fmt: skip
def test_the_round_form_refuses_a_k_outside_2_to_9_and_a_temperature_of_0(
    project, personas, sft, fields, field
):
    form = {"policy": sft.pk, "confirm": "on", "max_prompts": 8, "min_eos_rate": 0.5, "max_kl": 8,
            "max_mean_length": 512}  # fmt: skip
    response = _client(personas.admin).post(f"/p/{project.slug}/rounds/", {**form, **fields})
    assert response.status_code == 400 and response.context["form"].errors[field]
    assert not Round.objects.exists()


def test_a_rounds_k_from_the_form_splits_between_the_policies(project, personas, sft):
    form = {"policy": sft.pk, "confirm": "on", "max_prompts": 8, "min_eos_rate": 0.5, "max_kl": 8,
            "max_mean_length": 512, "k": 6, "rank_temperature": 0.9}  # fmt: skip
    assert _client(personas.admin).post(f"/p/{project.slug}/rounds/", form).status_code == 302
    round_ = Round.objects.get()
    assert round_.config["k"] == 6 and round_.config["rank_sample"] == {"temperature": 0.9}


def test_the_round_forms_step_settings_land_in_the_round_and_its_runs_configs(
    project, personas, sft, settings, tmp_path, now
):
    form = {"policy": sft.pk, "confirm": "on", "max_prompts": 8, "min_eos_rate": 0.5, "max_kl": 8,
            "max_mean_length": 512, "reward_lr": 3e-4, "reward_epochs": 3, "ppo_lr": 2e-5,
            "ppo_batch_size": 8, "ppo_episodes": 256, "kl_coef": 0.05, "ptx_coef": 0.5,
            "eval_prompts": 32}  # fmt: skip
    assert _client(personas.admin).post(f"/p/{project.slug}/rounds/", form).status_code == 302
    round_ = Round.objects.get()
    assert round_.config["reward"] == {"lr": 3e-4, "epochs": 3}
    assert round_.config["ppo"] == {"lr": 2e-5, "batch_size": 8, "mini_batch_size": 8,
                                    "total_episodes": 256, "kl_coef": 0.05, "ptx_coef": 0.5}  # fmt: skip
    assert round_.config["eval_prompts"] == 32
    reward_defaults = stages.stage("reward").resolve({})
    assert round_.reward_run.config == {**reward_defaults, "lr": 3e-4, "epochs": 3}
    settings.RUN_ROOT = tmp_path / "runs"  # the reward step succeeds: PPO starts with its config
    loop.run_claim(run_id=round_.reward_run.pk, worker="w", now=now)
    model_dir = storage.run_dir(round_.reward_run) / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "model.safetensors").write_bytes(b"weights")
    result = {"output_dir": str(model_dir.parent)}
    loop.run_succeed(run_id=round_.reward_run.pk, worker="w", result=result, now=now)
    round_.refresh_from_db()
    assert round_.policy_run.config == {
        **stages.stage("ppo").resolve({}), "eval_prompts": rounds.HELD_OUT_PROMPTS,
        **round_.config["ppo"],
    }  # fmt: skip


def test_blank_step_fields_leave_the_stage_defaults(project, personas, sft):
    form = {"policy": sft.pk, "confirm": "on", "max_prompts": 8, "min_eos_rate": 0.5, "max_kl": 8,
            "max_mean_length": 512, "reward_lr": "", "ppo_lr": "", "eval_prompts": ""}  # fmt: skip
    assert _client(personas.admin).post(f"/p/{project.slug}/rounds/", form).status_code == 302
    round_ = Round.objects.get()
    assert "reward" not in round_.config and "ppo" not in round_.config
    assert "eval_prompts" not in round_.config
    assert round_.reward_run.config == stages.stage("reward").resolve({})


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"reward_lr": -1e-4}, "reward_lr"), ({"reward_epochs": 0}, "reward_epochs"),
     ({"ppo_lr": -1}, "ppo_lr"), ({"ppo_batch_size": 0}, "ppo_batch_size"),
     ({"ppo_episodes": 4, "ppo_batch_size": 8}, "ppo_episodes"), ({"ptx_coef": -0.5}, "ptx_coef"),
     ({"eval_prompts": 0}, "eval_prompts"), ({"min_reward_gain": -0.1}, "min_reward_gain")],
)  # fmt: skip
def test_a_bad_step_setting_shows_on_its_field_and_starts_nothing(
    project, personas, sft, fields, field
):
    form = {"policy": sft.pk, "confirm": "on", "max_prompts": 8, "min_eos_rate": 0.5, "max_kl": 8,
            "max_mean_length": 512}  # fmt: skip
    response = _client(personas.admin).post(f"/p/{project.slug}/rounds/", {**form, **fields})
    assert response.status_code == 400 and response.context["form"].errors[field]
    assert not Round.objects.exists()


def test_a_script_starts_a_round_reads_its_steps_and_cancels_it_over_theapi_client(
    project, personas, sft, django_capture_on_commit_callbacks
):
    url = f"/api/v1/projects/{project.pk}/rounds/"
    body = {"policy": "sft-0", "recipe": "instructgpt",
            "config": {"reward": {"max_steps": 5}, "gate": {"max_kl": 9}, "max_prompts": 8}}  # fmt: skip
    assert api_client(personas.reviewer).post(url, body, format="json").status_code == 403
    with django_capture_on_commit_callbacks():
        started = api_client(personas.admin).post(url, body, format="json")
    assert started.status_code == 201, started.content
    assert started.json()["number"] == 1 and started.json()["policy"] == "sft-0"
    round_ = Round.objects.get()
    assert round_.reward_run.config["max_steps"] == 5 and round_.config["gate"]["max_kl"] == 9
    again = api_client(personas.admin).post(url, body, format="json")
    assert again.status_code == 409  # one running round per project
    detail = api_client(personas.reviewer).get(f"{url}1/").json()
    assert detail["round"]["status"] == "running" and detail["results"] is None
    assert detail["steps"][0]["run"]["kind"] == "reward"
    assert [s["run"] for s in detail["steps"][1:]] == [None] * (len(detail["steps"]) - 1)
    assert [r["number"] for r in api_client(personas.reviewer).get(url).json()["results"]] == [1]
    cancelled = api_client(personas.admin).post(f"{url}1/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert api_client(personas.admin).post(f"{url}1/cancel/").status_code == 409


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"policy": "no-such-model"}, "No model named"),
        ({"policy": "sft-0", "recipe": "magic"}, "recipe"),
        ({"policy": "sft-0", "config": {"nonsense": 1}}, "Unknown round settings"),
        ({"policy": "sft-0", "config": {"k": 12}}, "k"),
        ({"policy": "sft-0", "extra": 1}, "extra"),
    ],
)
def test_a_bad_round_request_is_a_400_that_names_the_problem_and_starts_nothing(
    project, personas, sft, body, words
):
    response = api_client(personas.admin).post(
        f"/api/v1/projects/{project.pk}/rounds/", body, format="json"
    )
    assert response.status_code == 400 and words in response.content.decode(), response.content
    assert not Round.objects.exists()


def test_the_api_answers_a_models_lineage_with_its_run_config_and_exact_rows(
    project, personas, sft
):
    started = api_client(personas.admin).post(
        f"/api/v1/projects/{project.pk}/rounds/", {"policy": "sft-0"}, format="json"
    )
    assert started.status_code == 201
    run = Round.objects.get().reward_run
    rm = ModelVersionFactory(project=project, name="rm-1", kind="reward", path="", parent=sft)
    run.model_version = rm
    run.save(update_fields=["model_version"])
    url = f"/api/v1/projects/{project.pk}/models/{rm.pk}/"
    body = api_client(personas.reviewer).get(url).json()
    assert body["model"]["name"] == "rm-1" and body["parent"] == "sft-0"
    assert body["run"]["id"] == run.pk and body["run"]["config"]["lr"] == RewardConfig.lr
    assert body["dataset"] == run.dataset and len(body["dataset"]["rankings"]) == 2
    base = api_client(personas.reviewer).get(f"/api/v1/projects/{project.pk}/models/{sft.pk}/")
    assert base.json()["run"] is None and base.json()["children"] == ["rm-1"]
    assert api_client(personas.alice).get(url).status_code == 403
    foreign = ModelVersionFactory(project=personas.other_project)
    assert (
        api_client(personas.reviewer)
        .get(f"/api/v1/projects/{project.pk}/models/{foreign.pk}/")
        .status_code
        == 404
    )


# Issue 18: the round form explains itself and refuses what cannot work.


def _rank_one(project, personas, now):
    submitted_ranking(project, personas.bob, now)


def test_a_round_on_one_ranking_is_refused_and_on_a_few_asks_to_confirm(
    project, personas, settings, tmp_path, now
):
    settings.MODEL_ROOT = tmp_path / "models"
    (settings.MODEL_ROOT / "sft").mkdir(parents=True)
    sft = ModelVersionFactory(project=project, name="sft-0", kind="sft", path="sft")
    _rank_one(project, personas, now)
    form = {"policy": sft.pk, "max_prompts": 8, "min_eos_rate": 0.5, "max_kl": 8,
            "max_mean_length": 512}  # fmt: skip
    refused = _client(personas.admin).post(f"/p/{project.slug}/rounds/", {**form, "confirm": "on"})
    assert refused.status_code == 400 and "Only 1 ranking so far" in refused.content.decode()
    _rank_one(project, personas, now)
    warned = _client(personas.admin).post(f"/p/{project.slug}/rounds/", form)
    assert warned.status_code == 400 and "Only 2 rankings so far" in warned.content.decode()
    assert not Round.objects.exists()
    confirmed = _client(personas.admin).post(
        f"/p/{project.slug}/rounds/", {**form, "confirm": "on"}
    )
    assert confirmed.status_code == 302 and Round.objects.count() == 1


def test_the_round_form_offers_no_model_without_weights_and_shows_its_defaults(
    project, personas, sft
):
    canned = ModelVersionFactory(project=project, name="demo-canned", kind="external", path="")
    page = _client(personas.admin).get(f"/p/{project.slug}/rounds/")
    form = page.context["form"]
    assert canned not in form.fields["policy"].queryset and form["policy"].value() == sft.pk
    html = page.content.decode()
    assert "demo-canned" not in html
    assert f"Blank: reward model {RewardConfig.lr:g}." in html
    assert 'class="launch-form"' in html
