"""Atomic checkpoints: only complete ones are resumed from, leftovers of a crash are removed."""

from __future__ import annotations

import random

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_model

from tests.training.engine.helpers import CPU, snapshot, unchanged
from training.engine import checkpoint
from training.engine.lm import Role, load_causal_lm, load_tokenizer, trainable_parameters
from training.engine.memory import LoraSettings


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


def lora_lm(model_dir, seed: int):
    torch.manual_seed(seed)  # adapters' A matrices start random
    lora = LoraSettings(rank=4, alpha=16, dropout=0.0, target_modules="all-linear")
    return load_causal_lm(model_dir, load_tokenizer(model_dir), CPU, Role(lora=lora))


def test_a_lora_checkpoint_holds_the_adapters_only_and_resumes_them(toy_model_dir, tmp_path):
    model = lora_lm(toy_model_dir, seed=0)
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=0.1)
    checkpoint.save_checkpoint(
        tmp_path, 1, models={"model": model}, optimizers={"o": optimizer}, state={}
    )
    with safe_open(str(tmp_path / "checkpoints" / "step-1" / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    assert saved == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".lora_A." in n or ".lora_B." in n for n in saved)

    other = lora_lm(toy_model_dir, seed=1)
    other_optimizer = torch.optim.AdamW(trainable_parameters(other), lr=0.1)
    checkpoint.resume(tmp_path, models={"model": other}, optimizers={"o": other_optimizer})
    assert unchanged(snapshot(model), snapshot(other)) == list(snapshot(model))


def test_a_checkpoint_of_other_parameters_is_refused_and_an_old_full_one_still_resumes(
    toy_model_dir, tmp_path
):
    full = load_causal_lm(toy_model_dir, load_tokenizer(toy_model_dir), CPU)
    optimizer = torch.optim.AdamW(full.parameters(), lr=0.1)
    checkpoint.save_checkpoint(tmp_path, 1, models={"model": full}, optimizers={"o": optimizer},
                               state={})  # fmt: skip
    lora = lora_lm(toy_model_dir, seed=0)  # the run's LoRA setting changed since
    with pytest.raises(ValueError, match="trainable parameters"):
        checkpoint.resume(tmp_path, models={"model": lora}, optimizers={})
    # Before LoRA a checkpoint held the whole state dict (the tied output projection by its name).
    step = tmp_path / "checkpoints" / "step-1"
    save_model(full, str(step / "model.safetensors"))
    torch.manual_seed(5)
    other = load_causal_lm(toy_model_dir, load_tokenizer(toy_model_dir), CPU)
    with torch.no_grad():
        for p in other.parameters():
            p.normal_()
    checkpoint.resume(tmp_path, models={"model": other}, optimizers={"o": optimizer})
    assert unchanged(snapshot(full), snapshot(other)) == list(snapshot(full))
