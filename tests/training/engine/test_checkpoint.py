"""Atomic checkpoints: only complete ones are resumed from, leftovers of a crash are removed."""

from __future__ import annotations

import random

import torch

from training.engine import checkpoint


def make_model_and_optimizer(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_resume_restores_weights_optimizer_rng_and_state(tmp_path):
    model, optimizer = make_model_and_optimizer(0)
    torch.manual_seed(123)
    random.seed(7)
    checkpoint.save_checkpoint(
        tmp_path, 4, models={"m": model}, optimizers={"o": optimizer}, state={"history": [1]}
    )
    expected_draw, expected_python = torch.rand(3), random.random()

    other, other_optimizer = make_model_and_optimizer(1)
    state = checkpoint.resume(tmp_path, models={"m": other}, optimizers={"o": other_optimizer})
    assert state == {"step": 4, "history": [1]}
    torch.testing.assert_close(other.weight, model.weight)
    assert other_optimizer.state_dict()["state"][0]["step"] == 1
    torch.testing.assert_close(
        other_optimizer.state_dict()["state"][0]["exp_avg"],
        optimizer.state_dict()["state"][0]["exp_avg"],
    )
    torch.testing.assert_close(torch.rand(3), expected_draw)
    assert random.random() == expected_python


def test_half_written_checkpoints_are_ignored_and_temporary_dirs_cleaned(tmp_path):
    model, optimizer = make_model_and_optimizer(0)
    checkpoint.save_checkpoint(
        tmp_path, 2, models={"m": model}, optimizers={"o": optimizer}, state={}
    )
    root = tmp_path / "checkpoints"
    partial = root / ".tmp-step-4-abc"
    partial.mkdir()
    (partial / "m.safetensors").write_bytes(b"trunc")
    no_state = root / "step-6"  # a directory without state.json is not a checkpoint
    no_state.mkdir()

    state = checkpoint.resume(tmp_path, models={"m": model}, optimizers={"o": optimizer})
    assert state["step"] == 2
    assert not partial.exists()


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    model, optimizer = make_model_and_optimizer(0)
    for step in (1, 2, 3):
        checkpoint.save_checkpoint(
            tmp_path, step, models={"m": model}, optimizers={"o": optimizer}, state={}, keep_last=2
        )
    assert [p.name for p in checkpoint.complete_checkpoints(tmp_path)] == ["step-2", "step-3"]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
