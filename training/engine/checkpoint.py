"""Atomic, resumable checkpoints under `output_dir/checkpoints/step-N`.

A checkpoint is written into a temporary sibling directory, every file and the directory fsync'ed,
then renamed into place with os.replace: a crash leaves either a complete `step-N` or a `.tmp-*`
directory, which the next start deletes. `state.json` is written last and marks a checkpoint
complete.

A stage that can run in several processes (training/engine/distributed.py; it passes its
`world`) writes its models and optimizers through torch.distributed.checkpoint instead, into
`step-N/sharded/`, in one process too, so that a resume may change the number of processes;
each rank's RNG states go beside them (`rng-R.pt`) and come back when the number is the same.
With LoRA a checkpoint keeps the small plain form (LoRA trains in one process). `resume` reads
either kind.

Contents: what a resume needs and no more: each model's trainable parameters (safetensors; with
LoRA, its adapters and any fully trained head, not the frozen base weights, which the run loads
again from its base model), each optimizer's state (torch.save, loaded back with
weights_only=True, so no code runs), the RNG states, the step and the metrics logged so far.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_file
from torch import nn

from training.engine import distributed, memory
from training.engine.files import STATE_FILE, TMP_PREFIX
from training.engine.files import fsync_path as _fsync_path
from training.engine.files import fsync_tree as _fsync_tree

CHECKPOINTS = "checkpoints"


def write_dir_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp_dir), fsync it, and rename it to `target` (replacing an older one)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{target.name}-", dir=target.parent))
    try:
        write(tmp)
        _fsync_tree(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        _fsync_path(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters an optimizer changes, by name (a tied weight once)."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, path: Path) -> None:
    """Load a checkpoint's tensors into the model (in its parameters' dtypes); every trainable
    parameter must be among them. (A checkpoint from before LoRA held every weight, a tied one
    under either of its names: safetensors' load_model takes both.)"""
    device = str(next(model.parameters()).device)
    missing, unexpected = load_model(model, str(path), strict=False, device=device)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    if unexpected or trainable & set(missing):
        raise ValueError(
            f"{path} does not hold this model's trainable parameters (was the run's LoRA setting"
            f" changed?): {len(unexpected)} unknown, {len(trainable & set(missing))} missing"
        )


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    *,
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict[str, Any],
    keep_last: int = 2,
    world: distributed.World | None = None,
) -> Path:
    """Save what is needed to continue after `step` optimizer steps; keep the newest `keep_last`.
    With a sharded `world`, every rank calls it and each writes its shards."""
    root = Path(output_dir) / CHECKPOINTS
    target = root / f"step-{step}"
    if world is not None and not any(memory.has_adapters(m) for m in models.values()):

        def write_rng(tmp: Path) -> None:
            torch.save(_rng_state(), tmp / f"rng-{world.rank}.pt")

        distributed.save_checkpoint(
            target, models=models, optimizers=optimizers, world=world, write_own=write_rng,
            state={"step": step, "world_size": world.size, **state},
        )  # fmt: skip
        if world.main:
            for old in complete_checkpoints(output_dir)[:-keep_last]:
                shutil.rmtree(old)
        return target

    def write(tmp: Path) -> None:
        for name, model in models.items():
            tensors = {key: t.contiguous() for key, t in trainable_state(model).items()}
            save_file(tensors, str(tmp / f"{name}.safetensors"))
        optimizer_states = {name: opt.state_dict() for name, opt in optimizers.items()}
        torch.save({"optimizers": optimizer_states, "rng": _rng_state()}, tmp / "trainer.pt")
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **state}))

    write_dir_atomically(target, write)
    for old in complete_checkpoints(output_dir)[:-keep_last]:
        shutil.rmtree(old)
    return target


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.glob("step-*")
        if p.is_dir() and p.name[5:].isdigit() and (p / STATE_FILE).is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[5:]))


def remove_partial_checkpoints(output_dir: str | Path) -> None:
    """Delete temporary directories left by a crash in the middle of a save."""
    root = Path(output_dir) / CHECKPOINTS
    if root.is_dir():
        for partial in root.glob(f"{TMP_PREFIX}*"):
            shutil.rmtree(partial, ignore_errors=True)


def resume(
    output_dir: str | Path,
    *,
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
) -> dict[str, Any] | None:
    """Load the latest complete checkpoint into models and optimizers (and restore the RNGs).
    Returns its state ({"step": N, ...}) or None when there is none. Partial saves are deleted.
    A sharded checkpoint (any number of writers) loads into sharded or plain models, with each
    rank's RNG states when the number of processes is the one that wrote it (else the RNGs stay
    as seeded: a different world draws differently anyway)."""
    in_group = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not in_group or torch.distributed.get_rank() == 0:
        remove_partial_checkpoints(output_dir)
    if in_group:
        torch.distributed.barrier()
    checkpoints = complete_checkpoints(output_dir)
    if not checkpoints:
        return None
    latest = checkpoints[-1]
    if (latest / distributed.SHARDED_DIR).is_dir():
        distributed.load_checkpoint(latest, models=models, optimizers=optimizers)
        state = json.loads((latest / STATE_FILE).read_text())
        world = distributed.world_from_env()
        rng = latest / f"rng-{world.rank}.pt"
        if state.get("world_size") == world.size and rng.is_file():
            _set_rng_state(torch.load(rng, weights_only=True))
        return state
    if in_group:
        raise ValueError(
            f"{latest} was written by one process: it resumes in one process, not in"
            f" {torch.distributed.get_world_size()}"
        )
    for name, model in models.items():
        load_trainable_state(model, latest / f"{name}.safetensors")
    trainer = torch.load(latest / "trainer.pt", weights_only=True, map_location="cpu")
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(trainer["optimizers"][name])
    _set_rng_state(trainer["rng"])
    return json.loads((latest / STATE_FILE).read_text())


def resume_history(
    output_dir: str | Path,
    *,
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
) -> tuple[int, list[dict[str, float]]]:
    """`resume`, as a loop starts: (the step it continues after, the metrics logged so far);
    (0, []) for a fresh run."""
    state = resume(output_dir, models=models, optimizers=optimizers)
    return (state["step"], state["history"]) if state else (0, [])


def save_if_due(
    output_dir: str | Path,
    step: int,
    *,
    every: int,
    total_steps: int,
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    history: list[dict[str, float]],
    world: distributed.World | None = None,
) -> None:
    """A resumable checkpoint every `every` steps (0: never); none after the last step, where
    the finished model is saved instead."""
    if every and step % every == 0 and step < total_steps:
        save_checkpoint(
            output_dir, step, models=models, optimizers=optimizers, state={"history": history},
            world=world,
        )  # fmt: skip


RESULT_FILE = "result.json"


def finished_result(output_dir: str | Path) -> dict[str, Any] | None:
    """The result of a run that already finished in output_dir (calling run() again is a no-op)."""
    path = Path(output_dir) / RESULT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_result(output_dir: str | Path, result: dict[str, Any]) -> None:
    path = Path(output_dir) / RESULT_FILE
    tmp = path.with_name(f"{TMP_PREFIX}{RESULT_FILE}")
    with open(tmp, "w") as f:
        f.write(json.dumps(result, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_path(path.parent)
