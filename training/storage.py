"""Where the files of runs and model versions live. Every path of a run or a model goes through
here: today a local folder (settings.RUN_ROOT, settings.MODEL_ROOT, both under VAR_DIR); an object
store later, behind these same functions.

Paths come from run ids and the database, never from a request (BAD-INPUTS 20). A model version
stores a path relative to MODEL_ROOT (or, for a base model an admin registered on the server, a
hub name); `model_path` refuses anything that could escape the root.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from django.conf import settings

from labeling.errors import Invalid
from labeling.models import ModelVersion

from .models import TrainingRun
from .stages import STAGES

# Versions a run registers: their files must be under the model root (never a hub name).
TRAINED_KINDS = {stage.model_kind for stage in STAGES.values() if stage.model_kind}


def run_key(run: TrainingRun) -> str:
    """A run's directory name: its id plus its creation time, so a database rebuilt over an old
    var/ (ids start at 1 again) never picks up another run's checkpoints or model."""
    return f"run-{run.pk}-{run.created_at:%Y%m%d%H%M%S%f}"


def run_dir(run: TrainingRun) -> Path:
    """Where the run's engine writes: checkpoints/, model/, samples, its result and logs."""
    return settings.RUN_ROOT / run_key(run)


def model_root() -> Path:
    return settings.MODEL_ROOT


def model_path(version: ModelVersion) -> str:
    """The path or hub name `from_pretrained` gets for a model version, checked for escapes.

    Trained versions and local base models live under MODEL_ROOT; the stored path must be a plain
    relative path with no `..`, no absolute part and no symlink on the way. Anything that is not
    a directory under MODEL_ROOT is passed on as a hub name (it fails offline with a clear error).
    """
    raw = version.path.strip()
    rel = Path(raw)
    if not raw or rel.is_absolute() or ".." in rel.parts or raw.startswith(("~", ".")):
        raise Invalid(f"Model version {version.name!r} has an unsafe path {raw!r}.")
    root = settings.MODEL_ROOT.resolve()
    candidate = root / rel
    current = root
    for part in rel.parts:
        current = current / part
        if current.is_symlink():
            raise Invalid(f"Model version {version.name!r} points through a symlink; refused.")
    if candidate.is_dir():
        if not str(candidate.resolve()).startswith(str(root) + os.sep):
            raise Invalid(f"Model version {version.name!r} resolves outside the model root.")
        return str(candidate)
    if version.kind in TRAINED_KINDS:
        raise Invalid(f"The files of model version {version.name!r} are missing.")
    if len(rel.parts) > 2:
        raise Invalid(f"{raw!r} is neither a model directory nor a hub name.")
    return raw


def model_publish(*, run: TrainingRun, produced: Path) -> str:
    """Move the model a run wrote into the model root; returns the path its version stores.

    Idempotent: a redelivered finish finds the model already in place. Both folders are under
    VAR_DIR, on one filesystem, so the move is one atomic rename.
    """
    target = settings.MODEL_ROOT / run_key(run)
    if not target.exists():
        os.replace(produced, target)
    return run_key(run)


def checkpoints_discard(*, run: TrainingRun) -> None:
    """A cancelled run's checkpoints are of no further use (its model, if any, stays)."""
    shutil.rmtree(run_dir(run) / "checkpoints", ignore_errors=True)
