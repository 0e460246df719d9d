"""Server-side SVG line charts for run curves: readable at a glance, no JavaScript library."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT, PAD = 360, 140, 28


@dataclass(frozen=True)
class Chart:
    name: str
    points: str  # SVG polyline points
    last: float
    lo: float
    hi: float
    first_step: int
    last_step: int
    width: int = WIDTH
    height: int = HEIGHT


def line_chart(name: str, series: Sequence[tuple[int, float]]) -> Chart | None:
    """Scale (step, value) pairs into a WIDTH×HEIGHT box; None when there is nothing to draw."""
    clean = [(s, v) for s, v in series if math.isfinite(v)]
    if not clean:
        return None
    steps = [s for s, _ in clean]
    values = [v for _, v in clean]
    lo, hi = min(values), max(values)
    span_v = (hi - lo) or 1.0
    s0, s1 = min(steps), max(steps)
    span_s = (s1 - s0) or 1
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    points = " ".join(
        f"{PAD + (s - s0) / span_s * inner_w:.1f},{PAD + (1 - (v - lo) / span_v) * inner_h:.1f}"
        for s, v in clean
    )
    return Chart(
        name=name, points=points, last=values[-1], lo=lo, hi=hi, first_step=s0, last_step=s1
    )


def charts_for(
    points: Sequence[tuple[str, int, float]], names: Sequence[str] | None = None
) -> list[Chart]:
    """One chart per metric name (in `names` order when given), from (name, step, value) rows."""
    by_name: dict[str, list[tuple[int, float]]] = {}
    for name, step, value in points:
        by_name.setdefault(name, []).append((step, value))
    order = [n for n in (names or sorted(by_name)) if n in by_name]
    charts = [line_chart(n, sorted(by_name[n])) for n in order]
    return [c for c in charts if c is not None]
