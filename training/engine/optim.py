"""Learning rate and gradient clipping, shared by every stage's optimizer step."""

from __future__ import annotations

from typing import Any

import torch


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warmup over the first `warmup_steps` steps (1-based step), then 1."""
    return min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0


def clip_grad(parameters: Any, max_norm: float) -> float:
    """Clip the global gradient norm (0 = off) and return the norm before clipping: what
    torch.nn.utils.clip_grad_norm_ does, with one foreach call for the norms and one for the scaling
    (on CPU, clip_grad_norm_ loops over the parameters in Python, several ops each), and no
    multiplication by a clip factor of 1."""
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    if max_norm > 0:
        factor = max_norm / (norm + 1e-6)
        if not bool(factor >= 1.0):  # NaN/inf norms propagate into the gradients, as in torch
            torch._foreach_mul_(grads, factor)
    return float(norm)
