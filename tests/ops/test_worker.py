"""A real Celery worker on the test database and the configured broker runs platform jobs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from labeling.models import Lease
from labeling.tasks import expire_stale_leases

from ..factories import ProjectFactory, demonstration_task, member
from ..worker import wait_until

pytestmark = pytest.mark.worker


def test_the_worker_runs_a_housekeeping_job_sent_through_the_broker(celery_worker):
    now = timezone.now()
    project = ProjectFactory(demo_overlap=2)
    task = demonstration_task(project)
    abandoned = Lease.objects.create(
        task=task,
        user=member(project, "alice"),
        created_at=now - timedelta(hours=3),
        expires_at=now - timedelta(hours=2),
        heartbeat_at=now - timedelta(hours=3),
    )
    running = Lease.objects.create(
        task=task,
        user=member(project, "bob"),
        created_at=now,
        expires_at=now + timedelta(minutes=15),
        heartbeat_at=now,
    )

    expire_stale_leases.delay()

    wait_until(lambda: Lease.objects.get(pk=abandoned.pk).status == Lease.Status.RELEASED)
    celery_worker.wait_for_log("succeeded")
    assert "labeling.tasks.expire_stale_leases" in celery_worker.log()
    running.refresh_from_db()
    assert running.status == Lease.Status.ACTIVE
    assert celery_worker.stop() == 0
