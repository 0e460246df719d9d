"""Round recipes (InstructGPT, critic-free, iterated DPO) and the compute-matched SFT baseline a
round trains after its gate, with the blind A/B tasks against it."""

from __future__ import annotations

import pytest
from django.test import Client

from labeling import queue, services
from labeling.errors import Invalid
from labeling.models import Completion, Task
from tests.factories import (
    ModelVersionFactory,
    submitted_demonstration,
    submitted_ranking,
)
from tests.training.jobs.test_rounds import GOOD, _samples, _succeed
from tests.training.jobs.test_rounds import setup as setup  # noqa: F401 - the fixture
from training import rounds, selectors, stages
from training.models import Round, RoundStage, RoundStatus, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def demonstrations(project, personas, setup, now):  # noqa: F811 - the fixture above
    """Two demonstrations, and the SFT run that made the start policy (lr 1e-3, batch 4)."""
    for text in ("first answer", "second answer"):
        submitted_demonstration(project, personas.alice, text, now)
    base = ModelVersionFactory(project=project, name="base", kind="base", path="base")
    TrainingRun.objects.create(
        project=project, kind="sft", status="succeeded", base_model=base,
        config=stages.stage("sft").resolve({"lr": 1e-3, "batch_size": 4, "max_steps": 150}),
        model_version=setup["sft"], total_steps=150, step=150,
    )  # fmt: skip
    return setup


def _to_sampling(round_: Round, now, settings, *, metrics=GOOD) -> Round:
    if round_.reward_run is not None:
        _succeed(round_.reward_run, now, settings)
        round_.refresh_from_db()
    _succeed(round_.policy_run, now, settings, metrics=metrics)
    round_.refresh_from_db()
    return round_


def test_after_the_gate_the_start_policy_gets_sft_for_the_policy_steps_optimizer_steps(
    project, personas, demonstrations, settings, now
):
    """PPO: 64 episodes / 16 per step = 4 steps, each 2 epochs of 16 / 8 = 2 mini-batches: 16
    optimizer steps. The baseline continues SFT with the settings of the run that made the start
    policy (lr 1e-3, batch 4), for 16 steps, from the start policy."""
    ppo = {"total_episodes": 64, "batch_size": 16, "mini_batch_size": 8, "ppo_epochs": 2}
    round_ = rounds.round_start(
        project=project, policy=demonstrations["sft"], created_by=personas.admin,
        config={"ppo": ppo},
    )  # fmt: skip
    round_ = _to_sampling(round_, now, settings)
    baseline = round_.baseline_run
    assert baseline.kind == "sft" and baseline.base_model_id == demonstrations["sft"].pk
    assert (baseline.config["max_steps"], baseline.config["lr"], baseline.config["batch_size"]) == (
        16, 1e-3, 4
    )  # fmt: skip
    assert len(baseline.dataset["demonstrations"]) == 2

    for run in round_.runs("sample"):
        _succeed(run, now, settings, samples=_samples(run))
    round_.refresh_from_db()
    assert round_.status == RoundStatus.RUNNING, "the baseline has not trained yet"
    _succeed(baseline, now, settings)
    baseline.refresh_from_db()
    baseline_sample = round_.runs("sample").last()
    assert baseline_sample.base_model_id == baseline.model_version_id
    assert baseline_sample.config["k"] == 1
    assert baseline_sample.dataset["prompts"] == [p.pk for p in demonstrations["test"]]
    _succeed(baseline_sample, now, settings, samples=_samples(baseline_sample))

    round_.refresh_from_db()
    assert round_.status == RoundStatus.SUCCEEDED
    assert (round_.gate["comparison_tasks"], round_.gate["baseline_comparison_tasks"]) == (2, 2)
    pairs = {
        frozenset(t.completions.values_list("model_version_id", flat=True))
        for t in Task.objects.filter(kind="comparison")
    }
    assert pairs == {
        frozenset({round_.new_policy_id, demonstrations["sft"].pk}),
        frozenset({round_.new_policy_id, baseline.model_version_id}),
    }


def test_the_round_page_and_dashboard_show_win_rates_over_the_start_and_over_the_baseline(
    project, personas, demonstrations, settings, now
):
    round_ = rounds.round_start(
        project=project, policy=demonstrations["sft"], created_by=personas.admin,
        config={"ppo": {"total_episodes": 16, "batch_size": 16}},
    )  # fmt: skip
    round_ = _to_sampling(round_, now, settings)
    _succeed(round_.baseline_run, now, settings)
    for run in round_.runs("sample"):
        _succeed(run, now, settings, samples=_samples(run))
    round_.refresh_from_db()
    assert round_.status == RoundStatus.SUCCEEDED
    new, baseline = round_.new_policy, round_.baseline_run.model_version
    # The new policy wins every A/B against the start SFT and loses every one to the baseline.
    versions = dict(Completion.objects.values_list("pk", "model_version_id"))
    while lease := queue.claim_next(user_id=personas.alice.pk, project=project,
                                    kind="comparison", now=now):  # fmt: skip
        a, b = (versions[c] for c in lease.shown_order)
        against_start = demonstrations["sft"].pk in (a, b)
        winner = ("a" if a == new.pk else "b") if against_start else ("b" if a == new.pk else "a")
        services.comparison_submit(lease_id=lease.pk, user_id=personas.alice.pk, winner=winner,
                                   now=now)  # fmt: skip

    [result] = selectors.round_results(project=project)
    assert (result.over_start.n, result.over_start.rate) == (2, 1.0)
    assert (result.over_baseline.n, result.over_baseline.rate) == (2, 0.0)
    assert result.baseline_name == baseline.name
    client = Client()
    client.force_login(personas.reviewer)
    for url in (f"/p/{project.slug}/rounds/1/", f"/p/{project.slug}/review/dashboard/"):
        page = client.get(url).content.decode()
        assert "compute-matched SFT" in page and baseline.name in page, url
        assert "1.000" in page and "0.000" in page, url


def test_no_baseline_when_asked_for_none_or_when_there_are_no_demonstrations(
    project, personas, demonstrations, settings, now
):
    round_ = rounds.round_start(
        project=project, policy=demonstrations["sft"], created_by=personas.admin,
        config={"baseline": False},
    )  # fmt: skip
    round_ = _to_sampling(round_, now, settings)
    assert round_.baseline_run is None and "baseline" not in round_.gate

    with pytest.raises(Invalid, match="baseline settings must be an object"):
        rounds.round_start(project=project, policy=demonstrations["sft"],
                           created_by=personas.admin, config={"baseline": "yes"})  # fmt: skip
    with pytest.raises(Invalid, match="lr") as caught:
        rounds.round_start(project=project, policy=demonstrations["sft"],
                           created_by=personas.admin, config={"baseline": {"lr": -1}})  # fmt: skip
    assert caught.value.details[0]["step"] == "baseline"


def test_a_round_without_demonstrations_says_why_it_has_no_baseline(
    project,
    personas,
    setup,
    settings,
    now,  # noqa: F811 - the fixture
):
    round_ = rounds.round_start(project=project, policy=setup["sft"], created_by=personas.admin)
    round_ = _to_sampling(round_, now, settings)
    assert round_.baseline_run is None
    assert round_.gate["baseline"] == "none: no demonstrations to continue SFT on"


def test_iterated_dpo_trains_on_the_rankings_without_a_reward_model_and_gates_on_pair_accuracy(
    project, personas, demonstrations, settings, now
):
    round_ = rounds.round_start(
        project=project, policy=demonstrations["sft"], created_by=personas.admin,
        recipe="iterated_dpo", config={"dpo": {"beta": 0.2, "max_steps": 7}},
    )  # fmt: skip
    assert round_.stage == RoundStage.POLICY and round_.reward_run is None
    dpo = round_.policy_run
    assert (dpo.kind, dpo.reward_model, dpo.config["beta"]) == ("dpo", None, 0.2)
    assert dpo.dataset["rankings"], "every ranking so far"
    dpo.total_steps = 7
    dpo.save(update_fields=["total_steps"])
    round_ = _to_sampling(round_, now, settings, metrics={"val/pair_accuracy": 0.75})
    assert round_.stage == RoundStage.SAMPLE
    assert round_.gate["checks"] == {"pair_accuracy": {"value": 0.75, "above": 0.5, "ok": True}}
    assert round_.baseline_run.config["max_steps"] == 7  # one DPO step, one optimizer step


def test_a_dpo_policy_at_chance_on_held_out_pairs_does_not_pass_the_gate(
    project, personas, demonstrations, settings, now
):
    round_ = rounds.round_start(project=project, policy=demonstrations["sft"],
                                created_by=personas.admin, recipe="iterated_dpo")  # fmt: skip
    round_ = _to_sampling(round_, now, settings, metrics={"val/pair_accuracy": 0.5})
    assert round_.status == RoundStatus.FAILED and "pair_accuracy" in round_.error
    assert not round_.runs("sample").exists() and round_.baseline_run is None


@pytest.mark.parametrize(
    ("recipe", "config", "message"),
    [
        ("iterated_dpo", {"reward": {"lr": 1e-4}}, "iterated_dpo recipe has no reward step"),
        ("iterated_dpo", {"ppo": {}}, "iterated_dpo recipe has no ppo step"),
        ("instructgpt", {"dpo": {"beta": 0.1}}, "instructgpt recipe has no dpo step"),
        ("instructgpt", {"critic_free": {}}, "instructgpt recipe has no critic_free step"),
        ("sft_forever", {}, "Unknown recipe 'sft_forever'"),
    ],
)
def test_settings_for_a_step_the_recipe_lacks_are_refused_before_anything_runs(
    project,
    personas,
    setup,
    recipe,
    config,
    message,  # noqa: F811 - the fixture
):
    with pytest.raises(Invalid, match=message):
        rounds.round_start(project=project, policy=setup["sft"], created_by=personas.admin,
                           recipe=recipe, config=config)  # fmt: skip
    assert not Round.objects.exists() and not TrainingRun.objects.exists()


def test_the_round_form_sends_the_policy_fields_to_the_recipes_step(
    project, personas, demonstrations, now
):
    submitted_ranking(project, personas.bob, now)  # a second: the form refuses a round on one
    client = Client()
    client.force_login(personas.admin)
    form = {"policy": demonstrations["sft"].pk, "max_prompts": 8, "min_eos_rate": 0.5,
            "max_kl": 8, "max_mean_length": 512, "recipe": "iterated_dpo", "baseline": "on",
            "confirm": "on"}  # fmt: skip
    refused = client.post(f"/p/{project.slug}/rounds/", {**form, "kl_coef": 0.1})
    assert refused.status_code == 400 and not Round.objects.exists()
    assert "not a setting of the iterated_dpo recipe" in refused.content.decode()

    started = client.post(f"/p/{project.slug}/rounds/", {**form, "ppo_lr": 5e-6,
                                                          "min_pair_accuracy": 0.55})  # fmt: skip
    assert started.status_code == 302
    round_ = Round.objects.get()
    assert round_.recipe == "iterated_dpo" and round_.config["dpo"] == {"lr": 5e-6}
    assert round_.policy_run.config["lr"] == 5e-6 and "baseline" not in round_.config
    assert round_.config["gate"]["min_pair_accuracy"] == 0.55
    page = client.get(f"/p/{project.slug}/rounds/1/").content.decode()
    assert "Iterated DPO" in page and "DPO (from rankings" in page


def test_a_round_steps_page_lists_the_recipes_steps_to_come(project, personas, demonstrations):
    round_ = rounds.round_start(project=project, policy=demonstrations["sft"],
                                created_by=personas.admin)  # fmt: skip
    assert [(label, run is None) for label, run in selectors.round_steps(round_=round_)] == [
        ("Reward model", False), ("PPO", True)
    ]  # fmt: skip
    assert rounds.planned_steps("iterated_dpo") == ["DPO (from rankings, no reward model)"]


def test_optimizer_steps_of_each_policy_kind(project, setup):  # noqa: F811 - the fixture
    def run(kind: str, total_steps: int, **config) -> TrainingRun:
        return TrainingRun(kind=kind, total_steps=total_steps, config=config)

    assert rounds.optimizer_steps(run("ppo", 0, total_episodes=640, ppo_epochs=4, batch_size=64,
                                      mini_batch_size=16)) == 10 * 4 * 4  # fmt: skip
    assert rounds.optimizer_steps(run("critic_free", 0, total_episodes=80, update_epochs=2,
                                      batch_size=8, group_size=4, mini_batch_size=16)) == 10 * 2 * 2  # fmt: skip
    assert rounds.optimizer_steps(run("dpo", 12)) == 12


def test_a_policy_whose_held_out_score_fell_does_not_pass_the_gate(
    project,
    personas,
    setup,
    settings,
    now,  # noqa: F811 - the fixture
):
    round_ = rounds.round_start(project=project, policy=setup["sft"], created_by=personas.admin)
    fell = {**GOOD, "eval/score_start": 0.3, "eval/score": 0.1}
    round_ = _to_sampling(round_, now, settings, metrics=fell)
    assert round_.policy_run.config["eval_prompts"] == rounds.HELD_OUT_PROMPTS
    assert round_.status == RoundStatus.FAILED and "held_out_score_gain" in round_.error
    check = round_.gate["checks"]["held_out_score_gain"]
    assert check["value"] == pytest.approx(-0.2) and check["ok"] is False


@pytest.mark.parametrize(
    ("ppo", "metrics", "passed", "checked"),
    [
        ({}, {"eval/held_out_prompts": 0}, True, False),  # too few prompts to hold any out
        ({"eval_prompts": 0}, {}, True, False),  # asked for none
        ({}, {"eval/held_out_prompts": 8, "eval/score": 0.5}, False, True),  # no start: closed
    ],
)
def test_the_held_out_check_applies_when_prompts_were_held_out(
    project,
    personas,
    setup,
    settings,
    now,
    ppo,
    metrics,
    passed,
    checked,  # noqa: F811
):
    round_ = rounds.round_start(project=project, policy=setup["sft"], created_by=personas.admin,
                                config={"ppo": ppo} if ppo else {})  # fmt: skip
    base = {k: v for k, v in GOOD.items() if not k.startswith("eval/")}
    round_ = _to_sampling(round_, now, settings, metrics={**base, **metrics})
    assert round_.gate["passed"] is passed
    assert ("held_out_score_gain" in round_.gate["checks"]) is checked


def test_the_critic_free_recipe_runs_reward_model_then_critic_free_rl_with_the_ppo_gate(
    project, personas, demonstrations, settings, now
):
    round_ = rounds.round_start(
        project=project, policy=demonstrations["sft"], created_by=personas.admin,
        recipe="critic_free",
        config={"critic_free": {"estimator": "rloo", "total_episodes": 32, "batch_size": 4,
                                "group_size": 4, "mini_batch_size": 8, "update_epochs": 2}},
    )  # fmt: skip
    assert round_.reward_run is not None and round_.stage == RoundStage.REWARD
    round_ = _to_sampling(round_, now, settings)
    run = round_.policy_run
    assert (run.kind, run.reward_model_id) == ("critic_free", round_.reward_run.model_version_id)
    assert (run.config["estimator"], run.config["eval_prompts"]) == ("rloo", 32)
    assert round_.gate["passed"] and "held_out_score_gain" in round_.gate["checks"]
    # 8 steps x 2 epochs x (16 responses / 8 per mini-batch) = 32 optimizer steps
    assert round_.baseline_run.config["max_steps"] == 32
