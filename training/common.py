"""Small pieces every stage's loop shares: data order, splits, learning rate, device moves."""

from __future__ import annotations

import math
import resource
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import torch

T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")
ProgressFn = Callable[[int, int, dict[str, float]], None]  # (step, total_steps, metrics)
Amp = Callable[[], AbstractContextManager]  # autocast for the run's device and dtype


def split_train_val(items: Sequence[T], val_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """A seeded split, so a resumed run holds out the same examples."""
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = round(len(items) * val_fraction) if len(items) > 1 else 0
    return [items[i] for i in order[n_val:]], [items[i] for i in order[:n_val]]


def steps_per_epoch(n_items: int, batch_size: int) -> int:
    return math.ceil(n_items / batch_size)


def batch_for_step(items: Sequence[T], step: int, batch_size: int, seed: int) -> list[T]:
    """Items of 0-based optimizer step `step`: a fresh seeded shuffle every epoch, computed from the
    step alone, so resuming needs no data-loader state."""
    per_epoch = steps_per_epoch(len(items), batch_size)
    epoch, index = divmod(step, per_epoch)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(items), generator=generator).tolist()
    return [items[i] for i in order[index * batch_size : (index + 1) * batch_size]]


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


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


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA; peak resident set size of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def last_value(history: list[dict[str, float]], name: str) -> float | None:
    """Most recent logged value of a metric (some metrics are logged only on eval steps)."""
    for entry in reversed(history):
        if name in entry:
            return entry[name]
    return None


class SideBySide:
    """Runs two independent pieces of work at once on a CPU with 2+ threads: the second in a helper
    thread, the first in the caller's, each on one intra-op thread (torch's ops release the GIL).

    PPO's policy and value passes are independent networks of a few small matmuls each. Two
    OpenMP threads per op gain little at these sizes and stall badly when another process holds a
    core; one network per core does better (bench/training.py). On a GPU, or with one thread, the
    two run in order. Grad mode, inference mode and autocast are thread-local: each piece of work
    sets its own.
    """

    def __init__(self, device: torch.device, allowed: bool = True) -> None:
        """allowed=False: always in order (e.g. work that draws random numbers, whose order
        between two threads would vary run to run)."""
        self.threads = torch.get_num_threads()
        self.enabled = allowed and device.type == "cpu" and self.threads >= 2
        self._pool: ThreadPoolExecutor | None = None

    @contextmanager
    def running(self) -> Iterator[SideBySide]:
        """While open: one intra-op thread per side (restored after), and the helper thread."""
        if not self.enabled:
            yield self
            return
        torch.set_num_threads(1)
        self._pool = ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(1,))
        try:
            yield self
        finally:
            self._pool.shutdown()
            self._pool = None
            torch.set_num_threads(self.threads)

    @contextmanager
    def alone(self) -> Iterator[None]:
        """Work with nothing beside it (PPO's sampling): every intra-op thread again meanwhile."""
        if self._pool is None:
            yield
            return
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(1)

    def __call__(self, first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
        if self._pool is None:
            return in_order(first, second)
        future = self._pool.submit(second)
        try:
            done = first()
        finally:
            other = future.result()  # waits (and re-raises) even when `first` failed
        return done, other


def in_order(first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
    """What SideBySide does when it cannot run two things at once."""
    return first(), second()
