"""What a stage reports while it runs: the progress callback's type and the metric history."""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[int, int, dict[str, float]], None]  # (step, total_steps, metrics)


def last_value(history: list[dict[str, float]], name: str) -> float | None:
    """Most recent logged value of a metric (some metrics are logged only on eval steps)."""
    for entry in reversed(history):
        if name in entry:
            return entry[name]
    return None
