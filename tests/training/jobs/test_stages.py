"""A run's or round's settings are checked by the stage's own config class when it starts.

Before this, a typo in a round's PPO settings failed the PPO run after the reward model had
trained; a string where a number belongs failed in the worker. Now each is refused up front,
naming the key, and nothing is created or queued.
"""

from __future__ import annotations

import dataclasses

import pytest
from django.test import Client

from labeling.errors import Invalid
from tests.factories import ModelVersionFactory, submitted_demonstration
from training import rounds, runs, stages
from training.engine.config import (
    CriticFreeConfig,
    PPOConfig,
    RewardConfig,
    SampleConfig,
    SFTConfig,
)
from training.models import Round, RunKind, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def base(project, settings, tmp_path):
    settings.MODEL_ROOT = tmp_path / "models"
    settings.RUN_ROOT = tmp_path / "runs"
    (settings.MODEL_ROOT / "base").mkdir(parents=True)
    return ModelVersionFactory(project=project, name="base", kind="sft", path="base")


@pytest.fixture
def demo(project, personas, now):
    return submitted_demonstration(project, personas.alice, "An answer.", now)


def _start(project, personas, base, config, kind="sft"):
    return runs.run_start(
        project=project, kind=kind, config=config, created_by=personas.admin, base_model=base
    )


@pytest.mark.parametrize(
    ("config", "key", "why"),
    [
        ({"lrr": 1e-4}, "lrr", "unknown"),
        ({"lr": "fast"}, "lr", "must be a finite number"),
        ({"batch_size": 2.5}, "batch_size", "whole number"),
        ({"batch_size": True}, "batch_size", "whole number"),
        ({"max_steps": "10"}, "max_steps", "whole number"),
        ({"device": "tpu"}, "device", "device"),
        ({"checkpoint_every": -1}, "checkpoint_every", ">= 0"),
        ({"output_dir": "/etc"}, "output_dir", "set by the server"),
    ],
)
def test_a_bad_setting_is_refused_at_start_naming_its_key(
    project, personas, base, demo, config, key, why
):
    with pytest.raises(Invalid) as refused:
        _start(project, personas, base, config)
    assert key in refused.value.message and why in refused.value.message
    assert [d["key"] for d in refused.value.details] == [key]
    assert not TrainingRun.objects.exists()


def test_a_setting_the_class_refuses_in_combination_names_its_keys(project, personas, base):
    with pytest.raises(Invalid) as refused:
        stages.stage(RunKind.PPO).resolve({"batch_size": 12, "mini_batch_size": 8})
    assert {d["key"] for d in refused.value.details} == {"batch_size", "mini_batch_size"}


def test_the_run_stores_its_resolved_config_every_default_included(project, personas, base, demo):
    run = _start(project, personas, base, {"lr": 1e-3, "max_steps": 4})
    expected = {
        f.name: f.default for f in dataclasses.fields(SFTConfig) if f.name not in stages.SERVER_KEYS
    }
    assert run.config == {**expected, "lr": 1e-3, "max_steps": 4}
    assert SFTConfig.from_dict({**run.config, "model_path": "m", "output_dir": "o"}).lr == 1e-3


def test_every_stage_resolves_its_defaults_with_no_server_key_left():
    for kind, config_class in [
        (RunKind.SFT, SFTConfig), (RunKind.REWARD, RewardConfig),
        (RunKind.PPO, PPOConfig), (RunKind.SAMPLE, SampleConfig),
        (RunKind.CRITIC_FREE, CriticFreeConfig),
    ]:  # fmt: skip
        resolved = stages.stage(kind).resolve({})
        assert not stages.SERVER_KEYS & set(resolved)
        assert set(resolved) == {f.name for f in dataclasses.fields(config_class)} - (
            stages.SERVER_KEYS
        )


def test_a_critic_free_run_reads_the_reward_model_and_snapshots_prompts_like_ppo():
    critic_free, ppo = stages.stage(RunKind.CRITIC_FREE), stages.stage(RunKind.PPO)
    assert critic_free.needs_reward_model and critic_free.model_kind == "policy"
    assert (critic_free.snapshot, critic_free.options) == (ppo.snapshot, ppo.options)


def test_a_typo_in_a_rounds_ppo_settings_is_refused_before_the_reward_model_trains(
    project, personas, base, demo
):
    for config, key in [
        ({"ppo": {"kl_coeff": 0.1}}, "kl_coeff"),
        ({"reward": {"epochs": "three"}}, "epochs"),
        ({"sample": {"temperature": 0}}, "temperature"),
        ({"rank_sample": {"top_k": 5}}, "top_k"),
    ]:
        with pytest.raises(Invalid) as refused:
            rounds.round_start(
                project=project, policy=base, created_by=personas.admin, config=config
            )
        assert key in refused.value.message, config
    assert not Round.objects.exists() and not TrainingRun.objects.exists()


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_run_form_shows_a_refused_json_setting_on_the_form(project, personas, base, demo, now):
    url = f"/p/{project.slug}/runs/"
    response = _client(personas.admin).post(
        url, {"kind": "sft", "base_model": base.pk, "settings": '{"warmup": 10}'}
    )
    assert response.status_code == 400 and b"warmup" in response.content
    response = _client(personas.admin).post(
        url, {"kind": "sft", "base_model": base.pk, "lr": "0.001", "settings": '{"lr": 0.01}'}
    )
    assert response.status_code == 400 and b"lr is set twice" in response.content
    response = _client(personas.admin).post(
        url, {"kind": "sft", "base_model": base.pk, "settings": "[1, 2]"}
    )
    assert response.status_code == 400 and b"JSON object" in response.content
    assert not TrainingRun.objects.exists()
    # A run needs runs.MIN_RECORDS demonstrations, and a confirm below runs.ENOUGH_RECORDS.
    submitted_demonstration(project, personas.alice, "Another answer.", now)
    response = _client(personas.admin).post(
        url,
        {"kind": "sft", "base_model": base.pk, "settings": '{"warmup_steps": 10}', "confirm": "on"},
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    assert TrainingRun.objects.get().config["warmup_steps"] == 10


def test_the_round_form_refuses_a_typo_in_a_steps_settings(project, personas, base, demo):
    form = {"policy": base.pk, "max_prompts": 8, "min_eos_rate": 0.5, "max_kl": 8,
            "max_mean_length": 512}  # fmt: skip
    url = f"/p/{project.slug}/rounds/"
    response = _client(personas.admin).post(url, {**form, "settings": '{"ppo": {"kl_coeff": 1}}'})
    assert response.status_code == 400 and b"kl_coeff" in response.content
    response = _client(personas.admin).post(url, {**form, "settings": '{"sft": {}}'})
    assert response.status_code == 400 and b"Unknown step(s) sft" in response.content
    response = _client(personas.admin).post(url, {**form, "settings": '{"dpo": {"beta": 1}}'})
    assert response.status_code == 400 and b"instructgpt recipe has no dpo step" in response.content
    assert not Round.objects.exists()


@pytest.mark.parametrize(
    ("kind", "config", "key"),
    [
        ("sample", {"max_prompts": "all"}, "max_prompts"),
        ("sample", {"max_prompts": -1}, "max_prompts"),
        ("sample", {"create_tasks": "no"}, "create_tasks"),
        ("sample", {"split": "dev"}, "split"),
        ("ppo", {"max_prompts": True}, "max_prompts"),
        ("sft", {"lr": float("nan")}, "lr"),
        ("sft", {"lr": float("inf")}, "lr"),
        ("sft", {"lr": 10**400}, "lr"),
        ("ppo", {"gamma": 1.5}, "gamma"),
        ("ppo", {"cliprange": 0}, "cliprange"),
        ("critic_free", {"group_size": 1}, "group_size"),
        ("critic_free", {"estimator": "ppo"}, "estimator"),
        ("critic_free", {"max_prompts": 0}, "max_prompts"),
    ],
)
def test_data_options_and_numbers_out_of_range_are_refused_by_name(kind, config, key):
    with pytest.raises(Invalid) as refused:
        stages.stage(kind).resolve(config)
    assert key in refused.value.message
    assert [d["key"] for d in refused.value.details] == [key]


def test_a_rounds_ab_sampling_settings_are_checked_on_their_own_and_its_gate_too(
    project, personas, base, demo
):
    """The A/B answers' runs get "sample" alone; "rank_sample" must not hide a bad value there."""
    bad = [
        ({"sample": {"temperature": "hot"}, "rank_sample": {"temperature": 1.0}}, "temperature"),
        ({"gate": {"max_kl": "big"}}, "max_kl"),
        ({"gate": {"max_kl": float("nan")}}, "max_kl"),
        ({"gate": ["max_kl"]}, "gate takes"),
        ({"gate": {"max_length": 10}}, "gate takes"),
    ]
    for config, words in bad:
        with pytest.raises(Invalid, match=words):
            rounds.round_start(
                project=project, policy=base, created_by=personas.admin, config=config
            )
    assert not Round.objects.exists()
