"""Shared by the engine tests: parameter snapshots, gradient comparisons, toy PPO batches."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors import safe_open

from tests.training.engine.toy_model import questions
from training.engine import checkpoint
from training.engine.data import collate_prompts, encode_prompts
from training.engine.lm import load_causal_lm, load_tokenizer, logits_at
from training.engine.losses import logprobs_from_logits
from training.engine.ppo import UpdateBatch
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


def gradients(*models: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter's gradient, named "<model's place>.<parameter>"."""
    return {
        f"{i}.{name}": p.grad
        for i, model in enumerate(models)
        for name, p in model.named_parameters()
        if p.grad is not None
    }


def assert_close_gradients(
    fast: dict[str, torch.Tensor],
    plain: dict[str, torch.Tensor],
    *,
    rtol: float = 1e-4,
    scaled_atol: float = 1e-6,
) -> None:
    """Every named gradient within rtol of the plain one, or within scaled_atol x the plain
    gradient's largest entry (float error is relative to the gradient's size)."""
    assert fast.keys() == plain.keys()
    for name in fast:
        atol = scaled_atol * plain[name].abs().max().item()
        torch.testing.assert_close(fast[name], plain[name], rtol=rtol, atol=atol, msg=name)


def padded_response_logprobs(
    model, query_responses, attention_mask, responses, prompt_length, temperature
):
    """The plain computation the packed path replaced: logits at every response column (padding
    included), then log-probs at the sampling temperature.  # (batch, T), (batch, T, vocab)"""
    end = query_responses.shape[1] - 1
    logits = logits_at(model, query_responses, attention_mask, prompt_length - 1, end)
    logits = logits.float() / temperature
    return logprobs_from_logits(logits, responses), logits


def update_batch(tokenizer, episodes: int = 8) -> UpdateBatch:
    """An UpdateBatch of left-padded prompts and responses of varied lengths."""
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([1, 7, 3, 9, 2, 9, 5, 4])[:episodes]
    mask = (torch.arange(9) < lengths.unsqueeze(1)).float()  # (8, 9), responses of varied length
    prompts = collate_prompts(
        encode_prompts(tokenizer, questions(episodes), 64), tokenizer.pad_token_id
    )
    responses = torch.randint(2, 300, (episodes, 9), generator=generator)
    return UpdateBatch(
        query_responses=torch.cat([prompts["input_ids"], responses], 1),
        attention_mask=torch.cat([prompts["attention_mask"], mask.long()], 1),
        responses=responses,
        response_mask=mask,
        old_logprobs=torch.randn(episodes, 9, generator=generator) - 5,
        old_values=torch.randn(episodes, 9, generator=generator),
        advantages=torch.randn(episodes, 9, generator=generator),
        returns=torch.randn(episodes, 9, generator=generator),
        prompt_length=prompts["input_ids"].shape[1],
    )


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


class Watch:
    """A stage run's trained models, seen when its loop starts (they are handed to
    `resume_history`) and when it ends (just before `end_training` merges LoRA for saving)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stage: ModuleType) -> None:
        self.models: dict[str, torch.nn.Module] = {}
        self.start: dict[str, dict[str, torch.Tensor]] = {}
        self.end: dict[str, dict[str, torch.Tensor]] = {}
        self.trainable: dict[str, set[str]] = {}
        resume_history, end_training = checkpoint.resume_history, stage.end_training

        def at_start(output_dir, *, models, optimizers):
            self.models = models
            self.start = {name: snapshot(model) for name, model in models.items()}
            return resume_history(output_dir, models=models, optimizers=optimizers)

        def at_end(model):
            if not self.end:  # PPO ends two models
                self.end = {name: snapshot(m) for name, m in self.models.items()}
                self.trainable = {
                    name: {n for n, p in m.named_parameters() if p.requires_grad}
                    for name, m in self.models.items()
                }
            end_training(model)

        monkeypatch.setattr(checkpoint, "resume_history", at_start)
        monkeypatch.setattr(stage, "end_training", at_end)

    def changed(self, name: str) -> set[str]:
        start, end = self.start[name], self.end[name]
        return {n for n in start if not torch.equal(start[n], end[n])}

    def dtypes(self, name: str) -> dict[str, torch.dtype]:
        return {n: t.dtype for n, t in self.end[name].items()}


def safetensors_of(model_dir: Path | str) -> dict[str, torch.Tensor]:
    """Every tensor of a saved model directory's safetensors files."""
    tensors = {}
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            tensors |= {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
    return tensors


def assert_plain_model_dir(model_dir: Path | str, base_dir: Path | str) -> None:
    """A saved model version is a plain Hugging Face directory: no peft adapter files, the base
    model's tensor names and shapes (no `base_layer` or `lora_` entries), merged weights that
    differ from the base's."""
    names = {p.name for p in Path(model_dir).iterdir()}
    assert not [name for name in names if name.startswith("adapter_")], names
    saved, base = safetensors_of(model_dir), safetensors_of(base_dir)
    assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in base.items()}
    assert any(not torch.equal(saved[k].float(), base[k].float()) for k in base)
