"""A metadata flag's name as labelers read it ("Fails to follow the instruction"), not its code."""

from __future__ import annotations

from django import template

from labeling.models import FLAG_CHOICES

register = template.Library()
LABELS = dict(FLAG_CHOICES)


@register.filter
def flag_label(code: str) -> str:
    return LABELS.get(code) or code.replace("_", " ").capitalize()
