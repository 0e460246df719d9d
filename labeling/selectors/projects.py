"""Reads about projects and their members."""

from __future__ import annotations

from django.db.models import QuerySet

from ..models import Membership, Project


def memberships_for_user(*, user_id: int) -> QuerySet[Membership]:
    """The caller's projects, each with their role."""
    return (
        Membership.objects.filter(user_id=user_id)
        .select_related("project")
        .order_by("project__name", "pk")
    )


def members_of(*, project: Project) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(project=project).select_related("user").order_by("user__username")
    )
