"""Projects and their members: create a project, add, invite, re-role and remove members."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.db import transaction

from ..errors import Invalid
from ..models import FLAG_CODES, Membership, Project, Role

if TYPE_CHECKING:
    # The account model the foreign keys point to (settings.AUTH_USER_MODEL, Django's default).
    from django.contrib.auth.models import User


def project_create(
    *,
    name: str,
    slug: str,
    creator: User,
    guidelines: str = "",
    k: int = 4,
    overlap: int = 1,
    demo_overlap: int = 1,
    flags: Sequence[str] | None = None,
    lease_seconds: int = 900,
) -> Project:
    if flags is not None and not set(flags) <= FLAG_CODES:
        raise Invalid(f"Unknown flag(s): {', '.join(sorted(set(flags) - FLAG_CODES))}")
    with transaction.atomic():
        if Project.objects.filter(slug=slug).exists() or Project.objects.filter(name=name).exists():
            raise Invalid("A project with this name or slug already exists.")
        project = Project(
            name=name,
            slug=slug,
            guidelines=guidelines,
            k=k,
            overlap=overlap,
            demo_overlap=demo_overlap,
            lease_seconds=lease_seconds,
            created_by=creator,
        )
        if flags is not None:
            project.flags = list(flags)
        project.full_clean(exclude=["base_model", "created_by"])
        project.save()
        Membership.objects.create(project=project, user=creator, role=Role.ADMIN)
        return project


def membership_set(*, project: Project, user: User, role: str) -> Membership:
    if role not in Role.values:
        raise Invalid(f"Unknown role {role!r}.")
    with transaction.atomic():
        admins = Membership.objects.select_for_update().filter(project=project, role=Role.ADMIN)
        if role != Role.ADMIN and list(admins.values_list("user_id", flat=True)) == [user.pk]:
            raise Invalid("A project keeps at least one admin.")
        membership, _ = Membership.objects.update_or_create(
            project=project, user=user, defaults={"role": role}
        )
        return membership


def member_add(*, project: Project, username: str, role: str) -> Membership:
    """Give an existing account a role in the project (or change it)."""
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise Invalid(f"No user is called {username!r}; invite them instead.")
    return membership_set(project=project, user=user, role=role)


def member_invite(*, project: Project, username: str, email: str, role: str) -> Membership:
    """Create an account without a usable password and make it a member; it sets one by link."""
    if role not in Role.values:
        raise Invalid(f"Unknown role {role!r}.")
    with transaction.atomic():
        users = get_user_model().objects
        if users.filter(username=username).exists():
            raise Invalid(f"The user {username!r} already exists; add them instead.")
        user = users.create_user(username=username, email=email, password=None)
        return Membership.objects.create(project=project, user=user, role=role)


def membership_remove(*, project: Project, user_id: int) -> None:
    with transaction.atomic():
        admins = Membership.objects.filter(project=project, role=Role.ADMIN)
        if admins.count() == 1 and admins.filter(user_id=user_id).exists():
            raise Invalid("A project keeps at least one admin.")
        Membership.objects.filter(project=project, user_id=user_id).delete()


def project_update_guidelines(*, project: Project, guidelines: str) -> Project:
    if len(guidelines) > 100_000:
        raise Invalid("Guidelines are limited to 100,000 characters.")
    project.guidelines = guidelines
    project.save(update_fields=["guidelines"])
    return project
