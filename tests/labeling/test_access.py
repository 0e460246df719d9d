"""labeling/access.py: not a member → 404, lower role → 403, someone else's lease → 404; the own-lease
rule answers alike whether the lease is read for a page or locked for a change."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.test import Client
from rest_framework.test import APIClient

from labeling import access, queue
from labeling.errors import Forbidden, NotFound
from labeling.models import Membership, Role, Task
from tests.factories import UserFactory, api_key, ranking_task

pytestmark = pytest.mark.django_db


def test_a_member_is_found_by_project_id_and_by_slug_with_the_project(project, personas):
    by_id = access.membership_require(user_id=personas.alice.pk, project_id=project.pk)
    by_slug = access.membership_require(user_id=personas.alice.pk, slug=project.slug)
    assert by_id.pk == by_slug.pk and by_id.role == Role.LABELER
    assert (by_id.project.name, by_slug.project.flags) == (project.name, project.flags)


@pytest.mark.parametrize("role", [Role.LABELER, Role.REVIEWER, Role.ADMIN])
def test_someone_who_is_not_a_member_gets_a_404_whatever_the_role_asked(project, personas, role):
    for key in ({"project_id": project.pk}, {"slug": project.slug}):
        with pytest.raises(NotFound):
            access.membership_require(user_id=personas.outsider.pk, role=role, **key)
    with pytest.raises(NotFound):
        access.membership_require(user_id=personas.alice.pk, role=role)  # no project named


def test_a_lower_role_gets_a_403_and_higher_roles_include_the_lower(project, personas):
    expected = {  # persona: the roles it may act as
        personas.alice: {Role.LABELER},
        personas.reviewer: {Role.LABELER, Role.REVIEWER},
        personas.admin: {Role.LABELER, Role.REVIEWER, Role.ADMIN},
    }
    for user, allowed in expected.items():
        for role in Role.values:
            if role in allowed:
                access.membership_require(user_id=user.pk, project_id=project.pk, role=role)
            else:
                with pytest.raises(Forbidden):
                    access.membership_require(user_id=user.pk, project_id=project.pk, role=role)


def test_staff_and_admins_of_some_project_may_create_projects(personas):
    assert access.can_create_project(user_id=personas.outsider.pk, is_staff=False)  # an admin
    assert not access.can_create_project(user_id=personas.reviewer.pk, is_staff=False)
    assert not access.can_create_project(user_id=personas.alice.pk, is_staff=False)
    assert access.can_create_project(user_id=UserFactory().pk, is_staff=True)


def test_the_own_lease_comes_with_its_task_prompt_and_project_in_one_query(
    project, personas, now, django_assert_num_queries
):
    ranking_task(project)
    claimed = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind=Task.Kind.RANKING, now=now
    )
    with django_assert_num_queries(1):
        lease = access.lease_require(lease_id=claimed.pk, user_id=personas.alice.pk)
        assert (lease.pk, lease.shown_order, lease.expires_at) == (
            claimed.pk,
            claimed.shown_order,
            claimed.expires_at,
        )
        assert lease.task.prompt.messages == claimed.task.prompt.messages
        assert (lease.task.project.slug, lease.task.project.flags) == (project.slug, project.flags)


def _lookups(lease_id: int, user_id: int, now) -> dict[str, str]:
    """What each way of reaching a lease answers: "found" or "404"."""

    def locked(lock_task: bool) -> None:
        with transaction.atomic():
            queue.lock_for_submit(lease_id=lease_id, user_id=user_id, now=now, lock_task=lock_task)

    ways = {
        "unlocked": lambda: access.lease_require(lease_id=lease_id, user_id=user_id),
        "lease locked": lambda: locked(False),
        "lease and task locked": lambda: locked(True),
    }
    answers = {}
    for name, way in ways.items():
        try:
            way()
            answers[name] = "found"
        except NotFound:
            answers[name] = "404"
    return answers


@pytest.mark.parametrize(
    "who", ["owner", "another labeler", "reviewer", "admin", "outsider", "owner who left"]
)
def test_the_locked_and_unlocked_lookups_apply_the_one_own_lease_rule(project, personas, now, who):
    ranking_task(project)
    lease = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind=Task.Kind.RANKING, now=now
    )
    if who == "owner who left":
        Membership.objects.filter(project=project, user=personas.alice).delete()
    user = {
        "owner": personas.alice,
        "another labeler": personas.bob,
        "reviewer": personas.reviewer,
        "admin": personas.admin,
        "outsider": personas.outsider,
        "owner who left": personas.alice,
    }[who]
    answer = "found" if who == "owner" else "404"
    assert _lookups(lease.pk, user.pk, now) == dict.fromkeys(
        ["unlocked", "lease locked", "lease and task locked"], answer
    )


def test_a_labeler_who_left_the_project_gets_404_for_their_lease_page_and_api(
    project, personas, now
):
    ranking_task(project)
    lease = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind=Task.Kind.RANKING, now=now
    )
    page, api = Client(), APIClient()
    page.force_login(personas.alice)
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_key(personas.alice)}")
    assert page.get(f"/leases/{lease.pk}/").status_code == 200
    assert api.get(f"/api/v1/leases/{lease.pk}/").status_code == 200
    Membership.objects.filter(project=project, user=personas.alice).delete()
    assert page.get(f"/leases/{lease.pk}/").status_code == 404
    assert api.get(f"/api/v1/leases/{lease.pk}/").status_code == 404
    heartbeat = api.post(f"/api/v1/leases/{lease.pk}/heartbeat/", {}, format="json")
    assert heartbeat.status_code == 404
