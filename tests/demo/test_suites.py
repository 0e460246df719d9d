"""The registry of task suites, and a crowd working on the second suite."""

import random

import numpy as np
import pytest

from training.demo import crowd as sim
from training.demo import errands, families, suites


def test_the_registry_holds_the_demo_and_the_errands_suites():
    assert list(suites.SUITES) == ["demo", "errands"]
    demo, other = suites.suite("demo"), suites.suite("errands")
    assert (demo.name, demo.families, demo.judge) == ("demo", families.FAMILIES, families.judge)
    assert (other.name, other.families, other.judge) == ("errands", errands.FAMILIES, errands.judge)
    assert other.sample_prompts(5, seed=1) == errands.sample_prompts(5, seed=1)


def test_an_unknown_suite_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="'nope'.*demo, errands"):
        suites.suite("nope")
    with pytest.raises(ValueError, match="demo, errands"):
        sim.make_crowd(2, seed=0, suite="nope")


def test_the_default_crowd_is_still_the_demo_suites():
    assert sim.make_crowd(3, seed=5) == sim.make_crowd(3, seed=5, suite="demo")
    assert {labeler.suite for labeler in sim.make_crowd(3, seed=5)} == {"demo"}


def test_synthetic_rankings_of_the_errands_suite_are_its_prompts_with_distinct_outputs():
    items = sim.synthetic_rankings(100, k=4, seed=0, suite="errands")
    assert all(errands.family_of(prompt) for prompt, _ in items)
    assert all(len(set(completions)) == 4 for _, completions in items)
    assert np.mean(sim.quality_gaps(items, suite="errands") == 0) < 0.1


@pytest.mark.parametrize("target", [0.65, 0.73, 0.85])
def test_an_errands_crowds_measured_agreement_is_near_its_target(target):
    crowd = sim.make_crowd(5, agreement=target, seed=7, suite="errands")
    assert {labeler.suite for labeler in crowd} == {"errands"}
    held_out = sim.synthetic_rankings(300, k=4, seed=1234, suite="errands")
    rng = random.Random(11)
    ranks = {
        labeler.name: {
            item: [entry.rank for entry in labeler.rank(prompt, completions, rng)]
            for item, (prompt, completions) in enumerate(held_out)
        }
        for labeler in crowd
    }
    assert sim.measured_agreement(ranks) == pytest.approx(target, abs=0.05)


def test_an_errands_labeler_judges_and_writes_with_the_errands_suite():
    labeler = sim.SimulatedLabeler(name="sim", noise=0.0, skill=1.0, skip_rate=0.0, suite="errands")
    prompt, rng = "What is the plural of mouse?", random.Random(0)
    assert labeler.write_demonstration(prompt, rng) == "mice."
    assert [e.rank for e in labeler.rank(prompt, ["mouses", "mice.", "mouse"], rng)] == [2, 1, 3]
    assert labeler.compare(prompt, "mice", "mouse", rng) == "a"


def test_the_gold_win_rate_uses_the_suites_judge():
    prompts = errands.sample_prompts(20, seed=0)
    gold = [errands.gold_response(p) for p in prompts]
    empty = [""] * len(prompts)
    assert sim.gold_win_rate(prompts, [gold], [empty], suite="errands").rate == 1.0
