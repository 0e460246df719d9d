"""SFT's batch in two halves, side by side (a CPU fast path).

On two or more CPU threads each step's rows are dealt into two halves of similar length, each cut
to its own longest row and weighted by its share of the batch's response tokens, and the two
halves' forwards and backwards run side by side (`SideBySide`), one core each; their gradients
sum to the whole batch's. At these sizes two OpenMP threads per op gain less: in one process,
alternating step by step on a 2-vCPU EPYC, a 16 x 128 step took 172-174 ms this way against
203-209 ms on two OpenMP threads (docs/training.md). Parity test:
tests/training/engine/cpu_fast/test_halves.py.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from training.engine.cpu_fast.threads import SideBySide
from training.engine.losses import IGNORE_INDEX

Batch = dict[str, torch.Tensor]


def half_batches(batch: Batch) -> list[tuple[Batch, float]]:
    """The batch's rows in two halves of similar work (sorted by length, dealt alternately), each
    cut to its own longest row, with its share of the batch's response tokens: the share-weighted
    sum of the halves' token-mean losses is the batch's. One part (the whole batch, share 1) when
    a half would hold no response token."""
    counts = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(1)  # (batch,) response tokens per row
    lengths = batch["attention_mask"].sum(1)  # right-padded: the row's real length
    order = lengths.argsort(descending=True, stable=True)
    halves = (order[0::2], order[1::2])
    tokens = [int(counts[rows].sum()) for rows in halves]
    if len(order) < 2 or 0 in tokens:
        return [(batch, 1.0)]
    parts = []
    for rows, n in zip(halves, tokens, strict=True):
        width = int(lengths[rows].max())
        half = {name: tensor[rows, :width] for name, tensor in batch.items()}
        parts.append((half, n / sum(tokens)))
    return parts


def backward_in_halves(batch: Batch, backward: Callable[..., float], side: SideBySide) -> float:
    """`backward(part, share=share)` (backpropagate share x the part's loss, return share x the
    loss) on the two `half_batches` side by side, one core each; their share-weighted gradients
    accumulate into the same .grad: a sum of two terms, exact in either order. Returns the
    batch's loss."""
    parts = half_batches(batch)
    if len(parts) == 1:
        return backward(batch, share=1.0)
    (first, first_share), (second, second_share) = parts
    first_loss, second_loss = side(
        partial(backward, first, share=first_share), partial(backward, second, share=second_share)
    )
    return first_loss + second_loss
