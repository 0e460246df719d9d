"""Two independent pieces of work side by side on a multi-core CPU (`SideBySide`): a CPU fast
path, off on other devices and with INSTRUCTLOOP_CPU_FAST=0."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

from training.engine import cpu_fast

A = TypeVar("A")
B = TypeVar("B")


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
        self.enabled = allowed and cpu_fast.enabled(device) and self.threads >= 2
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
