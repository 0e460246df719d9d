"""Celery tasks of the labeling app: thin shims that call one queue or service function."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from . import queue

STALE_LEASE_GRACE = timedelta(hours=1)


@shared_task  # queue: cpu (settings.CELERY_TASK_ROUTES)
def expire_stale_leases(grace_seconds: int = int(STALE_LEASE_GRACE.total_seconds())) -> int:
    """Beat-scheduled (settings.CELERY_BEAT_SCHEDULE): release leases abandoned long ago."""
    return queue.release_stale(now=timezone.now(), older_than=timedelta(seconds=grace_seconds))
