"""Device, compute dtype, autocast and seeding: where a run computes and in what precision.

Weights stay fp32; on CUDA the forwards run under bf16 autocast, on CPU in fp32.
"""

from __future__ import annotations

import contextlib
import random
import resource
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

Amp = Callable[[], AbstractContextManager]  # autocast for the run's device and dtype


def resolve_device(name: str) -> torch.device:
    """ "auto" picks CUDA when present; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no CUDA device")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Compute dtype: bf16 on CUDA when asked or "auto", always fp32 on CPU."""
    if device.type != "cuda":
        if name == "bfloat16":
            warnings.warn("bfloat16 was asked for on CPU; computing in float32", stacklevel=2)
        return torch.float32
    if name == "float32":
        return torch.float32
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (fp32 master weights and optimizer state); nothing on CPU."""
    if device.type == "cuda" and dtype == torch.bfloat16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
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
