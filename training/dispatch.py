"""Putting a run on the queue. By task name: the services that start or retry runs do not import
the Celery task module, which imports them (settings.CELERY_TASK_ROUTES sends it to the first
GPU queue, or the run row names its queue: one per GPU type, settings.TRAINING_GPU_QUEUES). The message says only "look at run N"; the run row decides who runs it, so a message
sent twice is harmless and a message lost is re-sent (runs.runs_to_requeue, beat).

A broker that cannot be reached does not fail the request that started the run: the run stays
queued with the reason on its row (its page shows it), and beat sends it again.
"""

from __future__ import annotations

import logging
from datetime import datetime

from celery import current_app
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from kombu.exceptions import KombuError

from .models import TrainingRun

RUN_TASK = "training.tasks.run_training"
logger = logging.getLogger(__name__)


def run_send(run_id: int, *, now: datetime | None = None, countdown: float = 0) -> bool:
    """Send the run's message; record when (or why not). Returns whether it was sent. The time is
    when the message actually goes (a commit hook runs after the request's clock was read)."""
    now = now or timezone.now()
    # The run's GPU queue, if it named one; else the route in settings.CELERY_TASK_ROUTES.
    queue = TrainingRun.objects.filter(pk=run_id).values_list("queue", flat=True).first()
    try:
        current_app.send_task(
            RUN_TASK, args=(run_id,), countdown=countdown or None, queue=queue or None
        )
    except (KombuError, OSError) as exc:  # connection refused, timeouts, a broker gone away
        reason = f"{now:%Y-%m-%d %H:%M:%S} UTC: the broker could not be reached ({exc})"
        logger.warning("run %s not sent: %s", run_id, reason)
        TrainingRun.objects.filter(pk=run_id).update(dispatch_error=reason[:2000])
        return False
    TrainingRun.objects.filter(pk=run_id).update(
        enqueued_at=now, dispatches=F("dispatches") + 1, dispatch_error=""
    )
    return True


def run_enqueue_on_commit(run_id: int, *, countdown: float = 0) -> None:
    """Send the run to a worker once the current transaction commits (never a run row the
    worker cannot see yet)."""
    transaction.on_commit(lambda: run_send(run_id, countdown=countdown))
