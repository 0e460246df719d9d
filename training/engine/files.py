"""What a checkpoint's writers share, single- and multi-process (checkpoint.py, distributed.py):
the state file's name, the temporary-directory prefix, and fsync of a file or a tree."""

from __future__ import annotations

import os
from pathlib import Path

STATE_FILE = "state.json"
TMP_PREFIX = ".tmp-"


def fsync_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*"), reverse=True):
        fsync_path(path)
    fsync_path(directory)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
