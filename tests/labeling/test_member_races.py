"""Races that ended in a 500 or in a broken project, tried with real threads on PostgreSQL.

Each thread has its own connection and they start together at a barrier; each race is tried
several times (a race lost once in a while is still lost), and every trial must end as the same
requests one after the other would.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.test import Client, TransactionTestCase
from rest_framework.test import APIClient

from labeling import services
from labeling.models import Membership, Project, Role
from tests.factories import ProjectFactory, UserFactory, api_key, member

pytestmark = pytest.mark.postgres_only


def _at_once(calls):
    """Run the callables in threads released together; their results in order (or exceptions)."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i, call):
        try:
            barrier.wait()
            results[i] = call()
        except BaseException as exc:  # noqa: BLE001 - returned to the test, which asserts on it
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def _api(user) -> APIClient:
    client = APIClient()
    client.raise_request_exception = False
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_key(user)}")
    return client


def _remove_each_other(trial: int) -> tuple[list[int], int]:
    """Two admins each DELETE the other at once, through the API: (status codes, admins left)."""
    project = ProjectFactory()
    ann = member(project, f"ann{trial}", Role.ADMIN)
    ben = member(project, f"ben{trial}", Role.ADMIN)
    url = f"/api/v1/projects/{project.pk}/members/{{}}/"
    ann_api, ben_api = _api(ann), _api(ben)
    answers = _at_once(
        [lambda: ann_api.delete(url.format(ben.pk)), lambda: ben_api.delete(url.format(ann.pk))]
    )
    admins = Membership.objects.filter(project=project, role=Role.ADMIN).count()
    return sorted(a.status_code for a in answers), admins


def _demote_while_removed(trial: int) -> tuple[list, int]:
    project = ProjectFactory()
    ann = member(project, f"ann{trial}", Role.ADMIN)
    ben = member(project, f"ben{trial}", Role.ADMIN)
    results = _at_once(
        [
            lambda: services.membership_set(project=project, user=ben, role=Role.LABELER),
            lambda: services.membership_remove(project=project, user_id=ann.pk),
        ]
    )
    return results, Membership.objects.filter(project=project, role=Role.ADMIN).count()


def _shell_removals(trial: int) -> tuple[list, int]:
    """Two transactions that each delete one of two admins with the ORM (no service, no lock)."""
    project = ProjectFactory()
    admins = [member(project, f"a{trial}", Role.ADMIN), member(project, f"b{trial}", Role.ADMIN)]

    def remove(user) -> None:
        with transaction.atomic():
            Membership.objects.filter(project=project, user=user).delete()

    results = _at_once([lambda: remove(admins[0]), lambda: remove(admins[1])])
    return results, Membership.objects.filter(project=project, role=Role.ADMIN).count()


def _create_one_slug_four_times(trial: int) -> list:
    founder = UserFactory(username=f"founder{trial}", is_staff=True)
    clients = [_api(founder) for _ in range(4)]
    body = {"name": f"Same {trial}", "slug": f"same-{trial}"}
    return _at_once([lambda c=c: c.post("/api/v1/projects/", body, format="json") for c in clients])


def _invite_one_username_three_times(trial: int) -> tuple[Project, list]:
    project = ProjectFactory()
    admin = member(project, f"boss{trial}", Role.ADMIN)
    browsers = []
    for _ in range(3):
        browser = Client(raise_request_exception=False)
        browser.force_login(admin)
        browsers.append(browser)
    url = f"/p/{project.slug}/admin/members/invite/"
    body = {"username": f"nina{trial}", "role": "labeler"}
    return project, _at_once([lambda b=b: b.post(url, body) for b in browsers])


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
class AdminRaceTests(TransactionTestCase):
    def test_two_admins_removing_each_other_at_once_leave_the_project_one_admin(self):
        """Before: both DELETEs answered 204 in most trials and the project had no admin."""
        outcomes = [_remove_each_other(trial) for trial in range(6)]
        # One removal goes through; the other is refused as the last admin's (400), or finds its
        # caller already removed (404).
        assert all(codes[0] == 204 and codes[1] in {400, 404} for codes, _ in outcomes), outcomes
        assert [admins for _, admins in outcomes] == [1] * 6, outcomes

    def test_an_admin_demoting_the_other_while_being_removed_by_them_leaves_one_admin(self):
        for trial in range(6):
            results, admins = _demote_while_removed(trial)
            assert admins == 1
            assert sum(isinstance(r, Exception) for r in results) == 1, results

    def test_the_database_refuses_to_commit_a_project_without_an_admin_whatever_the_code(self):
        project = ProjectFactory()
        ann = member(project, "ann", Role.ADMIN)
        member(project, "lou")
        with pytest.raises(IntegrityError, match="would have no admin"):
            Membership.objects.filter(user=ann).delete()  # its own transaction: checked at commit
        with pytest.raises(IntegrityError, match="would have no admin"):
            Membership.objects.filter(user=ann).update(role=Role.REVIEWER)
        assert Membership.objects.get(user=ann).role == Role.ADMIN
        with transaction.atomic():  # handing over within one transaction is fine
            member(project, "ned", Role.ADMIN)
            Membership.objects.filter(user=ann).delete()
        project.delete()  # and a project goes with its members
        assert not Membership.objects.exists()

    def test_two_shell_sessions_removing_one_admin_each_at_once_cannot_both_commit(self):
        """What the trigger holds even without the services' lock: each transaction alone
        keeps an admin, both together would not."""
        for trial in range(6):
            results, admins = _shell_removals(trial)
            assert [type(r) for r in results].count(IntegrityError) == 1, results
            assert admins == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
class ConcurrentCreateTests(TransactionTestCase):
    def test_concurrent_creates_of_one_project_slug_answer_one_201_and_400s(self):
        """Before: the losers' insert broke the unique constraint, a 500."""
        for trial in range(5):
            answers = _create_one_slug_four_times(trial)
            assert Counter(a.status_code for a in answers) == {201: 1, 400: 3}
            losers = {a.json()["detail"] for a in answers if a.status_code == 400}
            assert losers == {"A project with this name or slug already exists."}
            assert Project.objects.filter(slug=f"same-{trial}").count() == 1

    def test_concurrent_invites_of_one_username_answer_as_one_after_the_other(self):
        for trial in range(5):
            project, answers = _invite_one_username_three_times(trial)
            assert Counter(a.status_code for a in answers) == {200: 1, 400: 2}
            refused = [a.content for a in answers if a.status_code == 400]
            assert all(b"already exists; add them instead" in body for body in refused)
            invited = Membership.objects.filter(project=project, user__username=f"nina{trial}")
            assert invited.count() == 1
