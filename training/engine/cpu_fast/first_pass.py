"""PPO's first gradient step through the rollout's own forwards (a CPU fast path).

The first gradient step of the first PPO epoch is taken at the weights the rollout was scored
with. When its minibatch is the whole batch, the rollout runs the policy's and the value model's
forwards with autograd and keeps their graphs (`FirstPass`), and that step backpropagates through
them instead of running the same two forwards again: one forward of each network saved per PPO
step. Off the CPU the graphs' activations would be held in GPU memory through the rollout's other
forwards, so the plain path recomputes. Parity test:
tests/training/engine/cpu_fast/test_first_pass.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from training.engine import cpu_fast


@dataclass
class FirstPass:
    """The rollout's policy log-probs and values with their autograd graphs, valid only at the
    rollout's weights (before the first optimizer step)."""

    logprobs: torch.Tensor  # (batch, T) requires grad; 0 after EOS
    values: torch.Tensor  # (batch, T)


def applies(device: torch.device, batch_size: int, mini_batch_size: int) -> bool:
    """Whether a rollout keeps its forwards' graphs for the first gradient step: on CPU, when
    that step's minibatch is the whole rollout batch."""
    return cpu_fast.enabled(device) and mini_batch_size == batch_size
