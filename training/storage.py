"""Where the files of runs and model versions live. Every path of a run or a model goes through
here.

- A run's working directory (checkpoints, its model until it is published, logs) is the
  worker's: settings.RUN_ROOT.
- A model version is published into the artifact store (training/artifacts.py): MODEL_ROOT by
  default, as before the store existed, or the folder or bucket settings.ARTIFACTS names, which
  every worker node reaches. Its key (`path`) comes from its run or registration; the version
  records the artifact's URI and the sha256 of its manifest. A worker loads a version from a
  local directory: the store's folder itself, or its cache of the bucket, checked file by file.
- The web host never opens those files: what it checks of a version (`model_check`) is in the
  database.

Versions from before the store (sha256 blank) are directories under MODEL_ROOT at `path`, or hub
names for base models an admin registered; they are resolved as they always were.

Paths come from run ids and the database, never from a request (BAD-INPUTS 20).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings

from labeling.errors import Invalid
from labeling.models import ModelVersion

from . import artifacts
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


def model_store() -> artifacts.Store:
    """Where model versions are published: `<ARTIFACTS>/models`, or MODEL_ROOT by default."""
    if settings.ARTIFACTS:
        return artifacts.Store(
            f"{settings.ARTIFACTS}/models", endpoint_url=settings.ARTIFACTS_ENDPOINT_URL
        )
    return artifacts.Store(str(settings.MODEL_ROOT))


def _unsafe(version: ModelVersion) -> bool:
    raw = version.path.strip()
    rel = Path(raw)
    return not raw or rel.is_absolute() or ".." in rel.parts or raw.startswith(("~", "."))


def model_check(version: ModelVersion) -> None:
    """What the web host checks before a run uses a version: its key or path is safe. Facts in
    the database only; whether the files are there is the worker's to find out."""
    if version.sha256:
        try:
            artifacts.check_key(version.path)
        except artifacts.ArtifactError:
            raise Invalid(f"Model version {version.name!r} has an unsafe key.") from None
    elif _unsafe(version):
        raise Invalid(f"Model version {version.name!r} has an unsafe path {version.path!r}.")


def model_path(version: ModelVersion) -> str:
    """Worker side: the local directory (or hub name) `from_pretrained` gets for a version.

    A published version is fetched through the store (once per node and content, into
    settings.ARTIFACT_CACHE) and checked against its recorded sha256: a missing or corrupt file
    is an ArtifactError that names it. A version from before the store is a directory under
    MODEL_ROOT: a plain relative path with no `..`, no absolute part and no symlink on the way;
    anything else is passed on as a hub name (it fails offline with a clear error)."""
    if version.sha256:
        model_check(version)
        store = model_store()
        local = store.fetch(version.path, sha256=version.sha256, cache=settings.ARTIFACT_CACHE)
        return str(local)
    if _unsafe(version):
        raise Invalid(f"Model version {version.name!r} has an unsafe path {version.path!r}.")
    raw = version.path.strip()
    rel = Path(raw)
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


def produced_model(result: dict[str, Any]) -> Path:
    """The model directory a stage's result points at."""
    return Path(result.get("model_dir") or Path(result["output_dir"]) / "model")


def model_publish(*, run: TrainingRun, produced: Path) -> artifacts.Published:
    """Publish the model a run wrote under the run's key: moved into a local store with one
    rename, or uploaded to a bucket (and kept in this worker's cache).

    Idempotent: a redelivered finish, or the close of a run the launcher already published
    (outside the closing transaction, so no row lock is held during an upload), finds it
    published and only reads its manifest."""
    return model_store().publish(produced, run_key(run), move=True, cache=settings.ARTIFACT_CACHE)


def model_unpublish(*, key: str) -> None:
    model_store().delete(key)


def checkpoints_discard(*, run: TrainingRun) -> None:
    """A cancelled run's checkpoints are of no further use (its model, if any, stays)."""
    shutil.rmtree(run_dir(run) / "checkpoints", ignore_errors=True)
