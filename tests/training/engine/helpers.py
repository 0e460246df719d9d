from __future__ import annotations

from pathlib import Path

import torch

from training.engine.lm import load_causal_lm, load_tokenizer
from training.engine.reward_model import RewardModel

CPU = torch.device("cpu")


def causal_lm_parameters(
    model_dir: Path | str, tokenizer_dir: Path | str
) -> dict[str, torch.Tensor]:
    model = load_causal_lm(model_dir, load_tokenizer(tokenizer_dir), CPU)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def reward_model_parameters(model: RewardModel) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def unchanged(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    """Names of parameters that did not change (TRL's tests assert this list is empty)."""
    assert before.keys() == after.keys()
    return [name for name in before if torch.equal(before[name], after[name])]
