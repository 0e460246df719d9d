"""Training rounds: a recipe that trains a new policy from every ranking so far, gates it, and puts
its samples back in the queue, mixed and blinded with the previous policy's, plus blind A/B tasks
on held-out prompts against the start policy and against a compute-matched SFT baseline.

The recipes (Recipe): InstructGPT (reward model → PPO → sample), critic-free (reward model → GRPO /
RLOO / REINFORCE++-baseline → sample) and iterated DPO (DPO on every ranking so far → sample). Once
the new policy passes the gate, the start policy is also trained with plain SFT for as many
optimizer steps as the policy step took (the "baseline" step, with the settings of the SFT run the
start policy descends from), so a reviewer can tell what the rankings added over more SFT
(issue 14: a round that looked like a win over its start SFT was a tie with an SFT trained longer).

A round is an ordered recipe of steps (RoundStep rows, each a TrainingRun). Every step's settings
are checked by its stage's config class when the round starts, so a typo in the PPO settings is
an error on the form, not a failed PPO run after the reward model has trained.
`round_on_run_finished` is called inside the transaction that closes a run (training/loop.py), so
a step and the start of the next commit together; a failed or cancelled step stops the round with
its reason and loses nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Max

from labeling.errors import Conflict, Invalid
from labeling.models import MAX_K, Completion, ModelVersion, Project, Prompt, Split
from labeling.services import (
    EvaluationTasks,
    evaluation_tasks_make,
    project_lock,
    ranking_task_create,
)

from . import runs, stages
from .models import (
    Recipe,
    Round,
    RoundStage,
    RoundStatus,
    RoundStep,
    RunMetric,
    RunStatus,
    StepRole,
    TrainingRun,
)

# Whether a new policy may enter the queue (InstructGPT watches KL and length; a policy that
# stops ending its answers, drifts far from SFT or rambles is not shown to labelers).
# The KL limit is per response, in nats: the first closed-loop run showed a policy at KL 24 that had
# reward-hacked its way from gold quality 0.61 down to 0.10, so the default is well below that.
# The reward model's score of the policy must also have risen over the run, by more than
# min_reward_gain (mean of the first quarter of logged scores against the last quarter): issue 14's
# round kept a flat score (-0.257 -> -0.268) while the PPO-ptx loss did all the learning.
# DPO samples nothing while it trains, so its gate is its held-out pair accuracy instead.
# An online policy step also holds out up to HELD_OUT_PROMPTS of its prompts and scores one
# sample of each before and after training: the score may not change by less than
# min_held_out_gain (0: it may not fall).
DEFAULT_GATE = {
    "min_eos_rate": 0.5, "max_kl": 8.0, "max_mean_length": 512.0, "min_reward_gain": 0.0,
    "min_held_out_gain": 0.0, "min_pair_accuracy": 0.5,
}  # fmt: skip
HELD_OUT_PROMPTS = 32
# "sample" configures every sampling run of the round; "rank_sample" overrides it for the train
# prompts' samples that become ranking tasks (e.g. temperature 1.0 there for varied outputs to
# rank, while the blind A/B samples on test prompts stay at the evaluation temperature). "k" is
# the outputs of each ranking task (the project's K unless given), split between both policies.
# "baseline" is the compute-matched SFT's settings over its inherited ones, or false for none.
STAGE_KEYS = {
    "reward", "ppo", "critic_free", "dpo", "baseline", "sample", "rank_sample", "gate",
    "max_prompts", "eval_prompts", "k",
}  # fmt: skip
POLICY_KEYS = ("ppo", "critic_free", "dpo")  # a step's settings key is its run kind


@dataclass(frozen=True)
class RecipeSteps:
    reward_model: bool  # a reward model is trained first, on every ranking so far
    policy_kind: str  # the run kind that trains the new policy


RECIPES: dict[str, RecipeSteps] = {
    Recipe.INSTRUCTGPT: RecipeSteps(reward_model=True, policy_kind=TrainingRun.Kind.PPO),
    Recipe.CRITIC_FREE: RecipeSteps(reward_model=True, policy_kind=TrainingRun.Kind.CRITIC_FREE),
    Recipe.ITERATED_DPO: RecipeSteps(reward_model=False, policy_kind=TrainingRun.Kind.DPO),
}


def planned_steps(recipe: str) -> list[str]:
    """The labels of a recipe's training steps, in order (sampling and the baseline follow)."""
    steps = RECIPES[recipe]
    kinds = [TrainingRun.Kind.REWARD] if steps.reward_model else []
    return [TrainingRun.Kind(kind).label for kind in [*kinds, steps.policy_kind]]


def round_start(
    *,
    project: Project,
    policy: ModelVersion,
    created_by: Any,
    config: dict[str, Any] | None = None,
    recipe: str = Recipe.INSTRUCTGPT,
    queue: str = "",
) -> Round:
    """Start round N+1 from `policy`: its first step trains a reward model on every ranking so far
    (or, iterated DPO, the new policy itself). `queue` names the GPU queue every step's run is
    sent to; blank: the default one."""
    runs.queue_check(queue)
    config = dict(config or {})
    unknown = set(config) - STAGE_KEYS
    if unknown:
        raise Invalid(f"Unknown round settings: {', '.join(sorted(unknown))}.")
    if recipe not in RECIPES:
        message = f"Unknown recipe {recipe!r:.40}; the recipes are {', '.join(RECIPES)}."
        raise Invalid(message, details=[{"key": "recipe", "error": message}])
    if policy.project_id != project.pk or policy.kind == ModelVersion.Kind.REWARD:
        raise Invalid("Start a round from a policy (base, SFT or PPO) of this project.")
    gate = _gate_of(config.get("gate", {}))
    k = config.get("k", project.k)
    _check_settings(config, k=k, recipe=recipe)
    with transaction.atomic():
        # Two "Start round" presses at once: the second waits for the first's commit here, then
        # sees its round (the unique constraint on a project's running round is the backstop).
        project_lock(project=project)
        if Round.objects.filter(project=project, status=RoundStatus.RUNNING).exists():
            raise Conflict("A round is already running in this project.")
        number = (Round.objects.filter(project=project).aggregate(n=Max("number"))["n"] or 0) + 1
        steps = RECIPES[recipe]
        round_ = Round.objects.create(
            project=project,
            number=number,
            recipe=recipe,
            stage=RoundStage.REWARD if steps.reward_model else RoundStage.POLICY,
            policy=policy,
            config={**config, "k": k, "gate": gate},
            queue=queue,
            created_by=created_by,
        )
        if steps.reward_model:
            # InstructGPT initialises the reward model from the SFT model: here the start policy,
            # which also guarantees the policy and its reward model share a tokenizer.
            run = runs.run_start(
                project=project,
                kind=TrainingRun.Kind.REWARD,
                config=config.get("reward", {}),
                created_by=created_by,
                base_model=policy,
                queue=round_.queue,
            )
            _add_step(round_, StepRole.REWARD, run)
        else:
            _start_policy_step(round_, reward_model=None)
        return round_


def _policy_settings(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """The policy step's settings: an online step holds out prompts for the gate unless told."""
    settings = dict(config.get(kind, {}))
    if kind != TrainingRun.Kind.DPO:
        settings.setdefault("eval_prompts", HELD_OUT_PROMPTS)
    return settings


def _start_policy_step(round_: Round, *, reward_model: ModelVersion | None) -> None:
    kind = RECIPES[round_.recipe].policy_kind
    run = runs.run_start(
        project=round_.project,
        kind=kind,
        config=_policy_settings(kind, round_.config),
        created_by=round_.created_by,
        base_model=round_.policy,
        reward_model=reward_model,
        queue=round_.queue,
    )
    _add_step(round_, StepRole.POLICY, run)


def _gate_of(values: Any) -> dict[str, float]:
    """The gate's limits: the defaults, with the ones given (finite numbers) instead."""
    if not isinstance(values, dict) or not set(values) <= set(DEFAULT_GATE):
        raise Invalid(f"The gate takes {', '.join(sorted(DEFAULT_GATE))}.")
    for key, value in values.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < 0:
            message = f"The gate's {key} must be a number of at least 0, not {value!r:.40}."
            raise Invalid(message, details=[{"key": key, "error": message}])
    return {**DEFAULT_GATE, **{k: float(v) for k, v in values.items()}}


def _check_settings(config: dict[str, Any], *, k: Any, recipe: str) -> None:
    """Each step's settings, checked by its stage's config class now (Invalid names the key),
    exactly as each step's run will be given them."""
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= MAX_K:
        message = (
            f"The round's k (outputs per ranking task) must be from 2 to {MAX_K}, not {k!r:.40}."
        )
        raise Invalid(message, details=[{"key": "k", "error": message}])
    steps = RECIPES[recipe]
    used = [steps.policy_kind, *([TrainingRun.Kind.REWARD] if steps.reward_model else [])]
    for key in ("reward", *POLICY_KEYS):
        if key in config and key not in used:
            message = f"The {recipe} recipe has no {key} step: leave out its settings."
            raise Invalid(message, details=[{"key": key, "error": message, "step": key}])
    for key in used:
        try:
            stages.stage(key).resolve(
                _policy_settings(key, config) if key in POLICY_KEYS else config.get(key, {})
            )
        except Invalid as exc:  # name the step too: "lr" is a setting of both
            raise Invalid(exc.message, details=[{**d, "step": key} for d in exc.details]) from None
    baseline = config.get("baseline", {})
    if baseline is not False:
        if not isinstance(baseline, dict):
            raise Invalid("The round's baseline settings must be an object, or false for none.")
        try:  # the matched steps and the inherited SFT settings come later; check the rest now
            stages.stage(TrainingRun.Kind.SFT).resolve({"max_steps": 1, **baseline})
        except Invalid as exc:
            raise Invalid(
                exc.message, details=[{**d, "step": "baseline"} for d in exc.details]
            ) from None
    sample = stages.stage(TrainingRun.Kind.SAMPLE)
    for key in ("sample", "rank_sample"):
        if not isinstance(config.get(key, {}), dict):
            raise Invalid(f"The round's {key} settings must be an object of setting: value.")
    # The A/B answers' runs get "sample"; the ranking tasks' runs "sample" with "rank_sample" over
    # it, and their share of k (_start_sampling).
    sample.resolve({**config.get("sample", {}), "k": 1, "create_tasks": False})
    rank_sample = {**config.get("sample", {}), **config.get("rank_sample", {})}
    sample.resolve({**rank_sample, "k": ranking_sample_counts(k)[0], "create_tasks": False})
    for key in ("max_prompts", "eval_prompts"):
        value = config.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            message = f"The round's {key} must be a whole number of at least 1."
            raise Invalid(message, details=[{"key": key, "error": message}])


def _add_step(round_: Round, role: str, run: TrainingRun) -> RoundStep:
    position = round_.steps.count()
    return RoundStep.objects.create(round=round_, position=position, role=role, run=run)


def _fail(round_: Round, reason: str, now: datetime) -> None:
    round_.status = RoundStatus.FAILED
    round_.error = reason[:5000]
    round_.finished_at = now
    round_.save(update_fields=["status", "error", "finished_at"])


def _last_metrics(run: TrainingRun, names: list[str]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in names:
        point = RunMetric.objects.filter(run=run, name=name).order_by("-step").first()
        out[name] = point.value if point else None
    return out


def _reward_gain(run: TrainingRun) -> float | None:
    """The rise of the reward model's mean score over the run: mean of the last quarter of the
    logged reward/score values minus mean of the first quarter (None with fewer than 2)."""
    scores = list(
        RunMetric.objects.filter(run=run, name="reward/score")
        .order_by("step")
        .values_list("value", flat=True)
    )
    if len(scores) < 2:
        return None
    window = max(1, len(scores) // 4)
    return sum(scores[-window:]) / window - sum(scores[:window]) / window


def gate_check(
    *,
    metrics: dict[str, float | None],
    reward_gain: float | None,
    gate: dict[str, float],
    held_out_gain: float | None = None,
    held_out: bool = False,
) -> dict[str, Any]:
    """The gate's verdict from an online policy run's (PPO, critic-free) last logged values, the
    rise of its reward score and (`held_out`: the run held prompts out) the change of its score
    on held-out prompts. Missing values fail closed; a flat training score does not pass."""
    eos, kl, length = metrics["response/eos_rate"], metrics["kl/k1"], metrics["response/length"]
    gain_min = gate["min_reward_gain"]
    checks = {
        "eos_rate": {"value": eos, "min": gate["min_eos_rate"],
                     "ok": eos is not None and eos >= gate["min_eos_rate"]},
        "kl": {"value": kl, "max": gate["max_kl"], "ok": kl is not None and kl <= gate["max_kl"]},
        "mean_length": {"value": length, "max": gate["max_mean_length"],
                        "ok": length is not None and length <= gate["max_mean_length"]},
        "reward_gain": {"value": reward_gain, "above": gain_min,
                        "ok": reward_gain is not None and reward_gain > gain_min},
    }  # fmt: skip
    if held_out:
        least = gate.get("min_held_out_gain", 0.0)  # rounds started before it: 0
        ok = held_out_gain is not None and held_out_gain >= least
        checks["held_out_score_gain"] = {"value": held_out_gain, "min": least, "ok": ok}
    return {"checks": checks, "passed": all(c["ok"] for c in checks.values())}


def dpo_gate_check(*, pair_accuracy: float | None, gate: dict[str, float]) -> dict[str, Any]:
    """DPO's verdict: its implicit reward orders the held-out rankings' pairs better than chance
    (DPO samples nothing while it trains, so there is no EOS rate, KL or score to read)."""
    least = gate["min_pair_accuracy"]
    ok = pair_accuracy is not None and pair_accuracy > least
    checks = {"pair_accuracy": {"value": pair_accuracy, "above": least, "ok": ok}}
    return {"checks": checks, "passed": ok}


def _verdict(run: TrainingRun, gate: dict[str, float]) -> dict[str, Any]:
    if run.kind == TrainingRun.Kind.DPO:
        accuracy = _last_metrics(run, ["val/pair_accuracy"])["val/pair_accuracy"]
        return dpo_gate_check(pair_accuracy=accuracy, gate=gate)
    held = _last_metrics(run, ["eval/held_out_prompts", "eval/score_start", "eval/score"])
    start, end = held["eval/score_start"], held["eval/score"]
    # Too few prompts to hold any out (the engine logs 0) leaves nothing to check; asked for
    # and not logged fails closed like every other missing value.
    return gate_check(
        metrics=_last_metrics(run, ["response/eos_rate", "kl/k1", "response/length"]),
        reward_gain=_reward_gain(run),
        gate=gate,
        held_out_gain=end - start if start is not None and end is not None else None,
        held_out=run.config.get("eval_prompts", 0) > 0 and held["eval/held_out_prompts"] != 0,
    )


def optimizer_steps(run: TrainingRun) -> int:
    """The optimizer steps a finished policy run took: what its compute-matched SFT gets."""
    config = run.config
    if run.kind == TrainingRun.Kind.PPO:  # every PPO step: epochs x mini-batches
        steps = config["total_episodes"] // config["batch_size"]
        return steps * config["ppo_epochs"] * (config["batch_size"] // config["mini_batch_size"])
    if run.kind == TrainingRun.Kind.CRITIC_FREE:
        steps = config["total_episodes"] // config["batch_size"]
        responses = config["batch_size"] * config["group_size"]
        return steps * config["update_epochs"] * (responses // config["mini_batch_size"])
    return run.total_steps  # DPO: one optimizer step per step, as many as its data gave


def _sft_ancestor_settings(version: ModelVersion) -> dict[str, Any]:
    """The settings of the SFT run `version` descends from (nearest first), without its length of
    training: the baseline continues SFT the way it was done. {} when there is none."""
    seen: set[int] = set()
    node: ModelVersion | None = version
    while node is not None and node.pk not in seen:
        seen.add(node.pk)
        run = TrainingRun.objects.filter(model_version=node, kind=TrainingRun.Kind.SFT).first()
        if run is not None:
            stage = stages.stage(TrainingRun.Kind.SFT)
            known = set(stage.resolve({}))  # settings an SFT run takes today
            skip = {"max_steps", "epochs", "checkpoint_every"}
            return {k: v for k, v in run.config.items() if k in known and k not in skip}
        node = node.parent
    return {}


def baseline_settings(round_: Round, policy_run: TrainingRun) -> dict[str, Any]:
    """The compute-matched SFT's settings: its ancestor SFT's, as many optimizer steps as the
    policy step took, and the round's own baseline settings over both."""
    matched = {"max_steps": max(1, optimizer_steps(policy_run))}
    return {**_sft_ancestor_settings(round_.policy), **matched, **round_.config.get("baseline", {})}


def ranking_sample_counts(k: int) -> tuple[int, int]:
    """How many of a mixed ranking task's `k` outputs the new and the previous policy sample."""
    k_new = math.ceil(k / 2)
    return k_new, k - k_new


def _start_sample_run(
    round_: Round, model: ModelVersion, split: str, k: int, settings: dict[str, Any], limit: int
) -> None:
    run = runs.run_start(
        project=round_.project,
        kind=TrainingRun.Kind.SAMPLE,
        config={**settings, "k": k, "split": split, "max_prompts": limit, "create_tasks": False},
        created_by=round_.created_by,
        base_model=model,
        queue=round_.queue,
    )
    _add_step(round_, StepRole.SAMPLE, run)


def _has_test_prompts(project: Project) -> bool:
    return Prompt.objects.filter(project=project, split=Split.TEST).exists()


def _start_sampling(round_: Round, new_policy: ModelVersion, policy_run: TrainingRun) -> None:
    """The new and the previous policy sample train prompts (K between them) and test prompts;
    the compute-matched SFT starts training (it samples the test prompts when it is done)."""
    project, config = round_.project, round_.config
    k_new, k_previous = ranking_sample_counts(config.get("k", project.k))  # rounds before k: K
    rank_settings = {**config.get("sample", {}), **config.get("rank_sample", {})}
    limit = config.get("max_prompts", 64)
    _start_sample_run(round_, new_policy, Split.TRAIN, k_new, rank_settings, limit)
    _start_sample_run(round_, round_.policy, Split.TRAIN, k_previous, rank_settings, limit)
    if _has_test_prompts(project):
        eval_limit, settings = config.get("eval_prompts", 64), config.get("sample", {})
        for model in (new_policy, round_.policy):
            _start_sample_run(round_, model, Split.TEST, 1, settings, eval_limit)
    if config.get("baseline", {}) is False:
        return
    if not stages.stage(TrainingRun.Kind.SFT).snapshot(project, {})["demonstrations"]:
        round_.gate = {**round_.gate, "baseline": "none: no demonstrations to continue SFT on"}
        round_.save(update_fields=["gate"])
    else:
        run = runs.run_start(
            project=project,
            kind=TrainingRun.Kind.SFT,
            config=baseline_settings(round_, policy_run),
            created_by=round_.created_by,
            base_model=round_.policy,
            queue=round_.queue,
        )
        _add_step(round_, StepRole.BASELINE, run)


def _finish_sampling(round_: Round, now: datetime) -> None:
    """Mix both policies' train samples into ranking tasks; A/B tasks on test prompts between the
    new policy and the start policy, and between the new policy and the compute-matched SFT."""
    project = round_.project
    k = round_.config.get("k", project.k)
    completions = Completion.objects.filter(
        run_sample__run__in=round_.runs(StepRole.SAMPLE), prompt__split=Split.TRAIN
    )
    # In sample order: the new policy's samples of a prompt, then the previous policy's.
    found = runs.ranking_groups(completions.select_related("prompt").order_by("pk"), k=k)
    for group in found.groups:
        ranking_task_create(project=project, prompt=group[0].prompt, completions=group)
    assert round_.new_policy is not None  # set when the policy step succeeded
    comparisons = evaluation_tasks_make(
        project=project, model_a=round_.new_policy, model_b=round_.policy
    )
    baseline_run = round_.baseline_run
    baseline_comparisons = EvaluationTasks(created=0, skipped_identical=0)
    if baseline_run is not None and baseline_run.model_version is not None:
        baseline_comparisons = evaluation_tasks_make(
            project=project, model_a=round_.new_policy, model_b=baseline_run.model_version
        )
    round_.gate = {
        **round_.gate,
        "ranking_tasks": len(found.groups),
        "ranking_tasks_fewer_than_k": sum(len(g) < k for g in found.groups),
        "dropped_prompts": len(found.dropped),  # fewer than 2 different outputs: no task
        "comparison_tasks": comparisons.created,
        "baseline_comparison_tasks": baseline_comparisons.created,
        # prompts the two policies answered with the same text: no A/B task (it tells nothing)
        "comparison_skipped_identical": comparisons.skipped_identical,
        "baseline_comparison_skipped_identical": baseline_comparisons.skipped_identical,
    }
    round_.stage = RoundStage.DONE
    round_.status = RoundStatus.SUCCEEDED
    round_.finished_at = now
    round_.save(update_fields=["gate", "stage", "status", "finished_at"])


def round_on_run_finished(*, run: TrainingRun, now: datetime) -> None:
    """Advance the round this run belongs to, or stop it with the run's reason."""
    step = RoundStep.objects.filter(run=run).values_list("round_id", "role").first()
    if step is None:
        return
    round_id, role = step
    round_ = Round.objects.select_for_update().get(pk=round_id)
    if round_.status != RoundStatus.RUNNING:
        return
    if run.status != RunStatus.SUCCEEDED:
        first_line = (run.error or "").strip().splitlines()[-1:] or [""]
        _fail(round_, f"The {run.kind} stage (run {run.pk}) {run.status}: {first_line[0]}", now)
        return
    if role == StepRole.REWARD:
        round_.stage = RoundStage.POLICY
        round_.save(update_fields=["stage"])
        _start_policy_step(round_, reward_model=run.model_version)
    elif role == StepRole.POLICY:
        verdict = _verdict(run, round_.config["gate"])
        new_policy = run.model_version
        assert new_policy is not None  # a succeeded policy run registered exactly one version
        round_.new_policy = new_policy
        round_.gate = verdict
        if not verdict["passed"]:
            round_.save(update_fields=["new_policy", "gate"])
            failed = [name for name, c in verdict["checks"].items() if not c["ok"]]
            _fail(round_, f"The new policy did not pass the gate ({', '.join(failed)}).", now)
            return
        round_.stage = RoundStage.SAMPLE
        round_.save(update_fields=["new_policy", "gate", "stage"])
        _start_sampling(round_, new_policy, run)
    else:
        if role == StepRole.BASELINE and _has_test_prompts(round_.project):
            assert run.model_version is not None  # a succeeded SFT run registered its version
            config = round_.config
            _start_sample_run(round_, run.model_version, Split.TEST, 1, config.get("sample", {}),
                              config.get("eval_prompts", 64))  # fmt: skip
        unfinished = TrainingRun.objects.filter(
            round_step__round=round_, round_step__role__in=[StepRole.SAMPLE, StepRole.BASELINE]
        ).exclude(status=RunStatus.SUCCEEDED)
        if not unfinished.exists():
            _finish_sampling(round_, now)
