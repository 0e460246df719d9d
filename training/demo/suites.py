"""The task suites of the synthetic world, by name: each a prompt distribution with a gold judge.

- "demo" (families.py): the eight families the loop was built and tuned on; the tiny base model
  is pretrained on its train split.
- "errands" (errands.py): seven other families, written before any tuning and never tuned on,
  so that a loop trained on one suite can be scored on the other (transfer).

The crowd (crowd.py, http_crowd.py), `manage.py simulate_labelers --suite` and the benches take a
suite name and reach its functions through `suite(name)`. Pure Python, no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from training.demo import errands, families
from training.demo.families import Judgement

__all__ = ["SUITES", "Suite", "suite"]


@dataclass(frozen=True)
class Suite:
    name: str
    families: tuple[str, ...]  # the suite's family names
    sample_prompts: Callable[..., list[str]]  # (n, *, seed, split="all") -> distinct prompts
    all_prompts: Callable[..., list[str]]  # (*, split="all") -> every prompt, fixed order
    gold_response: Callable[[str], str]  # prompt -> ideal answer; ValueError off the suite
    flawed_response: Callable[..., str]  # (prompt, *, seed) -> a wrong or partial answer
    judge: Callable[[str, str], Judgement]  # (prompt, response) -> graded judgement
    family_of: Callable[[str], str | None]  # prompt -> family name, None off the suite
    filler_sentence: Callable[..., str]  # (*, seed) -> an unrelated sentence, for rambling

    @classmethod
    def of_module(cls, name: str, module: ModuleType) -> Suite:
        return cls(
            name=name,
            families=module.FAMILIES,
            sample_prompts=module.sample_prompts,
            all_prompts=module.all_prompts,
            gold_response=module.gold_response,
            flawed_response=module.flawed_response,
            judge=module.judge,
            family_of=module.family_of,
            filler_sentence=module.filler_sentence,
        )


SUITES: dict[str, Suite] = {
    "demo": Suite.of_module("demo", families),
    "errands": Suite.of_module("errands", errands),
}


def suite(name: str) -> Suite:
    """The suite called `name`; ValueError naming the known suites otherwise."""
    try:
        return SUITES[name]
    except KeyError:
        raise ValueError(f"unknown suite {name!r}; known suites: {', '.join(SUITES)}") from None
