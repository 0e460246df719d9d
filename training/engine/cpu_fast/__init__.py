"""The CPU fast paths, behind one switch: on for CPU, off on CUDA and any other device.

Each shortcut does the plain path's arithmetic with less work where a small model on a few CPU
cores spends its time (Python and op overheads, padding, threads that wait), and each has a
parity test against the plain path (tests/training/engine/cpu_fast/):
- `gpt2`: a hand-written GPT-2 trunk (the last block only where it is read; real tokens only,
  packed) and decoder (a preallocated KV cache);
- `threads`: two independent pieces of work side by side, one core each;
- `halves`: SFT's batch in two halves of similar length, side by side;
- `fused_ce`: SFT's output projection fused with the cross-entropy;
- `first_pass`: PPO's first gradient step through the rollout's own policy and value forwards.
They are measured and tuned for CPU only; on a GPU the plain path runs (the packed trunk, for one,
would build a (heads * batch, len, len) attention bias in GPU memory for every forward). The
GPT-2 paths drive the model's own modules and weights by hand, so they also take only a model held
as they were measured: fp32 weights, no LoRA adapters, no activation checkpointing
(`held_plainly`); a GPU setting run on a CPU in CI takes the plain path.

INSTRUCTLOOP_CPU_FAST=0 turns every shortcut off, on any device: tests and benchmarks compare
the two paths with it.
"""

from __future__ import annotations

import os

import torch
from torch.distributed.fsdp import FSDPModule
from transformers import PreTrainedModel

from training.engine import memory
from training.engine.cpu_fast import gpt2

SWITCH = "INSTRUCTLOOP_CPU_FAST"


def enabled(device: torch.device) -> bool:
    """Whether work on `device` may take a CPU fast path."""
    return device.type == "cpu" and os.environ.get(SWITCH) != "0"


def gpt2_applies(model: PreTrainedModel) -> bool:
    """Whether `model` (a GPT-2 LM or trunk) runs through the hand-written GPT-2 paths."""
    return enabled(model.device) and gpt2.supports(model) and held_plainly(model)


def held_plainly(model: PreTrainedModel) -> bool:
    """fp32 weights, no LoRA adapters (the hand-written paths would skip them), no activation
    checkpointing (they keep every activation), not sharded with FSDP (they read the weights
    without the forwards that gather them)."""
    return (
        model.dtype == torch.float32
        and not memory.has_adapters(model)
        and not memory.is_checkpointing(model)
        and not any(isinstance(module, FSDPModule) for module in model.modules())
    )
