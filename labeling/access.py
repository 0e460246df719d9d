"""Who may see or do what: the labeling app's only 404 and 403 rules.

- A project: someone who is not a member gets 404 for everything in it; a member whose role is
  lower than the one asked gets 403. Roles nest: an admin may do what a reviewer does, a reviewer
  what a labeler does (Membership.allows).
- A lease: only its labeler sees or works it, and only while still a member of its project;
  anyone else's lease, or one in a project they left, is a 404 that reveals nothing about it.
  One rule, statements.OWN_LEASE, read here without a lock (pages, the API) and by queue.py with
  the row locks a lease change needs (locks stay in queue.py).
- A new project: staff, or anyone who already administers a project, may start one, on the page
  and through the API alike.

Every page and API call of a project starts with one of these checks, so both are one
hand-written statement each (labeling/sql/ says why).
"""

from __future__ import annotations

from itertools import accumulate

from . import sql
from .errors import Forbidden, NotFound
from .models import Lease, Membership, Project, Prompt, Role, Task
from .sql import statements


def membership_require(
    *,
    user_id: int,
    project_id: int | None = None,
    slug: str | None = None,
    role: str = Role.LABELER,
) -> Membership:
    """The caller's membership with at least `role`: not a member → 404, lower role → 403."""
    key: int | str
    if project_id is not None:
        where, key, name = statements.MEMBERSHIP_BY_ID, project_id, "il_member_by_id"
    elif slug is not None:
        where, key, name = statements.MEMBERSHIP_BY_SLUG, slug, "il_member_by_slug"
    else:
        raise NotFound("No such project.")
    query = statements.MEMBERSHIP.format(
        membership=sql.columns(Membership, "m"), project=sql.columns(Project, "p"), where=where
    )
    row = sql.one(query, [user_id, key], name=name)
    if row is None:
        raise NotFound("No such project.")
    n = len(Membership._meta.concrete_fields)
    membership = sql.instance(Membership, row[:n])
    membership.project = sql.instance(Project, row[n:])
    if not membership.allows(role):
        raise Forbidden(f"This needs the {role} role in {membership.project.name}.")
    return membership


def can_create_project(*, user_id: int, is_staff: bool) -> bool:
    """Staff, or anyone who already administers a project, may start a new one."""
    return is_staff or Membership.objects.filter(user_id=user_id, role=Role.ADMIN).exists()


def own_lease_row(query: str, *, lease_id: int, user_id: int, name: str | None = None) -> tuple:
    """The row of `query`, a statement whose only parameters are those of statements.OWN_LEASE,
    for the user's own lease; anyone else's lease is a 404."""
    params = [lease_id, user_id, user_id, Role.LABELER, Role.REVIEWER, Role.ADMIN]
    row = sql.one(query, params, name=name)
    if row is None:
        raise NotFound("No such lease.")
    return row


def lease_require(*, lease_id: int, user_id: int) -> Lease:
    """The user's own lease with its task, the task's prompt and project (unlocked); anyone
    else's lease is a 404."""
    query = statements.OWN_LEASE_READ.format(
        lease=sql.columns(Lease, "l"),
        task=sql.columns(Task, "t"),
        project=sql.columns(Project, "pr"),
        prompt=sql.columns(Prompt, "p"),
    )
    row = own_lease_row(query, lease_id=lease_id, user_id=user_id)
    task_at, project_at, prompt_at = accumulate(
        len(model._meta.concrete_fields) for model in (Lease, Task, Project)
    )
    lease = sql.instance(Lease, row[:task_at])
    lease.task = sql.instance(Task, row[task_at:project_at])
    lease.task.project = sql.instance(Project, row[project_at:prompt_at])
    lease.task.prompt = sql.instance(Prompt, row[prompt_at:])
    return lease
