"""A run killed with SIGKILL resumes from its last complete checkpoint and ends where an
uninterrupted run ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # trains a model on CPU

REPO = Path(__file__).resolve().parents[3]

# The child runs the stage and kills itself with SIGKILL (no cleanup of any kind) at step kill_at.
CHILD = """
import json, os, signal, sys
import torch
torch.set_num_threads(1)
from tests.training.engine.test_resume import start
stage, config, kill_at = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])

def on_progress(step, total, metrics):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

start(stage, config, on_progress)
"""


def start(stage: str, config: dict, on_progress=None) -> dict:
    from tests.training.engine.toy_model import (
        banana_rankings,
        demonstrations,
        letter_reward,
        questions,
    )
    from training.engine import critic_free, ppo, reward, sft
    from training.engine.config import CriticFreeConfig, PPOConfig, RewardConfig, SFTConfig

    if stage == "sft":
        return sft.run(
            SFTConfig.from_dict(config),
            {"demonstrations": demonstrations(40)},
            on_progress=on_progress,
        )
    if stage == "reward":
        data = {"rankings": banana_rankings(40), "demonstrations": demonstrations(8)}
        return reward.run(RewardConfig.from_dict(config), data, on_progress=on_progress)
    if stage == "critic_free":
        return critic_free.run(
            CriticFreeConfig.from_dict(config),
            {"prompts": questions(24)},
            on_progress=on_progress,
            reward_fn=letter_reward,
        )
    return ppo.run(
        PPOConfig.from_dict(config),
        {"prompts": questions(24)},
        on_progress=on_progress,
        reward_fn=letter_reward,
    )


def stage_config(stage: str, model_dir: Path, output_dir: Path, **settings) -> dict:
    common = {"output_dir": str(output_dir), "checkpoint_every": 2, "seed": 3, **settings}
    if stage == "sft":
        return {
            **common,
            "model_path": str(model_dir),
            "max_steps": 7,
            "batch_size": 4,
            "eval_every": 3,
        }
    if stage == "reward":
        return {
            **common,
            "model_path": str(model_dir),
            "max_steps": 7,
            "batch_size": 4,
            "eval_every": 3,
        }
    if stage == "critic_free":
        return {
            **common,
            "policy_path": str(model_dir),
            "estimator": "rloo",
            "total_episodes": 7 * 2,
            "batch_size": 2,
            "group_size": 3,
            "mini_batch_size": 3,
            "update_epochs": 2,
            "max_new_tokens": 6,
            "lr": 1e-3,
        }
    return {
        **common,
        "policy_path": str(model_dir),
        "total_episodes": 7 * 4,
        "batch_size": 4,
        "mini_batch_size": 2,
        "max_new_tokens": 6,
        "lr": 1e-3,
    }


def without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in entry.items() if not k.startswith("time/")} for entry in history]


@pytest.mark.parametrize(
    ("stage", "settings"),
    # With LoRA a checkpoint holds the policy's adapters and the value model's adapters and head.
    [
        ("sft", {}),
        ("reward", {}),
        ("ppo", {}),
        ("ppo", {"lora_rank": 4, "lr": 1e-2}),
        ("critic_free", {}),
    ],
    ids=["sft", "reward", "ppo", "ppo-lora", "critic_free"],
)
def test_a_run_killed_mid_way_resumes_from_its_last_checkpoint_and_finishes(
    stage, settings, sft_model_dir, tmp_path
):
    output_dir = tmp_path / "killed"
    config = stage_config(stage, sft_model_dir, output_dir, **settings)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, stage, json.dumps(config), "5"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode == -9, child.stderr
    checkpoints = output_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-2", "step-4"]
    # A save that was cut short (a crash in the middle of writing step 6) is ignored and removed.
    partial = checkpoints / ".tmp-step-6-deadbeef"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 10)

    steps = []
    resumed = start(stage, config, on_progress=lambda step, total, metrics: steps.append(step))
    assert steps == [5, 6, 7]
    assert not partial.exists()
    assert (output_dir / "model" / "config.json").is_file()

    uninterrupted = start(stage, stage_config(stage, sft_model_dir, tmp_path / "whole", **settings))
    # Same weights, optimizer state, RNG and data order: the resumed run logs what the other did.
    resumed_history = without_timings(resumed["history"])
    whole_history = without_timings(uninterrupted["history"])
    assert [entry.keys() for entry in resumed_history] == [entry.keys() for entry in whole_history]
    for ours, theirs in zip(resumed_history, whole_history, strict=True):
        assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-5)
