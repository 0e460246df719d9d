"""Rounds: reward model → PPO → gate → mixed samples and blind A/B tasks; a failed stage stops it."""

from __future__ import annotations

import pytest
from django.test import Client

from labeling.errors import Conflict, Invalid
from labeling.models import Prompt, Split, Task
from tests.factories import (
    ModelVersionFactory,
    PromptFactory,
    submitted_demonstration,
    submitted_ranking,
)
from tests.worker import messages_on, purge_queues
from training import loop, rounds, storage
from training.dispatch import RUN_TASK
from training.models import Round, RoundStage, RoundStatus, RunMetric, RunStatus, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(project, personas, settings, tmp_path, now):
    settings.MODEL_ROOT = tmp_path / "models"
    settings.RUN_ROOT = tmp_path / "runs"
    (settings.MODEL_ROOT / "sft").mkdir(parents=True)
    sft = ModelVersionFactory(project=project, name="sft-0", kind="sft", path="sft")
    task = submitted_ranking(project, personas.alice, now, likert=5).task
    train = [PromptFactory(project=project, split=Split.TRAIN) for _ in range(3)]
    test = [PromptFactory(project=project, split=Split.TEST) for _ in range(2)]
    return {"sft": sft, "task": task, "train": train, "test": test}


def _succeed(run: TrainingRun, now, settings, *, metrics=None, samples=None):
    loop.run_claim(run_id=run.pk, worker="w", now=now)
    for name, values in (metrics or {}).items():
        for step, value in enumerate(values if isinstance(values, list) else [values], 1):
            RunMetric.objects.create(run=run, step=step, name=name, value=value)
    if samples is not None:
        result = {"output_dir": "x", "samples": samples}
    else:
        model_dir = storage.run_dir(run) / "model"
        model_dir.mkdir(parents=True)
        (model_dir / "model.safetensors").write_bytes(b"weights")
        result = {"output_dir": str(model_dir.parent)}
    loop.run_succeed(run_id=run.pk, worker="w", result=result, now=now)


def _samples(run: TrainingRun):
    return [
        {"prompt_id": pid, "sample_index": j, "completion": f"run {run.pk} answer {j} to {pid}",
         "provenance": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 32, "seed": j, "finished_with_eos": True}}
        for pid in run.dataset["prompts"] for j in range(run.config["k"])
    ]  # fmt: skip


GOOD = {
    "response/eos_rate": 0.9, "kl/k1": 2.0, "response/length": 20.0,
    "reward/score": [-0.3, -0.2, 0.1, 0.2],
    "eval/held_out_prompts": 8, "eval/score_start": -0.4, "eval/score": -0.1,
}  # fmt: skip


def test_a_round_runs_reward_then_ppo_then_mixed_sampling_and_ab_tasks(
    project, personas, setup, settings, now
):
    round_ = rounds.round_start(project=project, policy=setup["sft"], created_by=personas.admin)
    assert round_.stage == RoundStage.REWARD and round_.reward_run.kind == "reward"
    _succeed(round_.reward_run, now, settings)
    round_.refresh_from_db()
    assert round_.stage == RoundStage.POLICY
    assert round_.policy_run.reward_model == round_.reward_run.model_version
    assert round_.policy_run.base_model_id == setup["sft"].pk
    _succeed(round_.policy_run, now, settings, metrics=GOOD)
    round_.refresh_from_db()
    assert round_.stage == RoundStage.SAMPLE and round_.gate["passed"]
    sample_runs = list(round_.runs("sample"))
    assert [(r.base_model_id, r.config["k"]) for r in sample_runs] == [
        (round_.new_policy_id, 2), (setup["sft"].pk, 2), (round_.new_policy_id, 1), (setup["sft"].pk, 1)
    ]  # fmt: skip
    for run in sample_runs:
        _succeed(run, now, settings, samples=_samples(run))
        assert round_.__class__.objects.get(pk=round_.pk).status == (
            RoundStatus.SUCCEEDED if run == sample_runs[-1] else RoundStatus.RUNNING
        )
    ranking_tasks = Task.objects.filter(kind="ranking").exclude(pk=setup["task"].pk)
    train_prompts = Prompt.objects.filter(project=project, split=Split.TRAIN).count()
    assert (
        ranking_tasks.count() == train_prompts == 4
    )  # one per train prompt, K=4 from both policies
    for task in ranking_tasks:
        models = {tc.completion.model_version_id for tc in task.task_completions.all()}
        assert models == {round_.new_policy_id, setup["sft"].pk}
    assert Task.objects.filter(kind="comparison").count() == 2  # one per test prompt


def test_every_step_of_a_round_started_on_a_gpu_queue_is_sent_to_that_queue(
    project, personas, setup, settings, now, django_capture_on_commit_callbacks
):
    """Reward model, PPO, the four sampling runs, the compute-matched SFT and its sampling: each
    run row names the round's queue, and each message went to it on the broker."""
    settings.TRAINING_GPU_QUEUES = ["gpu", "gpu-big"]
    purge_queues("gpu,gpu-big")
    submitted_demonstration(project, personas.alice, "A demonstration for the baseline.", now)
    with django_capture_on_commit_callbacks(execute=True):
        round_ = rounds.round_start(
            project=project, policy=setup["sft"], created_by=personas.admin, queue="gpu-big"
        )
        _succeed(round_.reward_run, now, settings)
        round_.refresh_from_db()
        _succeed(round_.policy_run, now, settings, metrics=GOOD)
        round_.refresh_from_db()
        _succeed(round_.baseline_run, now, settings)
        for run in round_.runs("sample"):
            _succeed(run, now, settings, samples=_samples(run))
    round_.refresh_from_db()
    assert round_.status == RoundStatus.SUCCEEDED and round_.queue == "gpu-big"
    steps = TrainingRun.objects.filter(round_step__round=round_)
    assert sorted(steps.values_list("kind", flat=True)) == sorted(
        ["reward", "ppo", "sft", *["sample"] * 5]
    )
    assert set(steps.values_list("queue", flat=True)) == {"gpu-big"}
    assert sorted(messages_on("gpu-big")) == sorted(
        (RUN_TASK, [pk]) for pk in steps.values_list("pk", flat=True)
    )
    assert messages_on("gpu") == []


def test_a_round_on_an_undeclared_queue_is_refused_before_anything_starts(
    project, personas, setup, settings
):
    settings.TRAINING_GPU_QUEUES = ["gpu", "gpu-big"]
    with pytest.raises(Invalid, match=r"^No GPU queue 'tpu'; the queues are gpu, gpu-big\.$"):
        rounds.round_start(project=project, policy=setup["sft"], created_by=personas.admin,
                           queue="tpu")  # fmt: skip
    assert not Round.objects.exists() and not TrainingRun.objects.exists()


def test_a_rounds_ranking_tasks_keep_the_different_outputs_and_count_prompts_left_without(
    project, personas, setup, settings, now
):
    """K = 3 for this round (the project's is 4): the new policy samples 2 per train prompt, the
    previous 1. Where the two repeat each other a task keeps the different outputs if 2 remain;
    a prompt with one text among the three gets no task, and the round says so."""
    round_ = rounds.round_start(
        project=project, policy=setup["sft"], created_by=personas.admin,
        config={"k": 3, "max_prompts": 3, "eval_prompts": 1},
    )  # fmt: skip
    assert round_.config["k"] == 3
    _succeed(round_.reward_run, now, settings)
    round_.refresh_from_db()
    _succeed(round_.policy_run, now, settings, metrics=GOOD)
    new_train, old_train, *ab = list(round_.runs("sample"))
    assert (new_train.config["k"], old_train.config["k"]) == (2, 1)
    first, second, third = new_train.dataset["prompts"]
    answers = {
        new_train: {first: ["x", "y"], second: ["s", "s"], third: ["a", "b"]},
        old_train: {first: ["x"], second: ["s"], third: ["c"]},
    }
    for run in (new_train, old_train):
        _succeed(run, now, settings, samples=[
            {"prompt_id": pid, "sample_index": j, "completion": text, "provenance": {}}
            for pid, texts in answers[run].items() for j, text in enumerate(texts)
        ])  # fmt: skip
    for run in ab:
        _succeed(run, now, settings, samples=_samples(run))
    round_.refresh_from_db()
    assert round_.status == RoundStatus.SUCCEEDED
    tasks = Task.objects.filter(kind="ranking").exclude(pk=setup["task"].pk)
    assert {t.prompt_id: sorted(t.completions.values_list("text", flat=True)) for t in tasks} == {
        first: ["x", "y"], third: ["a", "b", "c"]
    }  # fmt: skip
    assert (round_.gate["ranking_tasks"], round_.gate["ranking_tasks_fewer_than_k"],
            round_.gate["dropped_prompts"]) == (2, 1, 1)  # fmt: skip
    reviewer = Client()
    reviewer.force_login(personas.reviewer)
    page = reviewer.get(f"/p/{project.slug}/rounds/{round_.number}/").content.decode()
    assert "Added 2 ranking tasks (1 with fewer than K = 3 different outputs)" in page
    assert "1 prompt got no ranking task: fewer than 2 different outputs." in page


@pytest.mark.parametrize("k", [1, 10, "4", True])
def test_a_rounds_k_is_2_to_9(project, personas, setup, k):
    with pytest.raises(Invalid, match="outputs per ranking task") as refused:
        rounds.round_start(
            project=project, policy=setup["sft"], created_by=personas.admin, config={"k": k}
        )
    assert [d["key"] for d in refused.value.details] == ["k"]
    assert not Round.objects.exists()


def test_rank_sample_settings_apply_to_the_ranking_samples_only(
    project, personas, setup, settings, now
):
    # Samples to rank at temperature 1.0 (varied outputs), blind A/B samples at 0.7: the round's
    # "sample" settings reach every sampling run, "rank_sample" overrides them on train prompts.
    round_ = rounds.round_start(
        project=project, policy=setup["sft"], created_by=personas.admin,
        config={"sample": {"temperature": 0.7, "max_new_tokens": 24},
                "rank_sample": {"temperature": 1.0}, "max_prompts": 2, "eval_prompts": 1},
    )  # fmt: skip
    _succeed(round_.reward_run, now, settings)
    round_.refresh_from_db()
    _succeed(round_.policy_run, now, settings, metrics=GOOD)
    by_split = [
        (set(Prompt.objects.filter(pk__in=r.dataset["prompts"]).values_list("split", flat=True)),
         r.config["temperature"], r.config["max_new_tokens"], len(r.dataset["prompts"]))
        for r in round_.runs("sample")
    ]  # fmt: skip
    assert by_split == [
        ({"train"}, 1.0, 24, 2), ({"train"}, 1.0, 24, 2), ({"test"}, 0.7, 24, 1), ({"test"}, 0.7, 24, 1)
    ]  # fmt: skip
    with pytest.raises(Invalid, match="Unknown round settings: rank_samples"):
        rounds.round_start(
            project=project, policy=setup["sft"], created_by=personas.admin,
            config={"rank_samples": {"temperature": 1.0}},
        )  # fmt: skip


def test_a_policy_that_fails_the_gate_never_reaches_the_queue(
    project, personas, setup, settings, now
):
    round_ = rounds.round_start(project=project, policy=setup["sft"], created_by=personas.admin)
    _succeed(round_.reward_run, now, settings)
    round_.refresh_from_db()
    _succeed(round_.policy_run, now, settings, metrics={**GOOD, "response/eos_rate": 0.1})
    round_.refresh_from_db()
    assert round_.status == RoundStatus.FAILED and "eos_rate" in round_.error
    assert round_.gate["checks"]["eos_rate"]["ok"] is False and round_.new_policy is not None
    assert not round_.runs("sample").exists()


def test_a_failed_stage_stops_the_round_with_its_reason_and_keeps_what_was_made(
    project, personas, setup, now
):
    round_ = rounds.round_start(project=project, policy=setup["sft"], created_by=personas.admin)
    loop.run_claim(run_id=round_.reward_run.pk, worker="w", now=now)
    loop.run_fail(
        run_id=round_.reward_run.pk,
        worker="w",
        error="Traceback...\nValueError: no rankings",
        retry=False,
        now=now,
    )
    round_.refresh_from_db()
    assert round_.status == RoundStatus.FAILED
    assert "reward stage" in round_.error and "ValueError: no rankings" in round_.error
    assert TrainingRun.objects.get(pk=round_.reward_run.pk).status == RunStatus.FAILED


def test_only_one_round_runs_at_a_time_and_cancelling_its_stage_stops_it(
    project, personas, setup, now
):
    round_ = rounds.round_start(project=project, policy=setup["sft"], created_by=personas.admin)
    with pytest.raises(Conflict):
        rounds.round_start(project=project, policy=setup["sft"], created_by=personas.admin)
    loop.run_cancel(run_id=round_.reward_run.pk, project=project, now=now)
    assert Round.objects.get(pk=round_.pk).status == RoundStatus.FAILED
    second = rounds.round_start(project=project, policy=setup["sft"], created_by=personas.admin)
    assert second.number == 2


def test_the_gate_fails_closed_when_a_metric_is_missing():
    verdict = rounds.gate_check(
        metrics={"response/eos_rate": 0.9, "kl/k1": None, "response/length": 10.0},
        reward_gain=None,
        gate=rounds.DEFAULT_GATE,
    )
    assert verdict["passed"] is False and verdict["checks"]["kl"]["ok"] is False
    assert verdict["checks"]["reward_gain"]["ok"] is False


# Issue 14's round: the score stayed flat (-0.257 -> -0.268) while the ptx loss did the learning.
@pytest.mark.parametrize(
    "scores", [[-0.257, -0.26, -0.265, -0.268], [0.1, 0.1, 0.1, 0.1], [0.4], []]
)
def test_a_policy_whose_reward_did_not_rise_fails_the_gate_with_its_reason_shown(
    project, personas, setup, settings, now, scores
):
    round_ = rounds.round_start(project=project, policy=setup["sft"], created_by=personas.admin)
    _succeed(round_.reward_run, now, settings)
    _succeed(round_.policy_run, now, settings, metrics={**GOOD, "reward/score": scores})
    round_.refresh_from_db()
    assert round_.status == RoundStatus.FAILED and "reward_gain" in round_.error
    assert round_.gate["checks"]["reward_gain"]["ok"] is False
    assert not round_.runs("sample").exists()
    page = Client()
    page.force_login(personas.admin)
    html = page.get(f"/p/{project.slug}/rounds/{round_.number}/").content.decode()
    assert "<td>reward_gain</td>" in html and "did not pass the gate (reward_gain)" in html


def test_the_reward_gain_compares_the_first_and_last_quarter_of_the_scores(
    project, personas, setup, settings, now
):
    round_ = rounds.round_start(
        project=project, policy=setup["sft"], created_by=personas.admin,
        config={"gate": {"min_reward_gain": 0.25}},
    )  # fmt: skip
    _succeed(round_.reward_run, now, settings)
    scores = [0.0, 0.1, 5.0, -5.0, 0.2, 0.2, 0.3, 0.4]  # first quarter 0.05, last 0.35
    _succeed(round_.policy_run, now, settings, metrics={**GOOD, "reward/score": scores})
    round_.refresh_from_db()
    check = round_.gate["checks"]["reward_gain"]
    assert round_.gate["passed"] and check["value"] == pytest.approx(0.3)
    assert check["above"] == 0.25 and round_.stage == RoundStage.SAMPLE


@pytest.mark.parametrize("value", [-0.1, "0.1", None, float("nan"), True])
def test_the_gates_min_reward_gain_is_a_number_of_at_least_0(project, personas, setup, value):
    with pytest.raises(Invalid, match="min_reward_gain"):
        rounds.round_start(
            project=project, policy=setup["sft"], created_by=personas.admin,
            config={"gate": {"min_reward_gain": value}},
        )  # fmt: skip


def test_cancelling_a_round_stops_its_running_step_and_frees_the_project(
    project, personas, setup, settings, now
):
    round_ = rounds.round_start(project=project, policy=setup["sft"], created_by=personas.admin)
    _succeed(round_.reward_run, now, settings)
    ppo = Round.objects.get(pk=round_.pk).policy_run
    loop.run_claim(run_id=ppo.pk, worker="w", now=now)  # PPO is running on a worker

    loop.round_cancel(project=project, number=round_.number, now=now)
    round_.refresh_from_db()
    assert round_.status == RoundStatus.CANCELLED and round_.error == "Cancelled by an admin."
    ppo.refresh_from_db()
    assert ppo.cancel_requested and ppo.status == RunStatus.RUNNING  # stops at its next step
    loop.run_mark_cancelled(run_id=ppo.pk, now=now)  # what the worker then does
    assert Round.objects.get(pk=round_.pk).status == RoundStatus.CANCELLED  # not "failed"
    assert round_.reward_run.model_version is not None  # what it made stays
    with pytest.raises(Conflict):
        loop.round_cancel(project=project, number=round_.number, now=now)
    assert rounds.round_start(project=project, policy=setup["sft"], created_by=personas.admin)


def test_cancelling_a_round_whose_step_is_queued_cancels_that_run_now(
    project, personas, setup, now
):
    round_ = rounds.round_start(project=project, policy=setup["sft"], created_by=personas.admin)
    loop.round_cancel(project=project, number=round_.number, now=now)
    assert round_.reward_run.status == RunStatus.CANCELLED
    assert Round.objects.get(pk=round_.pk).status == RoundStatus.CANCELLED
