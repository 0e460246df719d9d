import pytest

from training.demo.families import (
    FAMILIES,
    family_of,
    flawed_response,
    gold_response,
    judge,
    sample_prompts,
)

# One hand-picked prompt per family, with a known bad and a known partial answer.
CASES = {
    "list": ("List three fruits.", "dog, car, blue", "apple, banana"),
    "count": ("Count from 3 to 7.", "hello there", "3, 4, 5"),
    "opposite": ("What is the opposite of hot?", "The opposite of hot is hot.", "Cold or big."),
    "repeat": ("Repeat the word moon 3 times.", "The sun is bright.", "moon moon"),
    "reverse": ("Spell cat backwards.", "cat", "tca"),
    "sentence": ("Write a sentence about a dog.", "Blue.", "the dog runs fast"),
    "compare": ("Is 7 greater than 4? Answer yes or no.", "No.", "Yes and no."),
    "arithmetic": ("What is 3 plus 4?", "3 plus 4 is 11.", "8"),
}


def test_the_cases_cover_every_family():
    assert set(CASES) == set(FAMILIES)
    assert len(FAMILIES) == 8
    for family, (prompt, _, _) in CASES.items():
        assert family_of(prompt) == family


def test_sample_prompts_are_distinct_and_cover_every_family():
    prompts = sample_prompts(800, seed=0)
    assert len(prompts) == len(set(prompts)) == 800
    assert {family_of(p) for p in prompts} == set(FAMILIES)


def test_there_are_a_few_thousand_distinct_prompts():
    assert len(sample_prompts(3000, seed=0)) == 3000
    with pytest.raises(ValueError):
        sample_prompts(100_000, seed=0)


def test_sample_prompts_is_deterministic_in_the_seed():
    assert sample_prompts(50, seed=3) == sample_prompts(50, seed=3)
    assert sample_prompts(50, seed=3) != sample_prompts(50, seed=4)


def test_heldout_and_train_splits_do_not_overlap():
    heldout = set(sample_prompts(200, seed=0, split="heldout"))
    train = set(sample_prompts(2500, seed=0, split="train"))
    assert len(heldout) == 200
    assert not heldout & train


@pytest.mark.parametrize("family", FAMILIES)
def test_gold_responses_score_at_least_095_for_every_prompt_of_a_family(family):
    prompts = [p for p in sample_prompts(3400, seed=1) if family_of(p) == family]
    assert prompts
    for prompt in prompts:
        verdict = judge(prompt, gold_response(prompt))
        assert verdict.quality >= 0.95, (prompt, gold_response(prompt), verdict)
        assert verdict.likert == 7
        assert not verdict.flags


@pytest.mark.parametrize("family", FAMILIES)
def test_known_bad_answers_score_low_and_fail_to_follow(family):
    prompt, bad, _ = CASES[family]
    verdict = judge(prompt, bad)
    assert verdict.quality <= 0.2
    assert verdict.likert <= 2
    assert "fails_to_follow" in verdict.flags


@pytest.mark.parametrize("family", FAMILIES)
def test_partial_answers_score_between_bad_and_gold(family):
    prompt, bad, partial = CASES[family]
    partial_quality = judge(prompt, partial).quality
    gold_quality = judge(prompt, gold_response(prompt)).quality
    assert judge(prompt, bad).quality < partial_quality < gold_quality
    assert 0.2 < partial_quality < 0.9


@pytest.mark.parametrize("family", FAMILIES)
def test_rambling_after_the_gold_answer_costs_quality_and_flags_hallucination(family):
    prompt = CASES[family][0]
    rambling = gold_response(prompt) + " The old man went to the market. We saw a big boat."
    verdict = judge(prompt, rambling)
    assert verdict.quality < 0.6
    assert "hallucination" in verdict.flags


def test_empty_answers_score_zero():
    for prompt, _, _ in CASES.values():
        assert judge(prompt, "  ").quality == 0.0


def test_list_answers_from_another_category_are_hallucinations():
    verdict = judge("Name two animals.", "cat, apple")
    assert 0.2 < verdict.quality < judge("Name two animals.", "cat").quality
    assert "hallucination" in verdict.flags


def test_list_items_may_be_plural():
    assert judge("List three fruits.", "Peaches, cherries and mangoes.").quality == 1.0
    assert judge("Name two vehicles.", "buses and taxis").quality == 1.0


def test_counting_down_is_judged_in_the_asked_direction():
    assert judge("Count from 9 to 6.", "9, 8, 7, 6").quality == 1.0
    assert judge("Count from 9 to 6.", "6, 7, 8, 9").quality < 0.5


def test_number_words_in_prompts_are_understood():
    assert gold_response("Say sun three times.") == "sun sun sun"
    assert gold_response("List two colors.").count(",") == 1


def test_arithmetic_answer_must_follow_the_restated_question():
    assert judge("What is 10 minus 5?", "10 minus 5.").quality == 0.0
    assert judge("What is 10 minus 5?", "5").quality == 1.0
    assert judge("What is 1 plus 5?", "9 plus 6 is 6.").quality < 0.3  # misquoted question


def test_flawed_responses_score_below_gold_on_average():
    prompts = sample_prompts(400, seed=2)
    flawed = [judge(p, flawed_response(p, seed=i)).quality for i, p in enumerate(prompts)]
    assert sum(flawed) / len(flawed) < 0.5
    assert len({round(q, 2) for q in flawed}) > 10  # graded, so rankings carry signal


def test_judge_is_deterministic():
    prompts = sample_prompts(200, seed=5)
    answers = [flawed_response(p, seed=i) for i, p in enumerate(prompts)]
    assert [judge(p, a) for p, a in zip(prompts, answers, strict=True)] == [
        judge(p, a) for p, a in zip(prompts, answers, strict=True)
    ]


def test_judge_parses_prompts_with_odd_whitespace_and_case():
    assert judge("  spell  CAT backwards. ", "tac").quality == 1.0


def test_unknown_prompts_get_a_generic_score():
    good = judge("Tell me a story about a dragon.", "The dragon slept on a pile of gold.")
    bad = judge("Tell me a story about a dragon.", "the the the the the the")
    assert 0.5 <= good.quality <= 0.8
    assert bad.quality < good.quality
    with pytest.raises(ValueError):
        gold_response("Tell me a story about a dragon.")


def test_likert_follows_quality():
    prompts = sample_prompts(300, seed=7)
    verdicts = [judge(p, flawed_response(p, seed=i)) for i, p in enumerate(prompts)]
    for v in verdicts:
        assert 1 <= v.likert <= 7
    ordered = sorted(verdicts, key=lambda v: v.quality)
    assert [v.likert for v in ordered] == sorted(v.likert for v in ordered)
