"""SFT's output projection fused with its cross-entropy (a CPU fast path).

`linear_cross_entropy(hidden, weight, labels)` is `sft_loss(hidden @ weight.T, labels)` in one
autograd function that keeps the forward's softmax as the backward's buffer: no separate
log-softmax gradient, no zeroed one-hot gradient of the gather, and the (tokens, vocab) logits
allocated once. It applies when the head is a bias-free fp32 matmul (no autocast). Parity test:
tests/training/engine/cpu_fast/test_fused_ce.py.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel

from training.engine import cpu_fast
from training.engine.lm import bias_free_head


def head_weight(model: PreTrainedModel, device: torch.device) -> torch.Tensor | None:
    """The output projection's weight when the fused loss applies (the CPU fast paths are on,
    autocast is off, and the logits are exactly hidden @ weight.T), else None.
    # (vocab, hidden)"""
    if not cpu_fast.enabled(device) or torch.is_autocast_enabled(device.type):
        return None
    weight = bias_free_head(model)
    return weight if weight is not None and weight.dtype == torch.float32 else None


class _LinearCrossEntropy(torch.autograd.Function):
    """`sft_loss(hidden @ weight.T, labels)` for labels without IGNORE_INDEX, with the softmax
    kept from the forward as the backward's buffer: no separate log-softmax gradient, no zeroed
    one-hot gradient of the gather, and the (tokens, vocab) logits allocated once."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor):
        logprobs = torch.log_softmax(hidden @ weight.T, dim=-1)  # (tokens, vocab)
        loss = -logprobs.gather(1, labels.unsqueeze(1)).mean()
        ctx.save_for_backward(hidden, weight, labels)
        ctx.probs = logprobs.exp_()  # its last use as log-probs
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor):
        hidden, weight, labels = ctx.saved_tensors
        # d loss / d logits = (softmax - one_hot(labels)) / tokens, written over the softmax.
        grad_logits, ctx.probs = ctx.probs, None
        rows = torch.arange(labels.shape[0], device=labels.device)
        grad_logits[rows, labels] -= 1
        grad_logits.mul_(grad / labels.shape[0])
        grad_hidden = grad_logits @ weight if ctx.needs_input_grad[0] else None
        grad_weight = grad_logits.T @ hidden if ctx.needs_input_grad[1] else None
        return grad_hidden, grad_weight, None


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Token-mean cross-entropy of the logits hidden @ weight.T (a bias-free output projection)
    against labels, all of which count: `sft_loss` fused with the projection, in the dtype of
    its inputs. hidden: (tokens, embd); weight: (vocab, embd); labels: (tokens,)."""
    return _LinearCrossEntropy.apply(hidden, weight, labels)
