"""Two "Start round" presses at the same moment, with real threads on PostgreSQL.

Before: both passed the "is a round running?" check and one insert failed on the round number's
unique constraint: a 500. Now: one round starts, the other press answers Conflict (a 409 page),
as a press after the first would.
"""

from __future__ import annotations

import threading

import pytest
from django.db import IntegrityError, connection, connections, transaction

from labeling import queue, services
from labeling.blinding import SLOTS
from labeling.errors import Conflict
from tests.factories import ModelVersionFactory, ProjectFactory, member, ranking_task
from training import rounds
from training.models import Round, RoundStatus

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def ready(settings, tmp_path):
    settings.MODEL_ROOT = tmp_path / "models"
    settings.RUN_ROOT = tmp_path / "runs"
    (settings.MODEL_ROOT / "sft").mkdir(parents=True)
    project = ProjectFactory(k=4, overlap=1)
    admin = member(project, "ada_admin", "admin")
    alice = member(project, "alice_labeler")
    ranking_task(project)
    from django.utils import timezone

    now = timezone.now()
    lease = queue.claim_next(user_id=alice.pk, project=project, kind="ranking", now=now)
    entries = [{"completion": SLOTS[i], "rank": i + 1, "likert": 4, "flags": []} for i in range(4)]
    services.ranking_submit(lease_id=lease.pk, user_id=alice.pk, entries=entries, now=now)
    sft = ModelVersionFactory(project=project, name="sft", kind="sft", path="sft")
    return project, admin, sft


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
def test_two_start_round_presses_at_once_start_one_round_and_the_other_is_a_conflict(ready):
    project, admin, sft = ready
    outcomes: list[str] = []
    barrier = threading.Barrier(4)
    lock = threading.Lock()

    def press():
        try:
            barrier.wait()
            rounds.round_start(project=project, policy=sft, created_by=admin)
            outcome = "started"
        except Conflict:
            outcome = "conflict"
        except Exception as exc:  # noqa: BLE001 - any other outcome is the failure we test for
            outcome = f"error: {exc!r}"
        finally:
            connections.close_all()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=press) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["conflict", "conflict", "conflict", "started"], outcomes
    assert Round.objects.filter(project=project).count() == 1


def test_the_database_refuses_a_second_running_round_whatever_the_code_does(ready):
    project, admin, sft = ready
    Round.objects.create(project=project, number=1, policy=sft, status=RoundStatus.RUNNING)
    with pytest.raises(IntegrityError), transaction.atomic():
        Round.objects.create(project=project, number=2, policy=sft, status=RoundStatus.RUNNING)
    Round.objects.create(project=project, number=2, policy=sft, status=RoundStatus.FAILED)


def _cancel_while_the_step_succeeds(project, admin, sft) -> tuple[Round, list[str]]:
    """One trial: the round's cancel and its reward run's success, released together."""
    from django.utils import timezone

    from training import loop, storage

    round_ = rounds.round_start(project=project, policy=sft, created_by=admin)
    reward = round_.reward_run
    now = timezone.now()
    loop.run_claim(run_id=reward.pk, worker="w", now=now)
    produced = storage.run_dir(reward) / "model"
    produced.mkdir(parents=True)
    (produced / "model.safetensors").write_bytes(b"weights")
    result = {"output_dir": str(produced.parent)}
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def guarded(work):
        try:
            barrier.wait()
            work()
            outcomes.append("ok")
        except Exception as exc:  # noqa: BLE001 - a deadlock or a 500 is what we test for
            outcomes.append(repr(exc))
        finally:
            connections.close_all()

    works = [
        lambda: loop.round_cancel(project=project, number=round_.number, now=now),
        lambda: loop.run_succeed(run_id=reward.pk, worker="w", result=result, now=now),
    ]
    threads = [threading.Thread(target=guarded, args=(work,)) for work in works]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    round_.refresh_from_db()
    return round_, outcomes


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
def test_a_round_cancelled_while_its_step_finishes_ends_cancelled_with_nothing_left_running(ready):
    """Cancel the round at the very moment its reward step's run succeeds (which starts PPO):
    whichever commits first, no deadlock, no error, and no step of it is left to run."""
    project, admin, sft = ready
    for trial in range(6):
        round_, outcomes = _cancel_while_the_step_succeeds(project, admin, sft)
        assert outcomes == ["ok", "ok"], (trial, outcomes)
        assert round_.status == RoundStatus.CANCELLED, trial
        left = round_.runs("policy").exclude(status="cancelled").filter(cancel_requested=False)
        assert not left.exists(), (trial, list(left.values("pk", "status")))
