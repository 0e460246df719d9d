"""The run kinds, one record each: what a run of that kind is configured with, which rows it
snapshots when it starts, which model paths the server fills in, and what it leaves behind.

Adding an algorithm is a record here, its engine module `training/engine/<kind>.py` (a `Config`
dataclass and a `run(cfg, data, on_progress=...)`), and a migration for the new `RunKind` choice.

Configs are checked here, when a run or a round starts, by the stage's own config class (the
engine's dataclass, which imports no torch): an unknown key, a wrong type or a value the class
refuses is an `Invalid` that names the key, before anything is queued. The run row stores the
resolved config (every field, defaults included) minus what the server sets, so a model
version's lineage shows the learning rate that really ran.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from labeling.errors import Invalid
from labeling.models import MAX_K, Demonstration, ModelKind, Project, Prompt, Ranking, Split
from training.engine.config import (
    ConfigError,
    CriticFreeConfig,
    DPOConfig,
    PPOConfig,
    RewardConfig,
    SampleConfig,
    SFTConfig,
)

from .models import RunKind

Snapshot = Callable[[Project, dict[str, Any]], dict[str, Any]]

# Set by the server from the run's model versions and its directory, never by a request.
SERVER_KEYS = frozenset(
    {"output_dir", "model_path", "policy_path", "reward_model_path", "value_model_path"}
)


def _demonstration_ids(project: Project) -> list[int]:
    """Demonstrations a run may train on: every split but test (test prompts never train)."""
    return list(
        Demonstration.objects.filter(prompt__project=project)
        .exclude(prompt__split=Split.TEST)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _prompt_ids(project: Project, options: dict[str, Any]) -> list[int]:
    """The train prompts (or the test prompts, for evaluation samples), the first N if asked."""
    split = Split.TEST if options.get("split") == Split.TEST else Split.TRAIN
    ids = Prompt.objects.filter(project=project, split=split).order_by("pk")
    limit = options.get("max_prompts")
    return list(
        ids.values_list("pk", flat=True)[: int(limit)]
        if limit
        else ids.values_list("pk", flat=True)
    )


def _sft_rows(project: Project, options: dict[str, Any]) -> dict[str, Any]:
    return {"demonstrations": _demonstration_ids(project)}


def _ranking_ids(project: Project) -> list[int]:
    """Rankings a run may train on: every split but test."""
    return list(
        Ranking.objects.filter(task__project=project)
        .exclude(task__prompt__split=Split.TEST)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _reward_rows(project: Project, options: dict[str, Any]) -> dict[str, Any]:
    return {"rankings": _ranking_ids(project), "demonstrations": _demonstration_ids(project)}


def _dpo_rows(project: Project, options: dict[str, Any]) -> dict[str, Any]:
    return {"rankings": _ranking_ids(project)}


def _ppo_rows(project: Project, options: dict[str, Any]) -> dict[str, Any]:
    return {"prompts": _prompt_ids(project, options), "demonstrations": _demonstration_ids(project)}


def _sample_rows(project: Project, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "prompts": _prompt_ids(project, options),
        "create_tasks": bool(options.get("create_tasks", True)),
    }


def _check_sample(config: dict[str, Any], options: dict[str, Any]) -> None:
    """A sampling run whose samples become ranking tasks samples 2..MAX_K outputs per prompt
    (K = 1 is for plain evaluation samples, with create_tasks false)."""
    if options.get("create_tasks", True) and not 2 <= config["k"] <= MAX_K:
        message = (
            f"sample settings: k must be from 2 to {MAX_K} (the outputs a labeler ranks) for a"
            f" run that makes ranking tasks, not {config['k']}"
        )
        raise Invalid(message, details=[{"key": "k", "error": message}])


# Options about a run's data, not its engine config: (check, what a good value is).
OPTION_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "split": (lambda v: v in (Split.TRAIN, Split.TEST), '"train" or "test"'),
    "max_prompts": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "a whole number of at least 1",
    ),
    "create_tasks": (lambda v: isinstance(v, bool), "true or false"),
}


@dataclass(frozen=True)
class Stage:
    kind: str
    config_class: type[Any]  # the engine's frozen config dataclass (its from_dict checks)
    snapshot: Snapshot  # exactly which rows the run uses, frozen when it starts
    requires: str  # the snapshot key that must not be empty
    model_paths: dict[str, str]  # config field -> "base" or "reward": the model version it loads
    model_kind: str | None  # the ModelVersion kind a success registers; None: it adds samples
    options: frozenset[str] = frozenset()  # about the data, not the engine's config (OPTION_CHECKS)
    # Rules between settings and data options, on the resolved config (Invalid names the key).
    check: Callable[[dict[str, Any], dict[str, Any]], None] | None = None

    @property
    def needs_reward_model(self) -> bool:
        return "reward" in self.model_paths.values()

    def options_of(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The data options among the settings, each checked (Invalid names a bad one)."""
        options = {k: v for k, v in settings.items() if k in self.options}
        for key, value in options.items():
            check, good = OPTION_CHECKS[key]
            if not check(value):
                message = f"{self.kind} settings: {key} must be {good}, not {value!r:.40}"
                raise Invalid(message, details=[{"key": key, "error": message}])
        return options

    def resolve(self, settings: Any) -> dict[str, Any]:
        """The full config for these settings (defaults filled in, server keys left out), or an
        `Invalid` naming each key that is unknown, of the wrong type or refused."""
        if not isinstance(settings, dict):
            raise Invalid(f"The {self.kind} settings must be an object of setting: value.")
        reserved = sorted(SERVER_KEYS & set(settings))
        if reserved:
            raise Invalid(
                f"These are set by the server, not the request: {', '.join(reserved)}.",
                details=[{"key": key, "error": "set by the server"} for key in reserved],
            )
        options = self.options_of(settings)
        values = {k: v for k, v in settings.items() if k not in self.options}
        placeholders = {f.name: "" for f in dataclasses.fields(self.config_class)}
        placeholders = {k: v for k, v in placeholders.items() if k in SERVER_KEYS}
        try:
            config = self.config_class.from_dict({**placeholders, **values})
        except ConfigError as exc:
            raise Invalid(
                f"{self.kind} settings: {exc}",
                details=[{"key": key, "error": str(exc)} for key in exc.keys],
            ) from None
        resolved = {k: v for k, v in dataclasses.asdict(config).items() if k not in SERVER_KEYS}
        if self.check is not None:
            self.check(resolved, options)
        return resolved


STAGES: dict[str, Stage] = {
    RunKind.SFT: Stage(
        kind=RunKind.SFT,
        config_class=SFTConfig,
        snapshot=_sft_rows,
        requires="demonstrations",
        model_paths={"model_path": "base"},
        model_kind=ModelKind.SFT,
    ),
    RunKind.REWARD: Stage(
        kind=RunKind.REWARD,
        config_class=RewardConfig,
        snapshot=_reward_rows,
        requires="rankings",
        model_paths={"model_path": "base"},
        model_kind=ModelKind.REWARD,
    ),
    RunKind.PPO: Stage(
        kind=RunKind.PPO,
        config_class=PPOConfig,
        snapshot=_ppo_rows,
        requires="prompts",
        model_paths={"policy_path": "base", "reward_model_path": "reward"},
        model_kind=ModelKind.POLICY,
        options=frozenset({"split", "max_prompts"}),
    ),
    RunKind.CRITIC_FREE: Stage(
        kind=RunKind.CRITIC_FREE,
        config_class=CriticFreeConfig,
        snapshot=_ppo_rows,  # the same prompts (and demonstrations for ptx) as PPO
        requires="prompts",
        model_paths={"policy_path": "base", "reward_model_path": "reward"},
        model_kind=ModelKind.POLICY,
        options=frozenset({"split", "max_prompts"}),
    ),
    RunKind.DPO: Stage(
        kind=RunKind.DPO,
        config_class=DPOConfig,
        snapshot=_dpo_rows,
        requires="rankings",
        model_paths={"model_path": "base"},
        model_kind=ModelKind.POLICY,
    ),
    RunKind.SAMPLE: Stage(
        kind=RunKind.SAMPLE,
        config_class=SampleConfig,
        snapshot=_sample_rows,
        requires="prompts",
        model_paths={"model_path": "base"},
        model_kind=None,
        options=frozenset({"split", "max_prompts", "create_tasks"}),
        check=_check_sample,
    ),
}


def stage(kind: str) -> Stage:
    if kind not in STAGES:
        raise Invalid(f"Unknown run kind {kind!r}.")
    return STAGES[kind]
