"""Where a tiny base model build stands, in a small JSON file beside its target directory, so the
web pages (which never load torch) can say what waits on it and for about how long.

The builder (training/demo/base_model.py) writes it as it goes and removes it when it ends.
Plain Python: no torch, no Django."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# A build's phases, in order ("starting": launched, torch not imported yet).
PHASES = ("starting", "corpus", "tokenizer", "encode", "train", "save")
PHASE_WORDS = {
    "starting": "starting",
    "corpus": "writing its corpus",
    "tokenizer": "training its tokenizer",
    "encode": "encoding its corpus",
    "train": "training",
    "save": "saving",
}
STALE_SECONDS = 300  # no word from the builder for this long: it is not running any more


@dataclass(frozen=True)
class BuildProgress:
    phase: str  # one of PHASES
    step: int  # training steps done (phase "train")
    total_steps: int
    started_at: float  # unix time the build started
    updated_at: float  # unix time of this report
    eta_seconds: float | None  # time left, from the pace of the training steps so far

    @property
    def doing(self) -> str:
        """The phase as a page says it."""
        return PHASE_WORDS.get(self.phase, self.phase)


def progress_path(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.progress.json"


def progress_write(out_dir: Path, progress: BuildProgress) -> None:
    """Replace the report atomically (a reader never sees half a file)."""
    path = progress_path(out_dir)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(progress)))
    tmp.replace(path)


def progress_starting(out_dir: Path) -> None:
    """The first report, written by whoever launches the builder (./dev up) before it has even
    imported torch, so that pages say what waits from the start."""
    now = time.time()
    progress_write(
        out_dir,
        BuildProgress(phase="starting", step=0, total_steps=0, started_at=now,
                      updated_at=now, eta_seconds=None),
    )  # fmt: skip


def progress_clear(out_dir: Path) -> None:
    progress_path(out_dir).unlink(missing_ok=True)


def progress_read(out_dir: Path, *, now: float | None = None) -> BuildProgress | None:
    """The build's last report, or None: no build running (none started, finished, or silent
    for STALE_SECONDS, i.e. killed)."""
    try:
        data = json.loads(progress_path(out_dir).read_text())
        progress = BuildProgress(**data)
    except (OSError, ValueError, TypeError):
        return None
    now = time.time() if now is None else now
    if now - progress.updated_at > STALE_SECONDS:
        return None
    return progress


def eta_seconds(*, step: int, total_steps: int, train_seconds: float) -> float | None:
    """Time left at the pace of the steps so far (the save after them takes a second or two)."""
    if step < 10 or step >= total_steps:
        return None if step < 10 else 2.0
    return train_seconds / step * (total_steps - step) + 2.0


if __name__ == "__main__":  # python -m training.demo.build_progress OUT_DIR
    import sys

    progress_starting(Path(sys.argv[1]))
