"""The one switch over the CPU fast paths (training/engine/cpu_fast/__init__.py): on for CPU, off
on CUDA and any other device, and off everywhere with INSTRUCTLOOP_CPU_FAST=0."""

from __future__ import annotations

import pytest
import torch

from tests.training.engine.helpers import CPU
from tests.training.engine.toy_model import build_toy_model, demonstrations
from training.engine import cpu_fast, sft
from training.engine.config import SFTConfig
from training.engine.cpu_fast import first_pass, fused_ce, gpt2
from training.engine.cpu_fast.threads import SideBySide
from training.engine.generation import _HFDecoder, _StaticDecoder, make_decoder
from training.engine.lm import Role, load_causal_lm, load_tokenizer, trunk_of
from training.engine.memory import LoraSettings
from training.engine.reward_model import RewardModel

CUDA = torch.device("cuda")


def on_cuda(model: torch.nn.Module) -> torch.nn.Module:
    """The model, claiming to sit on a CUDA device (`PreTrainedModel.device`), so that the
    decisions can be checked on a machine without one."""
    model.__class__ = type(f"{type(model).__name__}OnCuda", (type(model),), {"device": CUDA})
    return model


def test_the_fast_paths_are_on_for_the_cpu_only():
    assert cpu_fast.enabled(CPU)
    assert not cpu_fast.enabled(CUDA)
    assert not cpu_fast.enabled(torch.device("cuda", 1))
    assert not cpu_fast.enabled(torch.device("meta"))


def test_a_gpt2_on_cuda_takes_the_plain_paths(toy_model_dir, two_threads):
    """On CUDA no hand-written GPT-2 path runs (the packed trunk would build a (heads * batch,
    len, len) attention bias there; the sampler drives the HF forward with a StaticCache), no
    threads side by side, no fused loss, no kept graph."""
    tokenizer = load_tokenizer(toy_model_dir)
    model = on_cuda(load_causal_lm(toy_model_dir, tokenizer, CPU))
    value_model = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU)
    on_cuda(value_model.trunk)
    assert model.device == CUDA and gpt2.supports(model)  # the architecture is GPT-2's
    assert not cpu_fast.gpt2_applies(model)
    assert not cpu_fast.gpt2_applies(value_model.trunk)
    assert type(make_decoder(model, 2, 16)) is _StaticDecoder
    assert not SideBySide(CUDA).enabled
    assert fused_ce.head_weight(model, CUDA) is None
    assert not first_pass.applies(CUDA, batch_size=16, mini_batch_size=16)


def test_instructloop_cpu_fast_0_takes_the_plain_paths_on_the_cpu(
    toy_model_dir, fast_paths, two_threads
):
    tokenizer = load_tokenizer(toy_model_dir)
    model = load_causal_lm(toy_model_dir, tokenizer, CPU)
    for on in (True, False):
        fast_paths(on)
        assert cpu_fast.enabled(CPU) == on
        assert cpu_fast.gpt2_applies(model) == on
        assert (type(make_decoder(model, 2, 16)) is gpt2.Decoder) == on
        assert SideBySide(CPU).enabled == on
        assert (fused_ce.head_weight(model, CPU) is not None) == on
        assert first_pass.applies(CPU, batch_size=16, mini_batch_size=16) == on


@pytest.mark.parametrize(
    "role",
    [
        Role(torch.bfloat16),
        Role(gradient_checkpointing=True),
        Role(lora=LoraSettings(rank=4, alpha=16, dropout=0.0, target_modules="all-linear")),
    ],
    ids=["bf16", "checkpointed", "lora"],
)
def test_a_gpt2_held_to_save_gpu_memory_takes_the_plain_paths_on_the_cpu(toy_model_dir, role):
    """The hand-written GPT-2 paths read the blocks' own fp32 weights and keep every activation:
    they would skip LoRA adapters and checkpointing. A GPU setting run in CI takes the plain
    path; the fp32 model beside it still takes the fast one."""
    tokenizer = load_tokenizer(toy_model_dir)
    model = load_causal_lm(toy_model_dir, tokenizer, CPU, role)
    value_model = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU, role.dtype)
    assert not cpu_fast.gpt2_applies(model) and not cpu_fast.gpt2_applies(trunk_of(model))
    assert type(make_decoder(model, 2, 16)) is _HFDecoder
    assert cpu_fast.gpt2_applies(value_model.trunk) == (role.dtype == torch.float32)


@pytest.mark.slow
def test_an_sft_run_logs_the_plain_paths_losses(tmp_path, fast_paths, two_threads):
    """Every SFT shortcut at once (halves side by side, fused loss, the GPT-2 trunk) against the
    plain path over a few optimizer steps: losses and gradient norms within rel 1e-4. Without
    dropout, so that both paths compute the same function (and the halves may run)."""
    model_dir = build_toy_model(tmp_path / "no-dropout", dropout=0.0)
    histories = []
    for on in (True, False):
        fast_paths(on)
        cfg = SFTConfig(
            model_path=str(model_dir),
            output_dir=str(tmp_path / str(on)),
            max_steps=4,
            batch_size=8,
            lr=1e-3,
            val_fraction=0.25,
            eval_every=2,
        )
        histories.append(sft.run(cfg, {"demonstrations": demonstrations(40)})["history"])
    fast, plain = histories
    assert [entry.keys() for entry in fast] == [entry.keys() for entry in plain]
    for ours, theirs in zip(fast, plain, strict=True):
        assert ours == pytest.approx(theirs, rel=1e-4)
