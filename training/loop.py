"""Claiming and closing runs. Closing a run and advancing the round it belongs to happen in one
transaction: a round's next step starts exactly when its current step's run succeeds, and a
failed or cancelled step stops the round with its reason, losing nothing.

Every transition of a run's status is here (runs.py starts runs and records progress):
queued → running (claim) → succeeded | failed | cancelled, or back to queued for a retry; and
the cancel of a whole round.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction

from labeling.errors import Conflict, NotFound
from labeling.models import Project

from . import dispatch, rounds, runs, storage
from .models import Round, RoundStatus, RoundStep, RunStatus, TrainingRun

TERMINAL = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}


def _finish(run: TrainingRun, status: str, *, now: datetime, error: str = "") -> None:
    """Close the run (the caller holds its row lock) and advance or stop its round."""
    run.status = status
    run.error = error[:20_000]
    run.finished_at = now
    run.lease_owner = ""
    run.lease_expires_at = None
    run.save()
    rounds.round_on_run_finished(run=run, now=now)


def run_claim(*, run_id: int, worker: str, now: datetime) -> TrainingRun | None:
    """Take the run's lease, or None if it is finished or another live worker holds it."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status in TERMINAL:
            return None
        if run.cancel_requested:
            _finish(run, RunStatus.CANCELLED, now=now, error="Cancelled before it ran.")
            return None
        held = (
            run.status == RunStatus.RUNNING and run.lease_expires_at and run.lease_expires_at > now
        )
        if held and run.lease_owner != worker:
            return None
        if run.attempt >= run.max_attempts:
            _finish(
                run,
                RunStatus.FAILED,
                now=now,
                error=f"Gave up after {run.attempt} attempts. Last error: {run.error or 'worker lost'}",
            )
            return None
        run.attempt += 1
        run.dispatches, run.dispatch_error = 0, ""  # it arrived: a later re-send starts afresh
        run.status = RunStatus.RUNNING
        run.lease_owner = run.ran_on = worker
        run.lease_expires_at = now + timedelta(seconds=runs.lease_seconds())
        run.heartbeat_at = now
        run.started_at = run.started_at or now
        run.save()
        return run


def run_succeed(*, run_id: int, worker: str, result: dict[str, Any], now: datetime) -> TrainingRun:
    """Store what the run produced (runs.outputs_store), then close it."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().select_related("project").get(pk=run_id)
        if run.status == RunStatus.SUCCEEDED:
            return run
        if run.lease_owner != worker:
            raise runs.LeaseLost(f"run {run_id} is held by {run.lease_owner!r}")
        runs.outputs_store(run, result)
        _finish(run, RunStatus.SUCCEEDED, now=now)
        return run


def run_fail(*, run_id: int, worker: str, error: str, retry: bool, now: datetime) -> TrainingRun:
    """Record a failure. With retry the run goes back to queued until max_attempts is reached."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        if run.status in TERMINAL or run.lease_owner != worker:
            return run
        if retry and run.attempt < run.max_attempts:
            run.status = RunStatus.QUEUED
            run.error = error[:20_000]
            run.lease_owner = ""
            run.lease_expires_at = None
            run.save()
            dispatch.run_enqueue_on_commit(run_id, countdown=5)
        else:
            if retry:
                error = f"Gave up after {run.attempt} attempts. Last error: {error}"
            _finish(run, RunStatus.FAILED, now=now, error=error)
        return run


def run_mark_cancelled(*, run_id: int, now: datetime) -> None:
    """The worker stopped a run an admin cancelled; its checkpoints go."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        if run.status not in TERMINAL:
            _finish(run, RunStatus.CANCELLED, now=now, error="Cancelled by an admin.")
    storage.checkpoints_discard(run=run)


def run_cancel(*, run_id: int, project: Project, now: datetime) -> TrainingRun:
    """Ask a run to stop: a queued one stops now, a running one at its next step."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id, project=project).first()
        if run is None:
            raise NotFound("No such run.")
        if run.status in TERMINAL:
            raise Conflict(f"The run already {run.status}.")
        _cancel(run, now=now)
        return run


def run_resume(*, run_id: int, project: Project, now: datetime, by: str = "") -> TrainingRun:
    """Queue a failed run again with a fresh set of attempts. Its engine continues from the last
    checkpoint the run saved (the launcher's retry path), so the steps before it are not paid
    twice. The failure it had stays on the row, as a retried attempt's does, until it succeeds.

    Only a failed run: a cancelled one discarded its checkpoints (start a new run), and a step
    of a round belongs to that round, which stopped when the step failed (start a new round)."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id, project=project).first()
        if run is None:
            raise NotFound("No such run.")
        if run.status != RunStatus.FAILED:
            hints = {
                RunStatus.CANCELLED.value: " A cancelled run's checkpoints are gone: start a new run.",
                RunStatus.SUCCEEDED.value: "",
            }
            hint = hints.get(run.status, " It has not finished.")
            raise Conflict(f"Only a failed run can be resumed; this one is {run.status}.{hint}")
        step = RoundStep.objects.filter(run=run).select_related("round").first()
        if step is not None:
            raise Conflict(
                f"This run is a step of round {step.round.number}, which stopped when the step"
                " failed: start a new round instead."
            )
        who = f" by {by}" if by else ""
        run.error = f"Resumed{who} at {now:%Y-%m-%d %H:%M:%S} UTC. It had failed: {run.error}"[
            :20_000
        ]
        run.status = RunStatus.QUEUED
        run.max_attempts = run.attempt + RESUME_ATTEMPTS
        run.finished_at = None
        run.cancel_requested = False
        run.save()
        dispatch.run_enqueue_on_commit(run.pk)
        return run


# The attempts a resumed run gets (as many as a new run).
RESUME_ATTEMPTS = 3


def _cancel(run: TrainingRun, *, now: datetime) -> None:
    """Flag the run (the caller holds its row lock): a queued one stops now, a running one at its
    next step, when its worker sees the flag."""
    run.cancel_requested = True
    run.save(update_fields=["cancel_requested"])
    if run.status == RunStatus.QUEUED:
        _finish(run, RunStatus.CANCELLED, now=now, error="Cancelled by an admin.")


def round_cancel(*, project: Project, number: int, now: datetime) -> Round:
    """Stop a running round and each of its unfinished runs (a queued one now, a running one at
    its next step). The runs, data and models it made so far stay.

    First the round alone is marked, in a transaction of its own: from then on no close of one
    of its runs starts another step (they read the round under its lock). Then each unfinished
    run is cancelled in its own transaction, as an admin's cancel of that run would be; one that
    finished meanwhile is left as it is. No transaction here holds a round's lock while it waits
    for a run's, which every run's close takes in the other order.
    """
    with transaction.atomic():
        round_ = Round.objects.select_for_update().filter(project=project, number=number).first()
        if round_ is None:
            raise NotFound("No such round.")
        if round_.status != RoundStatus.RUNNING:
            raise Conflict(f"The round already {round_.status}.")
        round_.status = RoundStatus.CANCELLED
        round_.error = "Cancelled by an admin."
        round_.finished_at = now
        round_.save(update_fields=["status", "error", "finished_at"])
    unfinished = TrainingRun.objects.filter(round_step__round=round_).exclude(status__in=TERMINAL)
    for run_id in unfinished.order_by("pk").values_list("pk", flat=True):
        with contextlib.suppress(Conflict):  # it finished meanwhile
            run_cancel(run_id=run_id, project=project, now=now)
    return round_
