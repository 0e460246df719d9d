"""Projects and their members: create a project, add, invite, re-role and remove members.

Concurrent requests answer as the same requests one after the other would: a second create of a
slug, name or username finds the first's row through the unique constraint (caught in a
savepoint) and is told it exists; membership changes of one project take turns on its row lock,
so two admins removing or demoting each other at once leave one admin (the database refuses a
project without one too, on PostgreSQL: migration 0007).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from ..errors import Invalid, NotFound
from ..models import FLAG_CODES, Membership, Project, Role
from ..text import newlines_normalise

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
    """A new project with `creator` as its admin. `flags` None asks the default flags; an empty
    list asks none (a project may rank without them)."""
    if flags is not None and not set(flags) <= FLAG_CODES:
        raise Invalid(f"Unknown flag(s): {', '.join(sorted(set(flags) - FLAG_CODES))}")
    guidelines = newlines_normalise(guidelines)
    taken = Invalid("A project with this name or slug already exists.")
    with transaction.atomic():
        if Project.objects.filter(slug=slug).exists() or Project.objects.filter(name=name).exists():
            raise taken
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
        try:
            project.full_clean(exclude=["base_model", "created_by"], validate_unique=False)
        except ValidationError as exc:
            problems = "; ".join(f"{f}: {' '.join(m)}" for f, m in exc.message_dict.items())
            raise Invalid(f"The project is not valid: {problems}") from None
        try:
            with transaction.atomic():  # a savepoint: the same slug or name created meanwhile
                project.save()
        except IntegrityError:
            raise taken from None
        Membership.objects.create(project=project, user=creator, role=Role.ADMIN)
        return project


def project_lock(*, project: Project) -> None:
    """Take the project row's lock for the rest of the caller's transaction: changes to a project
    that must not interleave take turns on it (its memberships here; starting a round in
    training). Of two at once, the second reads what the first committed. FOR NO KEY UPDATE:
    strong enough for two of these, and it does not block the inserts that reference the project
    (prompts, tasks, members, runs). SQLite serialises writers instead (settings: BEGIN
    IMMEDIATE). Inside a transaction only (Django refuses a row lock outside one)."""
    list(Project.objects.select_for_update(no_key=True).filter(pk=project.pk).values_list("pk"))


def _admin_ids(project: Project) -> list[int]:
    return list(
        Membership.objects.filter(project=project, role=Role.ADMIN).values_list(
            "user_id", flat=True
        )
    )


def membership_set(*, project: Project, user: User, role: str) -> Membership:
    """Give `user` `role` in the project (adding them if need be); its last admin stays one."""
    if role not in Role.values:
        raise Invalid(f"Unknown role {role!r}.")
    with transaction.atomic():
        project_lock(project=project)
        if role != Role.ADMIN and _admin_ids(project) == [user.pk]:
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
    exists = Invalid(f"The user {username!r} already exists; add them instead.")
    with transaction.atomic():
        users = get_user_model().objects
        if users.filter(username=username).exists():
            raise exists
        try:
            with transaction.atomic():  # a savepoint: the same username invited meanwhile
                user = users.create_user(username=username, email=email, password=None)
        except IntegrityError:
            raise exists from None
        return Membership.objects.create(project=project, user=user, role=role)


def membership_remove(*, project: Project, user_id: int) -> None:
    """Remove a member (someone who is not one is a 404); the project keeps an admin."""
    with transaction.atomic():
        project_lock(project=project)
        membership = Membership.objects.filter(project=project, user_id=user_id).first()
        if membership is None:
            raise NotFound("No such member.")
        if membership.role == Role.ADMIN and _admin_ids(project) == [user_id]:
            raise Invalid("A project keeps at least one admin.")
        membership.delete()


# What an admin may change after creation: each applies to what comes next (tasks made, leases
# taken, prompts imported from now on); existing tasks keep their K, overlap and split.
SETTINGS = (
    "name", "guidelines", "k", "overlap", "demo_overlap", "flags", "lease_seconds",
    "valid_percent", "test_percent",
)  # fmt: skip


def project_update(*, project: Project, changes: dict[str, Any]) -> Project:
    """Change some of the project's SETTINGS, all or none: each is checked by the model's
    validators and constraints, the name stays unique, the guidelines as in
    project_update_guidelines."""
    unknown = set(changes) - set(SETTINGS)
    if unknown:
        raise Invalid(f"These cannot be changed: {', '.join(sorted(unknown))}.")
    if "flags" in changes and not set(changes["flags"]) <= FLAG_CODES:
        raise Invalid(f"Unknown flag(s): {', '.join(sorted(set(changes['flags']) - FLAG_CODES))}")
    if "guidelines" in changes:
        _check_guidelines(changes["guidelines"])
        changes = {**changes, "guidelines": newlines_normalise(changes["guidelines"])}
    with transaction.atomic():
        project_lock(project=project)
        project.refresh_from_db()
        for name, value in changes.items():
            setattr(project, name, list(value) if name == "flags" else value)
        if project.valid_percent + project.test_percent > 100:
            raise Invalid("valid_percent and test_percent add up to more than 100.")
        name_taken = Project.objects.filter(name=project.name).exclude(pk=project.pk).exists()
        if "name" in changes and name_taken:
            raise Invalid("A project with this name already exists.")
        try:
            project.full_clean(exclude=["base_model", "created_by"], validate_unique=False)
        except ValidationError as exc:
            problems = "; ".join(f"{f}: {' '.join(m)}" for f, m in exc.message_dict.items())
            raise Invalid(f"The project is not valid: {problems}") from None
        project.save(update_fields=list(changes))
        return project


def _check_guidelines(guidelines: str) -> None:
    if len(guidelines) > 100_000:
        raise Invalid("Guidelines are limited to 100,000 characters.")
    if "\x00" in guidelines:
        raise Invalid("The guidelines contain a NUL character.")


def project_update_guidelines(*, project: Project, guidelines: str) -> Project:
    _check_guidelines(guidelines)
    project.guidelines = newlines_normalise(guidelines)
    project.save(update_fields=["guidelines"])
    return project
