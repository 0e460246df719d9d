"""A model version named on a page links to its lineage page when the project has it."""

from __future__ import annotations

from django import template
from django.urls import reverse
from django.utils.html import format_html

from labeling.models import Project

register = template.Library()


@register.simple_tag
def model_link(project: Project, ids: dict[str, int], name: str) -> str:
    """`name` as a link to its model page (ids: name -> model version id), else the name."""
    pk = ids.get(name)
    if pk is None:
        return name  # escaped by the template engine
    return format_html(
        '<a href="{}">{}</a>', reverse("model-version", args=[project.slug, pk]), name
    )
