"""The counters PostgreSQL keeps (labeling/tally.py, migration labeling 0010) always equal a count
of the rows, through everything the queue and the admins do: claims, submits, skips, expiry,
release, bulk creation, deletion of tasks and of a whole project."""

from __future__ import annotations

from datetime import timedelta

import pytest

from labeling import queue, services, tally
from labeling.blinding import SLOTS
from labeling.models import LabelerTally, Lease, Project, Task, TaskTally
from tests.factories import PromptFactory, demonstration_task, member, ranking_task

pytestmark = pytest.mark.postgres_only


def _entries(task, ranks=(1, 2, 3, 4)):
    return [
        {"completion": slot, "rank": r, "likert": 4, "flags": []}
        for slot, r in zip(SLOTS[: task.task_completions.count()], ranks, strict=True)
    ]


def _assert_counters_match_rows(project: Project) -> dict:
    counted = tally.progress(project_id=project.pk, counted=True)
    assert tally.progress(project_id=project.pk) == counted
    assert tally.labeler_totals(project_id=project.pk) == tally.labeler_totals(
        project_id=project.pk, counted=True
    )
    return counted


def _claim(user, project, kind, now):
    return queue.claim_next(user_id=user.pk, project=project, kind=kind, now=now)


def test_the_counters_follow_every_change_the_queue_and_the_admins_make(project, personas, now):
    project.overlap = 2
    project.save()
    carol = member(project, "carol_labeler")
    demos = [demonstration_task(project) for _ in range(3)]
    for _ in range(3):
        ranking_task(project)
    counted = _assert_counters_match_rows(project)
    assert counted["ranking"] == {"tasks": 3, "done": 0, "submitted": 0, "wanted": 6}
    assert counted["demonstration"]["tasks"] == 3

    # Claims alone change nothing; a submit counts; the task is done at its overlap.
    lease = _claim(personas.alice, project, Task.Kind.DEMONSTRATION, now)
    _assert_counters_match_rows(project)
    services.demonstration_submit(lease_id=lease.pk, user_id=personas.alice.pk, text="Hi", now=now)
    for user in (personas.alice, personas.bob):
        lease = _claim(user, project, Task.Kind.RANKING, now)
        services.ranking_submit(
            lease_id=lease.pk, user_id=user.pk, entries=_entries(lease.task), now=now
        )
    counted = _assert_counters_match_rows(project)
    assert counted["ranking"]["submitted"] == 2 and counted["ranking"]["done"] == 1
    assert counted["demonstration"] == {"tasks": 3, "done": 1, "submitted": 1, "wanted": 3}

    # A skip, a lease left to expire and released, and a re-claim of an expired lease.
    lease = _claim(carol, project, Task.Kind.RANKING, now)
    queue.skip(lease_id=lease.pk, user_id=carol.pk, reason="unclear", now=now)
    _claim(personas.bob, project, Task.Kind.DEMONSTRATION, now)
    later = now + timedelta(hours=2)
    queue.release_stale(now=later, older_than=timedelta(minutes=1))
    lease = _claim(personas.alice, project, Task.Kind.DEMONSTRATION, later)
    services.demonstration_submit(lease_id=lease.pk, user_id=personas.alice.pk, text="Ho", now=now)
    totals = tally.labeler_totals(project_id=project.pk)
    assert totals[carol.pk]["skipped"] == 1
    assert totals[personas.alice.pk]["demonstration"] == 2
    _assert_counters_match_rows(project)

    # Bulk creation (imports and sampling use bulk_create), then deletions.
    prompts = PromptFactory.create_batch(5, project=project)
    Task.objects.bulk_create(
        Task(project=project, kind=Task.Kind.DEMONSTRATION, prompt=p, overlap=2) for p in prompts
    )
    assert _assert_counters_match_rows(project)["demonstration"]["tasks"] == 8
    # Deleting tasks (submissions protect theirs: these have a skipped and an active lease).
    spare = [ranking_task(project) for _ in range(2)]
    for task, status in zip(spare, ("skipped", "active"), strict=True):
        Lease.objects.create(
            task=task, user=carol, status=status, created_at=now, expires_at=now, heartbeat_at=now
        )
    assert tally.labeler_totals(project_id=project.pk)[carol.pk]["skipped"] == 2
    Task.objects.filter(pk__in=[demos[2].pk, *(t.pk for t in spare)]).delete()
    counted = _assert_counters_match_rows(project)
    assert counted["demonstration"]["tasks"] == 7 and counted["ranking"]["tasks"] == 3
    assert tally.labeler_totals(project_id=project.pk)[carol.pk]["skipped"] == 1

    # A recount from the rows gives what the triggers kept.
    before = (
        sorted(TaskTally.objects.filter(project=project).values_list("kind", "tasks", "done")),
        tally.labeler_totals(project_id=project.pk),
    )
    tally.rebuild(project_id=project.pk)
    after = (
        sorted(TaskTally.objects.filter(project=project).values_list("kind", "tasks", "done")),
        tally.labeler_totals(project_id=project.pk),
    )
    assert _summed(before[0]) == _summed(after[0]) and before[1] == after[1]

    # Deleting a project takes its counters with it, whatever order Django deletes rows in.
    other = personas.other_project
    task = demonstration_task(other)
    lease = _claim(personas.outsider, other, Task.Kind.DEMONSTRATION, now)
    queue.skip(lease_id=lease.pk, user_id=personas.outsider.pk, reason="no", now=now)
    assert TaskTally.objects.filter(project=other).exists()
    assert LabelerTally.objects.filter(project=other).exists()
    other_id = other.pk
    other.delete()
    assert not Task.objects.filter(pk=task.pk).exists()
    assert not TaskTally.objects.filter(project_id=other_id).exists()
    assert not LabelerTally.objects.filter(project_id=other_id).exists()
    _assert_counters_match_rows(project)


def _summed(rows):
    out: dict[str, list[int]] = {}
    for kind, tasks, done in rows:
        out.setdefault(kind, [0, 0])
        out[kind][0] += tasks
        out[kind][1] += done
    return out


def test_progress_counts_the_same_on_either_path_in_a_project_with_nothing_yet(project):
    empty = {"tasks": 0, "done": 0, "submitted": 0, "wanted": 0}
    assert tally.progress(project_id=project.pk) == dict.fromkeys(Task.Kind.values, empty)
    assert tally.progress(project_id=project.pk, counted=True) == tally.progress(
        project_id=project.pk
    )


def test_tally_rebuild_finds_counters_that_drifted_and_recounts_them(project, personas):
    from django.core.management import CommandError, call_command

    demonstration_task(project)
    call_command("tally_rebuild", "--check")  # the triggers kept them
    TaskTally.objects.filter(project=project).update(done=5)  # as a load with triggers off would
    with pytest.raises(CommandError, match=project.slug):
        call_command("tally_rebuild", "--check")
    call_command("tally_rebuild", "--project", project.slug)
    call_command("tally_rebuild", "--check")
    assert tally.progress(project_id=project.pk)["demonstration"]["done"] == 0
    with pytest.raises(CommandError, match="No project"):
        call_command("tally_rebuild", "--project", "no-such-project")
