"""Run curves as data for the run page's charts: static/js/charts.js draws them with uPlot
(vendored under static/vendor/uplot), with axis values, a hover readout and a smoothed line; a
page without JavaScript shows each curve's figures in words."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Chart:
    name: str
    steps: list[int] = field(repr=False)
    values: list[float] = field(repr=False)

    @property
    def last(self) -> float:
        return self.values[-1]

    @property
    def lo(self) -> float:
        return min(self.values)

    @property
    def hi(self) -> float:
        return max(self.values)

    @property
    def first_step(self) -> int:
        return self.steps[0]

    @property
    def last_step(self) -> int:
        return self.steps[-1]

    def data(self) -> dict[str, Any]:
        """What the page hands the chart script (as a JSON data block)."""
        return {"name": self.name, "steps": self.steps, "values": self.values}


def line_chart(name: str, series: Sequence[tuple[int, float]]) -> Chart | None:
    """One curve from (step, value) pairs (one per step: the metric table's constraint), in step
    order, non-finite values left out; None when nothing is left."""
    by_step = {s: v for s, v in series if math.isfinite(v)}
    if not by_step:
        return None
    steps = sorted(by_step)
    return Chart(name=name, steps=steps, values=[by_step[s] for s in steps])


def charts_for(
    points: Sequence[tuple[str, int, float]], names: Sequence[str] | None = None
) -> list[Chart]:
    """One chart per metric name (in `names` order when given), from (name, step, value) rows."""
    by_name: dict[str, list[tuple[int, float]]] = {}
    for name, step, value in points:
        by_name.setdefault(name, []).append((step, value))
    order = [n for n in (names or sorted(by_name)) if n in by_name]
    charts = [line_chart(n, by_name[n]) for n in order]
    return [c for c in charts if c is not None]
