"""The second task suite, errands.py: its gold judge, flawed answers and prompt split."""

import pytest

from training.demo import errands, families
from training.demo.errands import (
    FAMILIES,
    all_prompts,
    family_of,
    flawed_response,
    gold_response,
    judge,
    sample_prompts,
)

# Per family: a prompt, its gold answer, and flawed answers from worst to best, each strictly
# better than the one before and strictly worse than the gold.
CASES = {
    "sort": (
        "Sort these numbers from smallest to largest: 7, 2, 9.",
        "2, 7, 9",
        ["Dogs are nice.", "9, 7, 2", "7, 2, 9", "2, 7"],
    ),
    "neighbour": (
        "What day comes after Monday?",
        "Tuesday.",
        ["I like pizza.", "Monday.", "Wednesday.", "Sunday.", "Tuesday or Sunday."],
    ),
    "plural": (
        "What is the plural of mouse?",
        "mice.",
        ["Blue sky.", "mouse", "mouses", "mice or mouses"],
    ),
    "uppercase": (
        "Write the word table in capital letters.",
        "TABLE",
        ["chair", "table", "Table", "TABle", "TABLE TABLE TABLE TABLE TABLE TABLE"],
    ),
    "parity": (
        "Is 14 an even number? Answer yes or no.",
        "Yes.",
        ["Maybe.", "No.", "Yes and no."],
    ),
    "hyphenate": (
        "Spell garden with hyphens between the letters.",
        "g-a-r-d-e-n",
        ["Hello there.", "garden", "g a r d e n", "g-a-r-d-n"],
    ),
    "in_words": (
        "Write the number 42 in words.",
        "Forty-two.",
        ["Blue.", "eighty-seven", "42", "forty-three", "forty-two or forty-three"],
    ),
}


def test_the_cases_cover_every_family_and_no_family_is_the_demos():
    assert set(CASES) == set(FAMILIES)
    assert 6 <= len(FAMILIES) <= 8
    assert not set(FAMILIES) & set(families.FAMILIES)
    for family, (prompt, _, _) in CASES.items():
        assert family_of(prompt) == family


def test_the_module_says_it_was_written_before_tuning_and_is_never_tuned_on():
    doc = " ".join(errands.__doc__.split())
    assert "2026-12-05" in doc
    assert "before any tuning" in doc and "never to be tuned on" in doc


@pytest.mark.parametrize("family", FAMILIES)
def test_the_gold_answer_scores_one_without_flags(family):
    prompt, gold, _ = CASES[family]
    assert gold_response(prompt) == gold
    verdict = judge(prompt, gold)
    assert (verdict.quality, verdict.likert, verdict.flags) == (1.0, 7, frozenset())


@pytest.mark.parametrize("family", FAMILIES)
def test_flawed_answers_are_graded_below_the_gold_in_order(family):
    prompt, gold, flawed = CASES[family]
    qualities = [judge(prompt, text).quality for text in [*flawed, gold]]
    assert qualities == sorted(qualities) and len(set(qualities)) == len(qualities), qualities


@pytest.mark.parametrize("family", FAMILIES)
def test_an_empty_or_off_task_answer_scores_low_and_fails_to_follow(family):
    prompt, _, flawed = CASES[family]
    assert judge(prompt, "   ").quality == 0.0
    off_task = judge(prompt, flawed[0])
    assert off_task.quality <= 0.1
    assert "fails_to_follow" in off_task.flags


@pytest.mark.parametrize("family", FAMILIES)
def test_rambling_after_the_gold_answer_costs_quality_and_flags_hallucination(family):
    prompt, gold, _ = CASES[family]
    verdict = judge(prompt, f"{gold} The old man went to the market. We saw a big boat.")
    assert verdict.quality < 0.6
    assert "hallucination" in verdict.flags


def test_every_prompt_is_judged_from_its_text_and_its_gold_scores_one():
    prompts = all_prompts()
    assert len(prompts) == len(set(prompts)) > 2000
    for prompt in prompts:
        assert family_of(prompt) is not None, prompt
        verdict = judge(prompt, gold_response(prompt))
        assert verdict.quality == 1.0 and not verdict.flags, (prompt, verdict)


def test_every_flawed_answer_scores_below_the_gold():
    for i, prompt in enumerate(all_prompts()):
        for seed in (i, i + 100_000):
            flawed = flawed_response(prompt, seed=seed)
            assert judge(prompt, flawed).quality < 1.0, (prompt, flawed)


def test_flawed_answers_are_graded_and_low_on_average():
    prompts = sample_prompts(700, seed=2)
    flawed = [judge(p, flawed_response(p, seed=i)).quality for i, p in enumerate(prompts)]
    assert sum(flawed) / len(flawed) < 0.5
    assert len({round(q, 2) for q in flawed}) > 20  # graded, so rankings carry signal


def test_no_prompt_of_one_suite_parses_as_the_other():
    assert not [p for p in all_prompts() if families.family_of(p)]
    assert not [p for p in families.all_prompts() if family_of(p)]


def test_the_split_is_disjoint_complete_and_stable():
    train, heldout = all_prompts(split="train"), all_prompts(split="heldout")
    assert not set(train) & set(heldout)
    assert sorted(train + heldout) == sorted(all_prompts())
    assert 0.05 < len(heldout) / len(all_prompts()) < 0.15
    assert all_prompts(split="heldout") == heldout
    assert {family_of(p) for p in heldout} == set(FAMILIES)
    with pytest.raises(ValueError, match="split"):
        all_prompts(split="dev")


def test_sample_prompts_is_deterministic_in_the_seed_and_covers_every_family():
    assert sample_prompts(50, seed=3) == sample_prompts(50, seed=3)
    assert sample_prompts(50, seed=3) != sample_prompts(50, seed=4)
    prompts = sample_prompts(1500, seed=0)
    assert len(set(prompts)) == 1500
    assert {family_of(p) for p in prompts} == set(FAMILIES)
    assert set(sample_prompts(100, seed=0, split="heldout")) <= set(all_prompts(split="heldout"))
    with pytest.raises(ValueError):
        sample_prompts(100_000, seed=0)


def test_judge_reads_prompts_with_odd_whitespace_and_case():
    assert judge("  what  DAY comes after monday? ", "Tuesday").quality == 1.0
    assert judge("Is 7 an ODD number?  Answer yes or no.", "yes").quality == 1.0


def test_sorting_is_judged_in_the_asked_direction_and_invented_numbers_are_hallucinations():
    prompt = "Order the numbers 4, 1, 8 from largest to smallest."
    assert gold_response(prompt) == "8, 4, 1"
    assert judge(prompt, "1, 4, 8").quality < 0.5
    verdict = judge(prompt, "8, 5, 4, 1")
    assert 0.3 < verdict.quality < 1.0
    assert "hallucination" in verdict.flags


def test_letters_and_months_have_neighbours_too():
    assert gold_response("Which letter comes right before h?") == "g."
    assert gold_response("Name the month that comes after December.") == "January."
    assert judge("What letter comes after g?", "The letter after g is h.").quality == 1.0


def test_uppercase_is_judged_on_case():
    prompt = "Write pencil in uppercase."
    assert judge(prompt, "PENCIL").quality == 1.0
    assert judge(prompt, "pencil").quality < judge(prompt, "PENcil").quality < 1.0
    assert judge(prompt, "PENCL").quality < 1.0


def test_numbers_in_words_accept_a_space_or_a_hyphen():
    prompt = "How do you write 71 in words?"
    assert judge(prompt, "seventy one").quality == judge(prompt, "Seventy-one.").quality == 1.0
    assert judge("Write the number 13 in words.", "thirteen").quality == 1.0
    assert judge("Write the number 0 in words.", "Zero.").quality == 1.0


def test_unknown_prompts_get_the_demos_generic_score():
    prompt, answer = "Tell me a story about a dragon.", "The dragon slept on a pile of gold."
    assert judge(prompt, answer) == families.judge(prompt, answer)
    with pytest.raises(ValueError, match="errands"):
        gold_response(prompt)
    with pytest.raises(ValueError):
        flawed_response(prompt, seed=0)


def test_likert_follows_quality():
    prompts = sample_prompts(300, seed=7)
    verdicts = [judge(p, flawed_response(p, seed=i)) for i, p in enumerate(prompts)]
    assert all(1 <= v.likert <= 7 for v in verdicts)
    ordered = sorted(verdicts, key=lambda v: v.quality)
    assert [v.likert for v in ordered] == sorted(v.likert for v in ordered)
