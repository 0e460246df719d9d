"""The beat-scheduled housekeeping job: abandoned leases are closed, nothing else is touched."""

from __future__ import annotations

from datetime import timedelta

import pytest

from instructloop.celery import app as celery_app
from labeling import queue
from labeling.models import Lease
from labeling.tasks import expire_stale_leases

from ..factories import ProjectFactory, demonstration_task, member

pytestmark = pytest.mark.django_db


def _lease(task, user, *, expires_at, status=Lease.Status.ACTIVE):
    return Lease.objects.create(
        task=task,
        user=user,
        status=status,
        created_at=expires_at - timedelta(minutes=15),
        expires_at=expires_at,
        heartbeat_at=expires_at - timedelta(minutes=15),
        submitted_at=expires_at if status == Lease.Status.SUBMITTED else None,
    )


def test_release_stale_closes_only_active_leases_expired_longer_than_the_grace(now):
    project = ProjectFactory(demo_overlap=4)
    task = demonstration_task(project)
    alice, bob, carol, dan = (member(project, n) for n in ("alice", "bob", "carol", "dan"))
    abandoned = _lease(task, alice, expires_at=now - timedelta(hours=2))
    just_expired = _lease(task, bob, expires_at=now - timedelta(minutes=5))
    running = _lease(task, carol, expires_at=now + timedelta(minutes=5))
    submitted = _lease(task, dan, expires_at=now - timedelta(hours=3), status="submitted")

    released = queue.release_stale(now=now, older_than=timedelta(hours=1))

    assert released == 1
    statuses = dict(Lease.objects.values_list("pk", "status"))
    assert statuses == {
        abandoned.pk: Lease.Status.RELEASED,
        just_expired.pk: Lease.Status.ACTIVE,
        running.pk: Lease.Status.ACTIVE,
        submitted.pk: Lease.Status.SUBMITTED,
    }


def test_a_released_lease_is_not_handed_back_to_its_labeler(now):
    project = ProjectFactory()
    task = demonstration_task(project)
    alice = member(project, "alice")
    _lease(task, alice, expires_at=now - timedelta(hours=2))
    queue.release_stale(now=now, older_than=timedelta(hours=1))

    assert queue.claim_next(user_id=alice.pk, project=project, kind=task.kind, now=now) is None


def test_expire_stale_leases_is_routed_to_the_cpu_queue_and_scheduled_by_beat(settings):
    route = celery_app.amqp.router.route({}, expire_stale_leases.name)
    assert route["queue"].name == "cpu"
    schedule = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert expire_stale_leases.name in schedule
