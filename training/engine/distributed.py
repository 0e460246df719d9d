"""A stage over several processes: torch.distributed with FSDP2, as TRL/accelerate, verl and
OpenRLHF do it (issue 17).

The worker's launcher (training/launcher.py) starts N copies of `python -m training.engine` with
torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); a stage reads it
here. With WORLD_SIZE unset or 1 nothing here runs and the stage is the single-process one.

- `process_group` joins the group with a timeout on every collective: a rank that died or hangs
  makes the others fail after `timeout_s`, not wait forever.
- `shard` wraps each transformer block, then the whole model, in `fully_shard` (FSDP2): every
  rank holds 1/N of each parameter (a DTensor sharded on dim 0), of its gradient and of its
  optimizer state; a block's weights are gathered for its forward and backward only.
- `clip_grad` clips over the sharded gradients' global norm (DTensor ops: one all-reduce).
- `save_checkpoint` / `load_checkpoint` go through torch.distributed.checkpoint (DCP): each rank
  writes its shards, and a load reshards to whatever the reader's world is, one process included.
- `full_state_dict` gathers the trained weights for rank 0 to save as a plain model.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import fully_shard

from training.engine.files import STATE_FILE, TMP_PREFIX, fsync_path, fsync_tree

SHARDED_DIR = "sharded"  # inside a checkpoint's step-N directory: DCP's files


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 writes progress, checkpoint metadata, the result and the finished model."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """This process's place in the group, from torchrun's variables (absent: a world of one)."""
    return World(
        rank=int(os.environ.get("RANK", "0")),
        size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


@contextmanager
def process_group(device: torch.device, timeout_s: float) -> Iterator[tuple[World, torch.device]]:
    """Join the process group (gloo on CPU, NCCL on CUDA; one GPU per rank) for the block; yields
    the world and the device this rank computes on."""
    world = world_from_env()
    if not world.sharded:
        yield world, device
        return
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        timeout=timedelta(seconds=timeout_s),
        rank=world.rank,
        world_size=world.size,
        device_id=device if device.type == "cuda" else None,
    )
    try:
        yield world, device
    finally:
        dist.destroy_process_group()


def shard(model: nn.Module) -> nn.Module:
    """FSDP2: each block (the classes transformers names in `_no_split_modules`, of the model or
    of its trunk) its own unit, then the root, which holds the embeddings, the (tied) output
    projection and a reward model's head."""
    block_names = {
        name
        for module in model.modules()
        for name in getattr(module, "_no_split_modules", None) or ()
    }
    for module in model.modules():
        if type(module).__name__ in block_names:
            fully_shard(module)
    fully_shard(model)
    return model


def clip_grad(parameters: list[nn.Parameter], max_norm: float) -> float:
    """The global norm over every rank's gradient shards (0 = measure, do not clip)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)
    full = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
    return float(full)


def all_sum(value: float, device: torch.device) -> float:
    """The sum of a number over the ranks."""
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item())


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight, gathered onto the CPU of rank 0 (a collective: every rank calls it; the
    other ranks get an empty dict)."""
    return get_model_state_dict(  # type: ignore[return-value]  # tensors, full_state_dict
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def _pairs(
    models: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]
) -> list[tuple[str, nn.Module, str, torch.optim.Optimizer]]:
    """Each model with the optimizer of its parameters, in the order the stage names them."""
    if len(models) != len(optimizers):
        raise ValueError("a sharded checkpoint pairs each model with one optimizer")
    return [(m, models[m], o, optimizers[o]) for m, o in zip(models, optimizers, strict=True)]


def _state(
    models: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]
) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for model_name, model, optimizer_name, optimizer in _pairs(models, optimizers):
        state[model_name], state[optimizer_name] = get_state_dict(model, optimizer)
    return state


def save_checkpoint(
    step_dir: Path,
    *,
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict[str, Any],
    world: World,
) -> None:
    """Write `step_dir` (models, optimizers, then state.json last) from every rank at once.
    The directory is written under a temporary name and renamed by rank 0 once every rank's
    shards are in, so a crash leaves no complete-looking checkpoint."""
    tmp = step_dir.parent / f"{TMP_PREFIX}{step_dir.name}"
    if world.main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    dcp.save(_state(models, optimizers), checkpoint_id=tmp / SHARDED_DIR)  # ends in a barrier
    if world.main:
        (tmp / STATE_FILE).write_text(json.dumps(state))
        fsync_tree(tmp)
        if step_dir.exists():
            shutil.rmtree(step_dir)
        os.replace(tmp, step_dir)
        fsync_path(step_dir.parent)
    dist.barrier()


def load_checkpoint(
    step_dir: Path,
    *,
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
) -> None:
    """Load a DCP checkpoint written by any number of ranks into this world's models (sharded or
    not) and optimizers; DCP reshards on the way in."""
    state = _state(models, optimizers)
    dcp.load(state, checkpoint_id=step_dir / SHARDED_DIR)
    for model_name, model, optimizer_name, optimizer in _pairs(models, optimizers):
        set_state_dict(
            model,
            optimizer,
            model_state_dict=state[model_name],
            optim_state_dict=state[optimizer_name],
        )
