"""Durations as people read them: "45 s", "3 min 20 s", "1 h 05 min", never raw milliseconds."""

from __future__ import annotations

from datetime import timedelta

from django import template

register = template.Library()


def _words(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@register.filter
def duration(value: timedelta | float | int | None) -> str:
    """A timedelta or a number of seconds, in words; None: an em dash."""
    if value is None or value == "":
        return "—"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return _words(max(seconds, 0.0))


@register.filter
def duration_ms(value: float | int | None) -> str:
    """A number of milliseconds (what the labeling pages store), in words."""
    if value is None or value == "":
        return "—"
    return _words(max(float(value), 0.0) / 1000)
