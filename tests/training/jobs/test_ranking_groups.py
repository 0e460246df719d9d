"""Samples into ranking tasks (a sampling run's, and a round's mix of two policies'): a pure
function, no database."""

from __future__ import annotations

from dataclasses import dataclass

from training.rounds import ranking_sample_counts
from training.runs import ranking_groups


@dataclass(frozen=True)
class Sample:
    prompt_id: int
    text: str


def test_k_is_split_between_the_new_and_the_previous_policy_the_new_one_taking_the_odd_one():
    assert [ranking_sample_counts(k) for k in (2, 3, 4, 9)] == [(1, 1), (2, 1), (2, 2), (5, 4)]


def test_each_prompt_with_k_different_answers_is_one_group_in_sample_order():
    samples = [
        Sample(7, "new a"), Sample(3, "new c"), Sample(7, "new b"), Sample(3, "new d"),
        Sample(7, "old a"), Sample(3, "old c"), Sample(7, "old b"), Sample(3, "old d"),
    ]  # fmt: skip
    found = ranking_groups(samples, k=4)
    assert [[s.text for s in group] for group in found.groups] == [
        ["new a", "new b", "old a", "old b"],
        ["new c", "new d", "old c", "old d"],
    ]
    assert all(s is samples[i] for s, i in zip(found.groups[0], (0, 2, 4, 6), strict=True))
    assert found.dropped == []


def test_a_prompt_keeps_its_first_k_different_answers_and_one_with_fewer_than_two_is_dropped():
    samples = [
        Sample(1, "a"), Sample(1, "b"), Sample(1, "a"), Sample(1, "c"),  # a repeat: a, b, c
        Sample(2, "a"), Sample(2, "b"),  # two short of K: a, b
        Sample(3, "a"), Sample(3, "b"), Sample(3, "c"), Sample(3, "d"), Sample(3, "e"),  # 1 over
        Sample(4, "w"), Sample(4, "w"), Sample(4, "w"), Sample(4, "w"),  # one text four times
        Sample(5, "z"),  # one sample
    ]  # fmt: skip
    found = ranking_groups(samples, k=4)
    assert [[s.text for s in g] for g in found.groups] == [
        ["a", "b", "c"], ["a", "b"], ["a", "b", "c", "d"]
    ]  # fmt: skip
    assert found.groups[0][2] is samples[3]  # the first sample of each text
    assert found.dropped == [4, 5]


def test_no_samples_give_no_groups():
    found = ranking_groups([], k=2)
    assert (found.groups, found.dropped) == ([], [])
