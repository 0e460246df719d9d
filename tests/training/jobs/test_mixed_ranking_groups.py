"""A round's mixing of two policies' samples into ranking tasks: a pure function, no database."""

from __future__ import annotations

from dataclasses import dataclass

from training.rounds import mixed_ranking_groups, ranking_sample_counts


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
    groups = mixed_ranking_groups(samples, k=4)
    assert [[s.text for s in group] for group in groups] == [
        ["new a", "new b", "old a", "old b"],
        ["new c", "new d", "old c", "old d"],
    ]
    assert all(s is samples[i] for s, i in zip(groups[0], (0, 2, 4, 6), strict=True))


def test_a_prompt_with_a_repeated_answer_or_the_wrong_number_of_samples_gives_no_group():
    samples = [
        Sample(1, "a"), Sample(1, "b"), Sample(1, "a"), Sample(1, "c"),  # a repeat
        Sample(2, "a"), Sample(2, "b"), Sample(2, "c"),  # one short
        Sample(3, "a"), Sample(3, "b"), Sample(3, "c"), Sample(3, "d"), Sample(3, "e"),  # one over
        Sample(4, "w"), Sample(4, "x"), Sample(4, "y"), Sample(4, "z"),
    ]  # fmt: skip
    assert [[s.prompt_id for s in g] for g in mixed_ranking_groups(samples, k=4)] == [[4] * 4]


def test_no_samples_give_no_groups():
    assert mixed_ranking_groups([], k=2) == []
