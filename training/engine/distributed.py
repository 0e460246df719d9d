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
  writes its shards, and a load reshards to whatever the reader's world is. A stage run in one
  process writes the same format (DCP without a process group), so its checkpoint resumes in N.
- `full_state_dict` gathers the trained weights for rank 0 to save as a plain model.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
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
from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method

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
        # Leave together: a rank that tears its group down while another still works (rank 0
        # saving the model) was seen to abort in gloo's threads ("terminate called without an
        # active exception"). Not after an error: the others may never reach it.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def shard(model: nn.Module, forward_methods: tuple[str, ...] = ()) -> nn.Module:
    """FSDP2: each block (the classes transformers names in `_no_split_modules`, of the model or
    of its trunk) its own unit, then the root, which holds the embeddings, the (tied) output
    projection and a reward model's head. forward_methods: methods other than forward that run
    the model (a value model's `response_values`), so that they gather the root's weights too."""
    block_names = {
        name
        for module in model.modules()
        for name in getattr(module, "_no_split_modules", None) or ()
    }
    for module in model.modules():
        if type(module).__name__ in block_names:
            fully_shard(module)
    fully_shard(model)
    for method in forward_methods:
        register_fsdp_forward_method(model, method)
    return model


@contextmanager
def unsharded(model: nn.Module) -> Iterator[None]:
    """Every FSDP unit of `model` gathered whole for the block and kept so between forwards (a
    collective on entry, then none): sampling runs a forward per token, and ranks whose responses
    end at different lengths run different numbers of them. A model not sharded: nothing."""
    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    # Outside inference mode even when called in it: FSDP keeps its gather buffers for training.
    with torch.inference_mode(False):
        for unit in units:
            unit.set_reshard_after_forward(False, recurse=False)
            unit.unshard()
    try:
        yield
    finally:
        with torch.inference_mode(False):
            for unit in units:
                unit.reshard()
                unit.set_reshard_after_forward(True, recurse=False)


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


def all_sum_each(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Each named number summed over the ranks (one collective; every rank names the same)."""
    tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return dict(zip(values, tensor.tolist(), strict=True))


def all_max(value: int, device: torch.device) -> int:
    """The largest of a number over the ranks."""
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def gather_rows(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """The whole batch from every rank's share of it, rank r holding rows r, r + size, ...
    (the same number on every rank, same shape beyond the first dimension): rows back in the
    batch's order, on every rank.  # (size * tensor.shape[0], ...)"""
    wire = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor  # gloo has no bool
    parts = [torch.empty_like(wire) for _ in range(world.size)]
    dist.all_gather(parts, wire.contiguous())
    rows = torch.stack(parts, dim=1)  # (rows per rank, size, ...): row j of rank r is j*size + r
    return rows.reshape(-1, *tensor.shape[1:]).to(tensor.dtype)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight, gathered onto the CPU of rank 0 (a collective: every rank calls it; the
    other ranks get an empty dict)."""
    return get_model_state_dict(  # type: ignore[return-value]  # tensors, full_state_dict
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def _pairs(
    models: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]
) -> list[tuple[str, nn.Module, str, torch.optim.Optimizer]]:
    """Each model with the optimizer of its parameters, in the order the stage names them; one
    optimizer over several models (PPO's policy and value model) with them all, under their
    names."""
    if len(optimizers) == 1 and len(models) > 1:
        ((optimizer_name, optimizer),) = optimizers.items()
        return [("+".join(models), nn.ModuleDict(models), optimizer_name, optimizer)]
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
    write_own: Callable[[Path], None] | None = None,
) -> None:
    """Write `step_dir` (models, optimizers, then state.json last) from every rank at once (or
    from a world of one, without a process group). The directory is written under a temporary
    name and renamed by rank 0 once every rank's shards are in, so a crash leaves no
    complete-looking checkpoint. write_own(tmp_dir): each rank's own files (its RNG states)."""
    tmp = step_dir.parent / f"{TMP_PREFIX}{step_dir.name}"
    if world.main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    if write_own is not None:
        write_own(tmp)
    with _alone_is_meant():  # ends in a barrier; a world of one without a group saves alone
        dcp.save(
            _state(models, optimizers), checkpoint_id=tmp / SHARDED_DIR, no_dist=not _in_group()
        )
    if world.main:
        (tmp / STATE_FILE).write_text(json.dumps(state))
        fsync_tree(tmp)
        if step_dir.exists():
            shutil.rmtree(step_dir)
        os.replace(tmp, step_dir)
        fsync_path(step_dir.parent)
    _barrier()


@contextmanager
def _alone_is_meant() -> Iterator[None]:
    """DCP warns at every save and load without a process group that it assumes one process:
    here that is meant (a stage run in one process)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        yield


def _in_group() -> bool:
    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    if _in_group():
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
    with _alone_is_meant():
        dcp.load(state, checkpoint_id=step_dir / SHARDED_DIR, no_dist=not _in_group())
    for model_name, model, optimizer_name, optimizer in _pairs(models, optimizers):
        set_state_dict(
            model,
            optimizer,
            model_state_dict=state[model_name],
            optim_state_dict=state[optimizer_name],
        )
