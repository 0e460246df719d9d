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

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from labeling.errors import Invalid
from labeling.models import ModelVersion

from . import artifacts
from .models import TrainingRun
from .stages import STAGES

logger = logging.getLogger(__name__)

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


def model_adopt(*, version: ModelVersion) -> bool:
    """Publish a version from before the store (its folder under MODEL_ROOT, copied) under its
    path as key and record where; False when there is nothing to do (already published, a hub
    name, or no such folder here)."""
    if version.sha256 or _unsafe(version):
        return False
    directory = settings.MODEL_ROOT / version.path
    if directory.is_symlink() or not directory.is_dir():
        return False
    published = model_store().publish(directory, version.path)
    version.artifact_uri, version.sha256 = published.uri, published.sha256
    version.save(update_fields=["artifact_uri", "sha256"])
    return True


def model_unpublish(*, key: str) -> None:
    model_store().delete(key)


CHECKPOINTS = "checkpoints"  # training/engine/checkpoint.py writes `step-N` folders in here
STEP_DONE = "state.json"  # written last into a complete one
SAMPLES = "samples.jsonl"  # training/engine/sample.py appends each batch whole, then reports it


def _run_store() -> artifacts.Store | None:
    """Where runs' resume points are mirrored: `<ARTIFACTS>/runs`, or None when artifacts stay in
    MODEL_ROOT (one machine: the run folder itself is where a resume finds them)."""
    if not settings.ARTIFACTS:
        return None
    return artifacts.Store(
        f"{settings.ARTIFACTS}/runs", endpoint_url=settings.ARTIFACTS_ENDPOINT_URL
    )


def _numbered(name: str, tag: str) -> int | None:
    tail = name.rsplit("/", 1)[-1]
    number = tail.removeprefix(tag)
    return int(number) if tail.startswith(tag) and number.isdigit() else None


class CheckpointMirror:
    """A run's resume points in the shared store, so that a run whose node died resumes on
    another: its newest checkpoint (`checkpoints/step-N`) and, for a sampling run, the complete
    lines of its samples file so far (`samples/lines-N`).

    `push` (after each progress report: the engine saves a checkpoint, or appends a batch of
    samples, before it reports that step) publishes what is newer than the store's copy, then
    removes the older copies there; `pull` (before the engine starts) brings the store's newest
    into a run folder that has nothing as recent. Each copy is an artifact with its manifest
    written last, so a node killed during an upload leaves the previous copy the newest."""

    def __init__(self, run: TrainingRun, store: artifacts.Store) -> None:
        self.store = store
        self.key = run_key(run)
        self.folder = run_dir(run)
        self.pushed = {"step-": self._local_step(), "lines-": self._local_lines().count(b"\n")}
        self.samples_due = 0.0  # the whole file goes up each time: at most once in this while

    # What this node has: the newest complete checkpoint; the complete lines of samples.jsonl.
    def _local_step(self) -> int:
        found = self.folder.glob(f"{CHECKPOINTS}/step-*/{STEP_DONE}")
        steps = [_numbered(p.parent.name, "step-") for p in found]
        return max((s for s in steps if s is not None), default=0)

    def _local_lines(self) -> bytes:
        path = self.folder / SAMPLES
        data = path.read_bytes() if path.is_file() else b""
        return data[: data.rfind(b"\n") + 1]  # a batch being appended meanwhile: its whole lines

    def _remote(self, folder: str, tag: str) -> list[int]:
        try:
            names = self.store.fs.ls(f"{self.store.root}/{self.key}/{folder}", detail=False)
        except FileNotFoundError:
            return []
        return sorted(n for n in (_numbered(name, tag) for name in names) if n is not None)

    def _fetch_newest(self, folder: str, tag: str, newer_than: int) -> tuple[int, Path] | None:
        for number in reversed(self._remote(folder, tag)):
            if number <= newer_than:
                return None
            key = f"{self.key}/{folder}/{tag}{number}"
            manifest = self.store.manifest(key)
            if manifest is None:
                continue  # an upload that did not finish
            scratch = self.folder / ".pull"
            sha256 = hashlib.sha256(manifest).hexdigest()
            fetched = self.store.fetch(key, sha256=sha256, cache=scratch)
            if self.store.local:  # fetched in place: the store keeps its copy
                shutil.rmtree(scratch, ignore_errors=True)
                shutil.copytree(fetched, scratch / sha256)
                fetched = scratch / sha256
            return number, fetched
        return None

    def pull(self) -> int:
        """Bring the store's newest checkpoint and samples here when this node has none as
        recent; returns the checkpoint's step (0: none)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        found = self._fetch_newest(CHECKPOINTS, "step-", self._local_step())
        if found is not None:
            step, fetched = found
            target = self.folder / CHECKPOINTS / f"step-{step}"
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(fetched, target)
            self.pushed["step-"] = step
        found = self._fetch_newest("samples", "lines-", self._local_lines().count(b"\n"))
        if found is not None:
            self.pushed["lines-"], fetched = found
            os.replace(fetched / SAMPLES, self.folder / SAMPLES)
        shutil.rmtree(self.folder / ".pull", ignore_errors=True)
        return self._local_step()

    def push(self) -> None:
        step = self._local_step()
        if step > self.pushed["step-"]:
            source = self.folder / CHECKPOINTS / f"step-{step}"
            self._publish(CHECKPOINTS, "step-", step, source)
        if time.monotonic() < self.samples_due:
            return
        lines = self._local_lines()
        if lines.count(b"\n") > self.pushed["lines-"]:
            self.samples_due = time.monotonic() + getattr(settings, "SAMPLES_MIRROR_SECONDS", 30)
            staged = self.folder / ".push-samples"
            shutil.rmtree(staged, ignore_errors=True)
            staged.mkdir()
            (staged / SAMPLES).write_bytes(lines)
            self._publish("samples", "lines-", lines.count(b"\n"), staged)
            shutil.rmtree(staged, ignore_errors=True)

    def _publish(self, folder: str, tag: str, number: int, source: Path) -> None:
        try:
            self.store.publish(source, f"{self.key}/{folder}/{tag}{number}")
            self.pushed[tag] = number
            for old in self._remote(folder, tag):
                if old < number:
                    self.store.delete(f"{self.key}/{folder}/{tag}{old}")
        except (FileNotFoundError, artifacts.ArtifactError):
            return  # the engine replaced it meanwhile: the next report pushes the newer one
        except Exception:  # noqa: BLE001 - an unreachable store costs resumability, not the run
            logger.exception("%s/%s/%s%s not mirrored", self.key, folder, tag, number)


def checkpoint_mirror(run: TrainingRun) -> CheckpointMirror | None:
    store = _run_store()
    return None if store is None else CheckpointMirror(run, store)


def checkpoints_discard(*, run: TrainingRun) -> None:
    """A cancelled run's checkpoints are of no further use (its model, if any, stays)."""
    shutil.rmtree(run_dir(run) / CHECKPOINTS, ignore_errors=True)
    store = _run_store()
    if store is not None:
        store.delete(f"{run_key(run)}/{CHECKPOINTS}")
        store.delete(f"{run_key(run)}/samples")
