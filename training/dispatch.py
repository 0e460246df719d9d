"""Putting a run on the queue. By task name: the services that start or retry runs do not import
the Celery task module, which imports them (settings.CELERY_TASK_ROUTES sends it to the gpu
queue). The message says only "look at run N"; the run row decides who runs it."""

from __future__ import annotations

from celery import current_app
from django.db import transaction

RUN_TASK = "training.tasks.run_training"


def run_enqueue_on_commit(run_id: int, *, countdown: float = 0) -> None:
    """Send the run to a worker once the current transaction commits (never a run row the
    worker cannot see yet)."""
    transaction.on_commit(
        lambda: current_app.send_task(RUN_TASK, args=(run_id,), countdown=countdown or None)
    )
