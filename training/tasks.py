"""Celery shims: each task loads by id and makes one call (training/launcher.py runs a run)."""

from __future__ import annotations

import os
import socket

from celery import shared_task
from celery.signals import worker_ready
from django.utils import timezone

from . import dispatch, launcher, registry, review, runs


@shared_task(name=dispatch.RUN_TASK, acks_late=True, reject_on_worker_lost=True)
def run_training(run_id: int) -> str:  # queue: gpu (settings.CELERY_TASK_ROUTES)
    worker = f"{socket.gethostname()}:{os.getpid()}:{run_training.request.id}"
    return launcher.execute(run_id=run_id, worker=worker)


@shared_task(name="training.tasks.requeue_stale_runs")
def requeue_stale_runs() -> list[int]:
    """Beat-scheduled: runs whose worker died, or whose message never reached one, are sent
    again (a resumed run continues from its last checkpoint)."""
    ids = runs.runs_to_requeue(now=timezone.now())
    for run_id in ids:
        dispatch.run_send(run_id)
    return ids


@shared_task(name=registry.REGISTER_TASK, acks_late=True)
def register_model(registration_id: int) -> str:  # queue: gpu (settings.CELERY_TASK_ROUTES)
    registration = registry.registration_execute(registration_id=registration_id)
    return registration.status if registration else "gone"


@shared_task(name="training.tasks.resend_registrations")
def resend_registrations() -> list[int]:
    """Beat-scheduled: registrations whose message could not be sent are sent again."""
    ids = registry.registrations_unsent()
    for registration_id in ids:
        registry.registration_send(registration_id)
    return ids


@shared_task(name=review.REFRESH_TASK)
def refresh_review_snapshot(project_id: int) -> int:  # queue: cpu (settings.CELERY_TASK_ROUTES)
    """Recompute a project's reviewer dashboard (asked for by review.refresh_request)."""
    return review.refresh_snapshot(project_id=project_id, now=timezone.now()).comparisons


@shared_task(name="training.tasks.refresh_stale_review_snapshots")
def refresh_stale_review_snapshots() -> list[int]:  # beat (settings.CELERY_BEAT_SCHEDULE)
    return review.refresh_stale(now=timezone.now())


@worker_ready.connect
def _requeue_on_start(**_: object) -> None:
    requeue_stale_runs.delay()
    resend_registrations.delay()
