"""Device, dtypes, autocast and seeding: where a run computes and in what precision.

Three dtypes per run (`Precision`): the compute dtype of the forwards (bf16 autocast on CUDA by
default, fp32 on CPU, bf16 on CPU only when asked); the trained models' parameters and optimizer
state ("master weights": fp32 by default, bf16 for pure-bf16 training); and the frozen models'
weights (the compute dtype by default: bf16 on CUDA, fp32 on CPU).
"""

from __future__ import annotations

import contextlib
import random
import resource
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

Amp = Callable[[], AbstractContextManager]  # autocast for the run's device and dtype

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """ "auto" picks CUDA when present; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no CUDA device")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Compute dtype: "auto" is bf16 on CUDA and fp32 elsewhere (a small model on a few CPU cores
    runs fastest in fp32); "float32" and "bfloat16" are honoured on any device (torch's CPU
    kernels have bf16, so a GPU configuration runs on CPU in CI)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


@dataclass(frozen=True)
class Precision:
    """Where a run computes and in which dtypes."""

    device: torch.device
    compute: torch.dtype  # the forwards' autocast dtype
    trained: torch.dtype  # trained models' parameters, hence their gradients and Adam moments
    frozen: torch.dtype  # frozen models' weights (they compute in it)

    def amp(self) -> AbstractContextManager:
        return autocast(self.device, self.compute)


def resolve_precision(
    device: torch.device,
    dtype: str = "auto",
    *,
    master_weights: str = "float32",
    frozen_dtype: str = "auto",
) -> Precision:
    """A config's dtypes on `device` (the names config.py checks). bf16 master weights compute in
    bf16 whatever `dtype` says ("auto"; the config refuses "float32" with them)."""
    compute = torch.bfloat16 if master_weights == "bfloat16" else resolve_dtype(dtype, device)
    frozen = compute if frozen_dtype == "auto" else DTYPES[frozen_dtype]
    return Precision(device, compute, DTYPES[master_weights], frozen)


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Autocast to bf16 when that is the compute dtype (on CUDA, or on CPU when asked): fp32
    weights, bf16 matmuls; nothing when computing in fp32."""
    if dtype == torch.bfloat16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA; peak resident set size of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
