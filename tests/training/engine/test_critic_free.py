"""Critic-free RL (GRPO, RLOO, REINFORCE++-baseline) on the toy model on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.engine.helpers import assert_plain_model_dir, causal_lm_parameters, unchanged
from tests.training.engine.toy_model import demonstrations, letter_reward, questions
from training.engine import critic_free, jobfile
from training.engine.config import ESTIMATORS, ConfigError, CriticFreeConfig

pytestmark = pytest.mark.slow  # trains a model on CPU

# What the round's gate reads from every step of a policy run (training/rounds.py).
GATE_METRICS = {"response/eos_rate", "kl/k1", "response/length", "reward/score"}


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_each_estimator_changes_every_trainable_parameter_and_logs_what_the_gate_reads(
    estimator, sft_model_dir, reward_model_dir, tmp_path
):
    cfg = CriticFreeConfig(
        policy_path=str(sft_model_dir),
        reward_model_path=str(reward_model_dir),
        output_dir=str(tmp_path),
        estimator=estimator,
        total_episodes=4,
        batch_size=2,
        group_size=4,
        mini_batch_size=4,
        update_epochs=2,
        max_new_tokens=8,
        lr=1e-3,
        ptx_coef=0.5,
        ptx_batch_size=4,
    )
    data = {"prompts": questions(8), "demonstrations": demonstrations(8)}
    result = critic_free.run(cfg, data)

    before = causal_lm_parameters(sft_model_dir, sft_model_dir)
    after = causal_lm_parameters(result["model_dir"], result["model_dir"])
    assert unchanged(before, after) == []
    assert result["total_steps"] == 2 and len(result["history"]) == 2
    for entry in result["history"]:
        assert GATE_METRICS | {"loss/policy", "loss/ptx", "policy/entropy"} <= entry.keys()
        assert {"time/generation", "time/scoring", "time/update"} <= entry.keys()


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_a_few_dozen_steps_raise_a_programmatic_reward(estimator, sft_model_dir, tmp_path):
    cfg = CriticFreeConfig(
        policy_path=str(sft_model_dir),
        output_dir=str(tmp_path),
        estimator=estimator,
        total_episodes=4 * 24,
        batch_size=4,
        group_size=4,
        mini_batch_size=16,
        max_new_tokens=12,
        lr=1e-3,
        kl_coef=0.01,
        checkpoint_every=0,
        eval_prompts=8,
    )
    result = critic_free.run(cfg, {"prompts": questions(32, seed=5)}, reward_fn=letter_reward)
    history = result["history"]
    scores = [entry["reward/score"] for entry in history]
    first, last = sum(scores[:4]) / 4, sum(scores[-4:]) / 4
    assert last > first + 0.05, scores
    # The 8 held-out prompts, never trained on, scored before and after from one seed:
    assert history[0]["eval/held_out_prompts"] == 8
    assert history[-1]["eval/score"] > history[0]["eval/score_start"], estimator


def test_with_lora_the_reference_is_the_base_and_the_saved_policy_is_plain_and_merged(
    sft_model_dir, tmp_path
):
    cfg = CriticFreeConfig(
        policy_path=str(sft_model_dir),
        output_dir=str(tmp_path),
        total_episodes=4,
        batch_size=2,
        group_size=2,
        mini_batch_size=2,
        max_new_tokens=6,
        lr=1e-2,
        lora_rank=4,
    )
    result = critic_free.run(cfg, {"prompts": questions(4)}, reward_fn=letter_reward)
    # The first rollout samples from the untouched policy: its KL to the reference is 0.
    assert result["history"][0]["kl/k1"] == pytest.approx(0.0, abs=1e-5)
    assert result["history"][1]["kl/k1"] != pytest.approx(0.0, abs=1e-5)
    assert_plain_model_dir(result["model_dir"], sft_model_dir)


def test_each_prompt_is_sampled_group_size_times_in_contiguous_groups(sft_model_dir, tmp_path):
    seen: list[list[str]] = []

    def reward_fn(prompts: list[str], responses: list[str]) -> list[float]:
        seen.append(prompts)
        return [float(len(r)) for r in responses]

    cfg = CriticFreeConfig(
        policy_path=str(sft_model_dir),
        output_dir=str(tmp_path),
        total_episodes=3,
        batch_size=3,
        group_size=2,
        mini_batch_size=6,
        max_new_tokens=4,
    )
    critic_free.run(cfg, {"prompts": questions(6)}, reward_fn=reward_fn)
    (prompts,) = seen
    assert len(prompts) == 6
    assert prompts[0::2] == prompts[1::2]  # (prompt 0, prompt 0, prompt 1, prompt 1, ...)


def test_critic_free_needs_exactly_one_source_of_reward(sft_model_dir, tmp_path):
    cfg = CriticFreeConfig(policy_path=str(sft_model_dir), output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="exactly one"):
        critic_free.run(cfg, {"prompts": questions(4)})


@pytest.mark.parametrize(
    ("values", "keys"),
    [
        ({"group_size": 1}, {"group_size"}),
        ({"batch_size": 3, "group_size": 2, "mini_batch_size": 4},
         {"mini_batch_size", "batch_size", "group_size"}),
        ({"estimator": "ppo"}, {"estimator"}),
        ({"update_epochs": 0}, {"update_epochs"}),
        ({"sampler": "vllm"}, {"sampler"}),
        ({"total_episodes": 2, "batch_size": 4}, {"total_episodes", "batch_size"}),
    ],
)  # fmt: skip
def test_a_config_that_cannot_run_is_refused_naming_its_keys(values, keys):
    with pytest.raises(ConfigError) as refused:
        CriticFreeConfig.from_dict({"policy_path": "p", "output_dir": "o", **values})
    assert set(refused.value.keys) == keys
    assert all(key in str(refused.value) for key in keys)


def test_the_worker_runs_it_as_a_stage_of_its_own_with_python_m_training_engine(
    sft_model_dir, reward_model_dir, tmp_path
):
    """The launcher's subprocess path: `python -m training.engine critic_free --run-dir DIR` finds
    the module's Config and run(), as the worker starts every kind."""
    config = {
        "policy_path": str(sft_model_dir),
        "reward_model_path": str(reward_model_dir),
        "output_dir": str(tmp_path / "out"),
        "estimator": "reinforce_pp_baseline",
        "total_episodes": 2,
        "batch_size": 2,
        "group_size": 2,
        "mini_batch_size": 4,
        "max_new_tokens": 4,
    }
    job = {"config": config, "data": {"prompts": questions(2)}}
    (tmp_path / jobfile.JOB_FILE).write_text(json.dumps(job))
    repo = Path(__file__).resolve().parents[3]
    engine = subprocess.run(
        [sys.executable, "-m", "training.engine", "critic_free", "--run-dir", str(tmp_path)],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert engine.returncode == 0, engine.stderr
    outcome = json.loads((tmp_path / jobfile.OUTCOME_FILE).read_text())
    assert outcome["total_steps"] == 1 and Path(outcome["model_dir"]).is_dir()
