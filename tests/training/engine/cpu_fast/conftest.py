from __future__ import annotations

from collections.abc import Callable

import pytest

from training.engine import cpu_fast


@pytest.fixture
def fast_paths(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], None]:
    """fast_paths(on): the CPU fast paths on (the default on CPU) or off (INSTRUCTLOOP_CPU_FAST=0)
    for what the test does next: each parity test runs the plain path and the fast one."""

    def switch(on: bool) -> None:
        if on:
            monkeypatch.delenv(cpu_fast.SWITCH, raising=False)
        else:
            monkeypatch.setenv(cpu_fast.SWITCH, "0")

    return switch
