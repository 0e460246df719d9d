"""The queue's rules, one process: overlap, no repeats, expiry, skip, idempotent submit."""

from __future__ import annotations

from datetime import timedelta

import pytest

from labeling import queue, services
from labeling.blinding import SLOTS
from labeling.errors import Conflict, Invalid, NotFound
from labeling.models import Demonstration, Lease, Ranking, Task
from tests.factories import PromptFactory, demonstration_task, member, ranking_task

pytestmark = pytest.mark.django_db


def _entries(task, ranks=(1, 2, 3, 4)):
    """A ranking of the task's outputs, each named by its slot letter in the lease."""
    return [
        {"completion": slot, "rank": r, "likert": 4, "flags": []}
        for slot, r in zip(SLOTS[: task.task_completions.count()], ranks, strict=True)
    ]


def test_claim_gives_a_lease_and_the_same_lease_again_on_a_second_click(project, personas, now):
    demonstration_task(project)
    demonstration_task(project)
    first = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind=Task.Kind.DEMONSTRATION, now=now
    )
    again = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind=Task.Kind.DEMONSTRATION, now=now
    )
    assert first is not None and again.pk == first.pk
    assert Lease.objects.filter(user=personas.alice).count() == 1


def test_overlap_is_never_overshot_by_active_leases(project, personas, now):
    project.overlap = 1
    project.save()
    task = ranking_task(project)
    lease = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind=Task.Kind.RANKING, now=now
    )
    assert lease.task_id == task.pk
    assert (
        queue.claim_next(user_id=personas.bob.pk, project=project, kind=Task.Kind.RANKING, now=now)
        is None
    )


def test_a_labeler_never_gets_their_own_prompt(project, personas, now):
    demonstration_task(project, PromptFactory(project=project, submitted_by=personas.alice))
    assert (
        queue.claim_next(user_id=personas.alice.pk, project=project, kind="demonstration", now=now)
        is None
    )
    assert (
        queue.claim_next(user_id=personas.bob.pk, project=project, kind="demonstration", now=now)
        is not None
    )


def test_a_labeler_never_gets_the_same_task_twice_after_submitting(project, personas, now):
    project.demo_overlap = 2
    project.save()
    task = demonstration_task(project)
    lease = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind="demonstration", now=now
    )
    services.demonstration_submit(lease_id=lease.pk, user_id=personas.alice.pk, text="Hi.", now=now)
    assert (
        queue.claim_next(user_id=personas.alice.pk, project=project, kind="demonstration", now=now)
        is None
    )
    other = queue.claim_next(
        user_id=personas.bob.pk, project=project, kind="demonstration", now=now
    )
    assert other.task_id == task.pk


def test_an_expired_lease_frees_its_slot_and_its_late_submit_gets_409(project, personas, now):
    task = demonstration_task(project)
    lease = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind="demonstration", now=now
    )
    later = now + timedelta(seconds=project.lease_seconds + 1)
    bobs = queue.claim_next(
        user_id=personas.bob.pk, project=project, kind="demonstration", now=later
    )
    assert bobs.task_id == task.pk
    with pytest.raises(Conflict):
        services.demonstration_submit(
            lease_id=lease.pk, user_id=personas.alice.pk, text="late", now=later
        )
    with pytest.raises(Conflict):
        queue.reclaim(lease_id=lease.pk, user_id=personas.alice.pk, now=later)
    services.demonstration_submit(
        lease_id=bobs.pk, user_id=personas.bob.pk, text="on time", now=later
    )
    assert Demonstration.objects.filter(task=task).count() == 1
    task.refresh_from_db()
    assert task.done


def test_an_expired_lease_can_be_reclaimed_while_its_slot_is_still_free(project, personas, now):
    demonstration_task(project)
    lease = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind="demonstration", now=now
    )
    later = now + timedelta(seconds=project.lease_seconds + 5)
    with pytest.raises(Conflict):
        queue.heartbeat(lease_id=lease.pk, user_id=personas.alice.pk, now=later)
    reclaimed = queue.reclaim(lease_id=lease.pk, user_id=personas.alice.pk, now=later)
    assert reclaimed.expires_at > later
    services.demonstration_submit(
        lease_id=lease.pk, user_id=personas.alice.pk, text="ok", now=later
    )


def test_heartbeat_extends_the_lease(project, personas, now):
    demonstration_task(project)
    lease = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind="demonstration", now=now
    )
    beat = queue.heartbeat(
        lease_id=lease.pk, user_id=personas.alice.pk, now=now + timedelta(seconds=60)
    )
    assert beat.expires_at == now + timedelta(seconds=60 + project.lease_seconds)


def test_skip_returns_the_task_to_others_but_not_to_the_skipper(project, personas, now):
    task = demonstration_task(project)
    lease = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind="demonstration", now=now
    )
    queue.skip(
        lease_id=lease.pk, user_id=personas.alice.pk, reason="I do not know the topic", now=now
    )
    assert Lease.objects.get(pk=lease.pk).skip_reason == "I do not know the topic"
    assert (
        queue.claim_next(user_id=personas.alice.pk, project=project, kind="demonstration", now=now)
        is None
    )
    assert (
        queue.claim_next(
            user_id=personas.bob.pk, project=project, kind="demonstration", now=now
        ).task_id
        == task.pk
    )


def test_a_double_submit_stores_one_ranking_and_returns_the_first(project, personas, now):
    task = ranking_task(project)
    lease = queue.claim_next(user_id=personas.alice.pk, project=project, kind="ranking", now=now)
    first, created = services.ranking_submit(
        lease_id=lease.pk, user_id=personas.alice.pk, entries=_entries(task), now=now
    )
    again, created_again = services.ranking_submit(
        lease_id=lease.pk, user_id=personas.alice.pk, entries=_entries(task, (4, 3, 2, 1)), now=now
    )
    assert created and not created_again and again.pk == first.pk
    assert Ranking.objects.count() == 1
    assert sorted(first.entries.values_list("rank", flat=True)) == [1, 2, 3, 4]


def test_someone_elses_lease_is_not_found(project, personas, now):
    demonstration_task(project)
    lease = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind="demonstration", now=now
    )
    with pytest.raises(NotFound):
        services.demonstration_submit(
            lease_id=lease.pk, user_id=personas.bob.pk, text="mine now", now=now
        )
    with pytest.raises(NotFound):
        queue.skip(lease_id=lease.pk, user_id=personas.outsider.pk, reason="x", now=now)
    assert not Demonstration.objects.exists()


def test_a_removed_member_cannot_submit_their_open_lease(project, personas, now):
    demonstration_task(project)
    lease = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind="demonstration", now=now
    )
    services.membership_remove(project=project, user_id=personas.alice.pk)
    with pytest.raises(NotFound):
        services.demonstration_submit(
            lease_id=lease.pk, user_id=personas.alice.pk, text="x", now=now
        )


@pytest.mark.parametrize(
    ("ranks", "likert", "why"),
    [
        ((1, 2, 3, 5), 4, "rank above K"),
        ((0, 1, 2, 3), 4, "rank below 1"),
        ((1, 2, 3, 4), 8, "likert above 7"),
        ((1, 2, 3, 4), 0, "likert below 1"),
    ],
)
def test_out_of_range_ranks_or_ratings_are_rejected(project, personas, now, ranks, likert, why):
    task = ranking_task(project)
    lease = queue.claim_next(user_id=personas.alice.pk, project=project, kind="ranking", now=now)
    entries = _entries(task, ranks)
    for e in entries:
        e["likert"] = likert
    with pytest.raises(Invalid):
        services.ranking_submit(
            lease_id=lease.pk, user_id=personas.alice.pk, entries=entries, now=now
        )
    assert not Ranking.objects.exists(), why
    assert Lease.objects.get(pk=lease.pk).status == Lease.Status.ACTIVE


def test_duplicate_missing_or_foreign_completions_are_rejected(project, personas, now):
    task = ranking_task(project)
    other = ranking_task(project)
    lease = queue.claim_next(user_id=personas.alice.pk, project=project, kind="ranking", now=now)
    assert lease.task_id == task.pk
    good = _entries(task)
    duplicate = [*good[:3], dict(good[0], rank=4)]
    missing = good[:3]
    foreign_id = other.task_completions.first().completion_id
    foreign = [*good[:3], dict(good[3], completion=foreign_id)]
    beyond = [*good[:3], dict(good[3], completion="E")]  # a slot this K=4 task does not have
    for entries in (duplicate, missing, foreign, beyond):
        with pytest.raises(Invalid):
            services.ranking_submit(
                lease_id=lease.pk, user_id=personas.alice.pk, entries=entries, now=now
            )
    assert not Ranking.objects.exists()


def test_ties_are_allowed_in_a_ranking(project, personas, now):
    task = ranking_task(project)
    lease = queue.claim_next(user_id=personas.alice.pk, project=project, kind="ranking", now=now)
    ranking, _ = services.ranking_submit(
        lease_id=lease.pk, user_id=personas.alice.pk, entries=_entries(task, (1, 1, 3, 3)), now=now
    )
    assert sorted(ranking.entries.values_list("rank", flat=True)) == [1, 1, 3, 3]


def test_empty_or_oversized_demonstrations_are_rejected(project, personas, now):
    demonstration_task(project)
    lease = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind="demonstration", now=now
    )
    for text in ("", "   \n\t ", "x" * 32_001):
        with pytest.raises(Invalid):
            services.demonstration_submit(
                lease_id=lease.pk, user_id=personas.alice.pk, text=text, now=now
            )
    assert not Demonstration.objects.exists()


def test_shown_order_is_a_stored_permutation_of_the_tasks_completions(project, personas, now):
    task = ranking_task(project)
    lease = queue.claim_next(user_id=personas.alice.pk, project=project, kind="ranking", now=now)
    ids = set(task.task_completions.values_list("completion_id", flat=True))
    assert set(lease.shown_order) == ids and len(lease.shown_order) == len(ids)
    ranking, _ = services.ranking_submit(
        lease_id=lease.pk, user_id=personas.alice.pk, entries=_entries(task), now=now
    )
    assert ranking.shown_order == lease.shown_order


def test_each_labeler_gets_an_order_of_their_own(project, now):
    """The database shuffles the outputs as it copies them onto the lease (statements.LEASE_INSERT).
    Tried: 24 labelers on one K=4 task; the chance that a fair shuffle gives all of them the
    same order is (1/24)^23, so a copy without the shuffle is what this catches."""
    project.overlap = 24
    project.save()
    task = ranking_task(project)
    orders = set()
    for i in range(24):
        user = member(project, f"shuffled{i}")
        lease = queue.claim_next(user_id=user.pk, project=project, kind="ranking", now=now)
        assert lease.task_id == task.pk
        assert sorted(lease.shown_order) == sorted(
            task.task_completions.values_list("completion_id", flat=True)
        )
        orders.add(tuple(lease.shown_order))
    assert len(orders) > 1


def test_members_of_one_project_get_nothing_from_another(project, personas, now):
    demonstration_task(personas.other_project)
    assert (
        queue.claim_next(user_id=personas.alice.pk, project=project, kind="demonstration", now=now)
        is None
    )
    member(personas.other_project, "carol")


def test_next_after_my_lease_expired_gives_me_the_same_lease_back_when_its_slot_is_free(
    project, personas, now
):
    ranking_task(project)
    first = queue.claim_next(user_id=personas.alice.pk, project=project, kind="ranking", now=now)
    later = now + timedelta(seconds=project.lease_seconds + 5)
    again = queue.claim_next(user_id=personas.alice.pk, project=project, kind="ranking", now=later)
    assert again.pk == first.pk  # re-activated in place: one lease row per (task, labeler)
    assert again.expires_at == later + timedelta(seconds=project.lease_seconds)
    assert again.shown_order == first.shown_order  # what she was shown does not change
    assert Lease.objects.filter(user=personas.alice).count() == 1


def test_next_after_my_lease_expired_and_the_slot_went_to_someone_else_gives_another_task(
    project, personas, now
):
    first_task, second_task = ranking_task(project), ranking_task(project)
    mine = queue.claim_next(user_id=personas.alice.pk, project=project, kind="ranking", now=now)
    assert mine.task_id == first_task.pk
    later = now + timedelta(seconds=project.lease_seconds + 5)
    bobs = queue.claim_next(user_id=personas.bob.pk, project=project, kind="ranking", now=later)
    assert bobs.task_id == first_task.pk  # overlap 1: her expired lease no longer holds it
    again = queue.claim_next(user_id=personas.alice.pk, project=project, kind="ranking", now=later)
    assert again.task_id == second_task.pk


def test_higher_priority_tasks_are_served_first_then_oldest_first(project, personas, now):
    low, high, high_later = ranking_task(project), ranking_task(project), ranking_task(project)
    Task.objects.filter(pk__in=[high.pk, high_later.pk]).update(priority=5)
    order = []
    for user in (personas.alice, personas.bob, personas.admin, personas.reviewer):
        lease = queue.claim_next(user_id=user.pk, project=project, kind="ranking", now=now)
        order.append(lease.task_id if lease else None)
    assert order == [high.pk, high_later.pk, low.pk, None]  # overlap 1: three tasks, three leases


def test_reclaiming_an_expired_lease_after_next_gave_another_task_of_its_kind_is_a_409(
    project, personas, now
):
    """One active lease per (labeler, project, kind) holds for reclaim too: before, the old tab's
    reclaim re-activated the first lease beside the one `next` had given meanwhile."""
    demonstration_task(project)
    first = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind="demonstration", now=now
    )
    later = now + timedelta(seconds=project.lease_seconds + 5)
    urgent = demonstration_task(project, priority=5)
    second = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind="demonstration", now=later
    )
    assert second.task_id == urgent.pk
    with pytest.raises(Conflict, match="already hold another demonstration task"):
        queue.reclaim(lease_id=first.pk, user_id=personas.alice.pk, now=later)
    held = Lease.objects.filter(user=personas.alice, status="active", expires_at__gt=later)
    assert list(held.values_list("pk", flat=True)) == [second.pk]
