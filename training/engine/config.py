"""Frozen configs for the training stages (sft, reward, ppo, critic_free, sample, dpo).

`from_dict` is the one way in from plain data (a run row, a job file, a form): it refuses an
unknown key, a value of the wrong type and a value the class cannot run with, each as a
`ConfigError` naming its keys, so a bad setting is caught when a run starts, not in the worker.
`asdict(cfg)` is what a run row stores: every field, defaults included. Defaults follow InstructGPT (Ouyang et al. 2022, appendix C) scaled down to small models, and
the PPO ones "The N+ implementation details of RLHF with PPO" (Huang et al. 2024,
https://arxiv.org/abs/2403.17031).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Self

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16")
SAMPLERS = ("auto", "builtin", "vllm")  # training/engine/sampler.py
ESTIMATORS = ("grpo", "rloo", "reinforce_pp_baseline")  # training/engine/advantages.py
MASTER_DTYPES = ("float32", "bfloat16")
ALL_LINEAR = "all-linear"  # peft's name for every linear layer but the output projection
# Layers LoRA may not adapt: the output projection (tied to the input embeddings in GPT-2, and
# left to the base model by "all-linear") and the reward/value head (always trained fully).
NOT_LORA_TARGETS = ("lm_head", "head", "score")


class ConfigError(ValueError):
    """A config that cannot run; `keys` names the settings at fault."""

    def __init__(self, message: str, keys: Iterable[str]) -> None:
        super().__init__(message)
        self.keys = tuple(keys)


def _require(ok: bool, message: str, *keys: str) -> None:
    if not ok:
        raise ConfigError(message, keys)


_KINDS = {int: "a whole number", float: "a finite number", bool: "true or false", str: "text"}


def _accepts(value: Any, annotation: Any) -> tuple[bool, Any]:
    """(whether `value` fits the field's annotation, the value as stored: an int for a float
    field becomes a float). bool is not a number here, though Python says it is an int."""
    if isinstance(annotation, types.UnionType):
        options = typing.get_args(annotation)
        if value is None:
            return type(None) in options, None
        return next(
            (found for found in (_accepts(value, a) for a in options if a is not type(None))
             if found[0]),
            (False, value),
        )  # fmt: skip
    if annotation is float:
        # NaN and infinities are no setting (and JSON columns cannot store them); an int too
        # large for a float is refused, not an OverflowError.
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        try:
            number = float(value) if ok else math.nan
        except OverflowError:
            number = math.nan
        return ok and math.isfinite(number), number if ok and math.isfinite(number) else value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    return isinstance(value, annotation), value


def _describe(annotation: Any) -> str:
    if isinstance(annotation, types.UnionType):
        kinds = [_KINDS[a] for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(kinds) + " (or null)"
    return _KINDS[annotation]


@dataclass(frozen=True, kw_only=True)
class _Common:
    output_dir: str  # run directory: checkpoints/ and model/ are written under it
    seed: int = 0  # seeds torch, the data order and sampling
    checkpoint_every: int = 50  # save a resumable checkpoint every N optimizer steps (0 = never)
    device: str = "auto"  # "auto" (cuda if available), "cpu" or "cuda"
    dtype: str = (
        "auto"  # compute: "auto" (bf16 autocast on CUDA, fp32 on CPU), "float32", "bfloat16"
    )

    def __post_init__(self) -> None:
        _require(self.device in DEVICES, f"device must be one of {DEVICES}, not {self.device!r}",
                 "device")  # fmt: skip
        _require(
            self.dtype in DTYPES, f"dtype must be one of {DTYPES}, not {self.dtype!r}", "dtype"
        )
        _require(self.checkpoint_every >= 0, "checkpoint_every must be >= 0", "checkpoint_every")
        for name in ("batch_size", "max_length", "epochs", "eval_every", "max_new_tokens",
                     "max_prompt_length", "mini_batch_size", "ppo_epochs", "total_episodes",
                     "ptx_batch_size", "ptx_max_length"):  # fmt: skip
            value = getattr(self, name, 1)
            _require(value >= 1, f"{name} must be at least 1, not {value}", name)
        max_steps = getattr(self, "max_steps", None)
        _require(max_steps is None or max_steps >= 1, "max_steps must be at least 1", "max_steps")
        for name in ("lr", "value_lr", "weight_decay", "warmup_steps", "grad_clip", "kl_coef",
                     "ptx_coef", "vf_coef"):  # fmt: skip
            value = getattr(self, name, 0)
            _require(value >= 0, f"{name} must be >= 0, not {value}", name)
        sampler = getattr(self, "sampler", "auto")
        _require(sampler in SAMPLERS, f"sampler must be one of {SAMPLERS}, not {sampler!r}",
                 "sampler")  # fmt: skip
        fraction = getattr(self, "val_fraction", 0.0)
        _require(
            0 <= fraction < 1, f"val_fraction must be in [0, 1), not {fraction}", "val_fraction"
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Build a config from plain data, refusing unknown keys, wrong types and values the
        class cannot run with (ConfigError, naming the keys)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(
                f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)};"
                f" the settings are {', '.join(sorted(fields))}",
                unknown,
            )
        missing = sorted(
            name
            for name, f in fields.items()
            if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            and name not in values
        )
        _require(not missing, f"missing required settings {', '.join(missing)}", *missing)
        hints = typing.get_type_hints(cls)
        checked = {}
        for name, value in values.items():
            ok, checked[name] = _accepts(value, hints[name])
            _require(ok, f"{name} must be {_describe(hints[name])}, not {value!r:.40}", name)
        return cls(**checked)


@dataclass(frozen=True, kw_only=True)
class FrozenModelConfig(_Common):
    """A stage that holds models it never trains (PPO's reference and reward model, DPO's
    reference, sampling)."""

    frozen_dtype: str = "auto"  # frozen weights: "auto" (= compute dtype), "float32", "bfloat16"

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.frozen_dtype in DTYPES,
                 f"frozen_dtype must be one of {DTYPES}, not {self.frozen_dtype!r}",
                 "frozen_dtype")  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class TrainedModelConfig(_Common):
    """A stage that trains a model: how its weights are held (precision, memory, LoRA)."""

    # "float32": fp32 parameters and optimizer state, forwards under `dtype` autocast (mixed
    # precision). "bfloat16": pure bf16 parameters and optimizer state, half the memory, but an
    # update smaller than ~1/256 of a weight rounds away (Kalamkar et al. 2019).
    master_weights: str = "float32"
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory
    lora_rank: int = 0  # LoRA rank (Hu et al. 2021) of the trained models; 0 = full tuning
    lora_alpha: int = 16  # LoRA scale numerator: the update is (alpha / rank) * B @ A
    lora_dropout: float = 0.0  # on LoRA's input; must stay 0 for PPO and DPO (disable_dropout)
    lora_target_modules: str = ALL_LINEAR  # "all-linear" or module names: "q_proj,v_proj"

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.master_weights in MASTER_DTYPES,
                 f"master_weights must be one of {MASTER_DTYPES}, not {self.master_weights!r}",
                 "master_weights")  # fmt: skip
        _require(not (self.master_weights == "bfloat16" and self.dtype == "float32"),
                 "master_weights='bfloat16' computes in bf16: dtype must be 'bfloat16' or 'auto',"
                 " not 'float32'", "master_weights", "dtype")  # fmt: skip
        _require(self.lora_rank >= 0, f"lora_rank must be >= 0, not {self.lora_rank}",
                 "lora_rank")  # fmt: skip
        _require(self.lora_alpha > 0, f"lora_alpha must be > 0, not {self.lora_alpha}",
                 "lora_alpha")  # fmt: skip
        _require(
            0 <= self.lora_dropout < 1,
            f"lora_dropout must be in [0, 1), not {self.lora_dropout}",
            "lora_dropout",
        )
        targets = self.lora_targets()
        _require(targets == ALL_LINEAR or bool(targets) and all(t.isidentifier() for t in targets),
                 "lora_target_modules must be 'all-linear' or comma-separated module names,"
                 f" not {self.lora_target_modules!r}", "lora_target_modules")  # fmt: skip
        refused = sorted(set(targets) & set(NOT_LORA_TARGETS)) if targets != ALL_LINEAR else []
        _require(not refused,
                 f"lora_target_modules cannot name {', '.join(refused)}: the output projection"
                 " stays the base model's and the reward/value head is trained fully",
                 "lora_target_modules")  # fmt: skip

    def lora_targets(self) -> str | list[str]:
        """peft's `target_modules`: "all-linear" or the list of module names."""
        if self.lora_target_modules.strip() == ALL_LINEAR:
            return ALL_LINEAR
        return [name.strip() for name in self.lora_target_modules.split(",") if name.strip()]

    def _require_no_dropout(self) -> None:
        _require(self.lora_dropout == 0,
                 f"lora_dropout must be 0 for {type(self).__name__.removesuffix('Config')}: its"
                 " ratios compare deterministic forwards (dropout is off everywhere)",
                 "lora_dropout")  # fmt: skip


def asdict(cfg: _Common) -> dict[str, Any]:
    """Plain-data form of a config (round-trips through `from_dict`)."""
    return dataclasses.asdict(cfg)


@dataclass(frozen=True, kw_only=True)
class ShardedConfig(TrainedModelConfig):
    """A stage that may train in several processes (training/engine/distributed.py)."""

    # Processes to train in (FSDP2, one per GPU; gloo on CPU): null = the worker's setting
    # (INSTRUCTLOOP_TRAINING_PROCESSES, default 1). The global batch stays batch_size.
    processes: int | None = None
    collective_timeout_s: float = 600.0  # a collective waiting longer (a dead rank) fails the run

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.processes is None or self.processes >= 1,
                 f"processes must be at least 1, not {self.processes}", "processes")  # fmt: skip
        _require(self.collective_timeout_s > 0, "collective_timeout_s must be > 0",
                 "collective_timeout_s")  # fmt: skip
        if self.processes is not None and self.processes > 1:
            _require(self.lora_rank == 0, "LoRA trains in one process: set processes to 1 or"
                     " lora_rank to 0", "processes", "lora_rank")  # fmt: skip
            rows = self.rows_per_step()
            _require(rows >= self.processes, f"batch_size ({rows}) must be"
                     f" at least processes ({self.processes}): each process takes a part of a"
                     " batch", "batch_size", "processes")  # fmt: skip

    def rows_per_step(self) -> int:
        """What the processes share each step (examples, rankings, episodes)."""
        return int(getattr(self, "batch_size", 1))


@dataclass(frozen=True, kw_only=True)
class SFTConfig(ShardedConfig):
    model_path: str  # base causal LM: a local directory or a hub name (safetensors weights only)
    lr: float = 2e-5  # AdamW learning rate (constant after warmup)
    warmup_steps: int = 0  # linear warmup from 0 to lr over this many steps
    weight_decay: float = 0.0  # AdamW weight decay
    batch_size: int = 16  # demonstrations per optimizer step
    epochs: int = 1  # passes over the training split (ignored when max_steps is set)
    max_steps: int | None = None  # stop after this many optimizer steps instead of epochs
    max_length: int = 512  # prompt + response tokens kept per example (prompt cut from the left)
    val_fraction: float = 0.1  # share of demonstrations held out for validation loss
    eval_every: int = 50  # compute validation loss every N steps (and at the end)
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 = off)


@dataclass(frozen=True, kw_only=True)
class RewardConfig(ShardedConfig):
    model_path: str  # trunk init, usually the SFT model (InstructGPT initialises the RM from SFT)
    lr: float = 9e-6  # AdamW learning rate
    warmup_steps: int = 0  # linear warmup from 0 to lr over this many steps
    weight_decay: float = 0.0  # AdamW weight decay
    batch_size: int = 8  # rankings per optimizer step; each ranking is one batch element
    epochs: int = 1  # InstructGPT trains one epoch: the RM overfits after that
    max_steps: int | None = None  # stop after this many optimizer steps instead of epochs
    max_length: int = 512  # prompt + completion tokens kept per completion
    val_fraction: float = 0.1  # share of rankings held out for loss and pair accuracy (at least)
    # Hold out more rankings (the next in the same seeded order) until their untied pairs reach
    # this: 194 pairs tell a 60% reward model from chance at 95% / 80% power
    # (labeling/stats.py, trials_to_tell_apart). 0 = the fraction alone.
    val_min_pairs: int = 194
    val_max_fraction: float = 0.25  # the most val_min_pairs may hold out: 75% still trains
    eval_every: int = 50  # evaluate every N steps (and at the end)
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 = off)
    normalize_on_demonstrations: bool = True  # set the score offset so demonstrations score mean 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.val_min_pairs >= 0, f"val_min_pairs must be >= 0, not {self.val_min_pairs}",
                 "val_min_pairs")  # fmt: skip
        _require(0 <= self.val_max_fraction < 1,
                 f"val_max_fraction must be in [0, 1), not {self.val_max_fraction}",
                 "val_max_fraction")  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class DPOConfig(ShardedConfig, FrozenModelConfig):
    model_path: str  # the policy to tune (usually SFT); it is also the frozen reference
    beta: float = 0.1  # strength of the implicit KL to the reference (Rafailov et al.; TRL: 0.1)
    label_smoothing: float = 0.0  # assumed share of flipped preference labels (0 = plain DPO)
    lr: float = 1e-6  # AdamW learning rate (TRL's DPO default)
    warmup_steps: int = 0  # linear warmup from 0 to lr over this many steps
    weight_decay: float = 0.0  # AdamW weight decay
    batch_size: int = 8  # rankings per optimizer step; all of a ranking's pairs train together
    epochs: int = 1  # passes over the training rankings (ignored when max_steps is set)
    max_steps: int | None = None  # stop after this many optimizer steps instead of epochs
    max_length: int = 512  # prompt + completion tokens kept per completion
    val_fraction: float = 0.1  # share of rankings held out for loss and pair accuracy
    eval_every: int = 50  # evaluate every N steps (and at the end)
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 = off)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.beta > 0, f"beta must be > 0, not {self.beta}", "beta")
        _require(0 <= self.label_smoothing < 0.5,
                 f"label_smoothing must be in [0, 0.5), not {self.label_smoothing}",
                 "label_smoothing")  # fmt: skip
        self._require_no_dropout()


@dataclass(frozen=True, kw_only=True)
class PPOConfig(ShardedConfig, FrozenModelConfig):
    policy_path: str  # SFT model: initialises the policy and is the frozen KL reference
    reward_model_path: str | None = (
        None  # trained RewardModel dir (also initialises the value model)
    )
    value_model_path: str | None = None  # value model init when it differs from reward_model_path
    lr: float = 1e-5  # policy learning rate (Adam)
    value_lr: float = 1e-5  # value model learning rate
    adam_eps: float = 1e-5  # lm-human-preferences uses eps=1e-5, not torch's 1e-8
    total_episodes: int = 1024  # prompts to roll out in total; steps = total_episodes // batch_size
    batch_size: int = 16  # rollouts (prompts) per PPO step
    mini_batch_size: int = 16  # rollouts per gradient step inside a PPO epoch
    ppo_epochs: int = 4  # optimisation passes over each rollout batch
    max_prompt_length: int = 256  # prompt tokens kept (cut from the left)
    max_new_tokens: int = 32  # response length cap
    temperature: float = 1.0  # sampling temperature; log-probs are taken at the same temperature
    kl_coef: float = 0.02  # beta: per-token KL penalty to the SFT reference (InstructGPT uses 0.02)
    missing_eos_penalty: float = 1.0  # subtracted from the score of a response that never emits EOS
    gamma: float = 1.0  # GAE discount
    lam: float = 0.95  # GAE lambda
    cliprange: float = 0.2  # policy ratio clip
    cliprange_value: float = 0.2  # value prediction clip around the rollout values
    vf_coef: float = 0.1  # value loss weight (policy and value models are separate, so only scales)
    whiten_advantages: bool = True  # normalise advantages per batch
    grad_clip: float = 1.0  # clip each model's global gradient norm to this (0 = off)
    ptx_coef: float = 0.0  # gamma_ptx: weight of the SFT loss on demonstrations (PPO-ptx); 0 = off
    ptx_batch_size: int = 8  # demonstrations per gradient step when ptx_coef > 0
    ptx_max_length: int = 512  # prompt + response tokens per ptx demonstration
    sampler: str = "auto"  # rollouts use the built-in sampler ("auto" or "builtin"; not "vllm")
    compile: bool = False  # torch.compile the rollout sampler's decoding step (as SampleConfig's)
    # Prompts held out of training (at most a quarter) and scored before and after: the round's
    # gate refuses a policy whose held-out score fell. 0 = none.
    eval_prompts: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.eval_prompts >= 0, f"eval_prompts must be >= 0, not {self.eval_prompts}",
                 "eval_prompts")  # fmt: skip
        _require(
            self.batch_size % self.mini_batch_size == 0,
            f"batch_size ({self.batch_size}) must be a multiple of mini_batch_size"
            f" ({self.mini_batch_size})",
            "batch_size", "mini_batch_size",
        )  # fmt: skip
        _require(self.temperature > 0, "temperature must be > 0 (log-probs divide by it)",
                 "temperature")  # fmt: skip
        for name in ("gamma", "lam"):
            value = getattr(self, name)
            _require(0 <= value <= 1, f"{name} must be in [0, 1], not {value}", name)
        for name in ("cliprange", "cliprange_value", "adam_eps", "value_lr"):
            value = getattr(self, name)
            _require(value > 0, f"{name} must be > 0, not {value}", name)
        _require(
            self.total_episodes >= self.batch_size,
            f"total_episodes ({self.total_episodes}) must be at least batch_size"
            f" ({self.batch_size}): PPO takes total_episodes // batch_size steps",
            "total_episodes", "batch_size",
        )  # fmt: skip
        # vLLM samples from the weights it loaded; PPO's policy changes every step, and syncing
        # them into vLLM's workers (OpenRLHF, TRL's colocate mode) is not implemented here.
        _require(self.sampler != "vllm",
                 "PPO rollouts use the built-in sampler: vLLM would need the policy's weights"
                 " loaded into it after every step, which is not implemented; use sampler"
                 " 'auto' or 'builtin'", "sampler")  # fmt: skip
        self._require_no_dropout()
        if self.processes is not None:
            _require(not (problem := self.shared_batch_problem(self.processes)), problem,
                     "processes", "batch_size", "mini_batch_size")  # fmt: skip

    def shared_batch_problem(self, processes: int) -> str:
        """Why `processes` cannot share this run's batches ("" when they can)."""
        return _shared_batch_problem(self, processes, "batch_size", self.batch_size)


def _shared_batch_problem(
    cfg: PPOConfig | CriticFreeConfig, processes: int, rows_name: str, rows: int
) -> str:
    """Why an online stage cannot run in `processes` ("" when it can): each samples rows /
    processes of a step's episodes and takes mini_batch_size / processes of each minibatch."""
    if processes == 1:
        return ""
    for name, value in ((rows_name, rows), ("mini_batch_size", cfg.mini_batch_size)):
        if value % processes:
            return (f"{name} ({value}) must be a multiple of processes ({processes}): each"
                    " process takes an equal part of it")  # fmt: skip
    if cfg.ptx_coef > 0 and cfg.ptx_batch_size < processes:
        return f"ptx_batch_size ({cfg.ptx_batch_size}) must be at least processes ({processes})"
    if cfg.compile:
        return "compile samples in one process: set processes to 1 or compile to false"
    return ""


@dataclass(frozen=True, kw_only=True)
class CriticFreeConfig(ShardedConfig, FrozenModelConfig):
    """Online RL without a value model (training/engine/critic_free.py): K responses per prompt,
    each judged against the others of its group."""

    policy_path: str  # SFT model: initialises the policy and is the frozen KL reference
    reward_model_path: str | None = None  # trained RewardModel dir (None: a programmatic reward)
    # "grpo" (Shao et al. 2024: group-normalised scores, KL as a k3 loss term), "rloo" (Ahmadian
    # et al. 2024: leave-one-out baseline, KL in the reward) or "reinforce_pp_baseline" (Hu et al.
    # 2025: group-mean baseline, KL per token in the reward, batch-whitened returns)
    estimator: str = "grpo"
    group_size: int = 4  # K: responses sampled per prompt, the baseline of each other (>= 2)
    batch_size: int = 4  # prompts per step (batch_size x group_size responses)
    mini_batch_size: int = 16  # responses per gradient step
    update_epochs: int = 1  # passes over each rollout batch (1 = on-policy, TRL's num_iterations)
    total_episodes: int = 512  # prompts to roll out in total; steps = total_episodes // batch_size
    lr: float = 1e-5  # policy learning rate (Adam)
    kl_coef: float = 0.04  # beta: KL to the SFT reference (DeepSeekMath's GRPO uses 0.04)
    cliprange: float = 0.2  # policy ratio clip
    temperature: float = 1.0  # sampling temperature; log-probs are taken at the same temperature
    max_new_tokens: int = 32  # response length cap
    max_prompt_length: int = 256  # prompt tokens kept (cut from the left)
    missing_eos_penalty: float = 1.0  # subtracted from the score of a response that never emits EOS
    ptx_coef: float = 0.0  # gamma_ptx: weight of the SFT loss on demonstrations; 0 = off
    ptx_batch_size: int = 8  # demonstrations per gradient step when ptx_coef > 0
    ptx_max_length: int = 512  # prompt + response tokens per ptx demonstration
    grad_clip: float = 1.0  # clip the policy's global gradient norm to this (0 = off)
    sampler: str = "auto"  # rollouts use the built-in sampler ("auto" or "builtin"; not "vllm")
    compile: bool = False  # torch.compile the rollout sampler's decoding step
    # Prompts held out of training (at most a quarter) and scored before and after: the round's
    # gate refuses a policy whose held-out score fell. 0 = none.
    eval_prompts: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.eval_prompts >= 0, f"eval_prompts must be >= 0, not {self.eval_prompts}",
                 "eval_prompts")  # fmt: skip
        _require(self.estimator in ESTIMATORS,
                 f"estimator must be one of {ESTIMATORS}, not {self.estimator!r}",
                 "estimator")  # fmt: skip
        _require(self.group_size >= 2,
                 f"group_size must be at least 2 (each response's baseline is the rest of its"
                 f" group), not {self.group_size}", "group_size")  # fmt: skip
        _require(self.update_epochs >= 1,
                 f"update_epochs must be at least 1, not {self.update_epochs}",
                 "update_epochs")  # fmt: skip
        responses = self.batch_size * self.group_size
        _require(
            responses % self.mini_batch_size == 0,
            f"batch_size x group_size ({responses} responses) must be a multiple of"
            f" mini_batch_size ({self.mini_batch_size})",
            "mini_batch_size", "batch_size", "group_size",
        )  # fmt: skip
        _require(self.temperature > 0, "temperature must be > 0 (log-probs divide by it)",
                 "temperature")  # fmt: skip
        _require(self.cliprange > 0, f"cliprange must be > 0, not {self.cliprange}", "cliprange")
        _require(
            self.total_episodes >= self.batch_size,
            f"total_episodes ({self.total_episodes}) must be at least batch_size"
            f" ({self.batch_size}): the run takes total_episodes // batch_size steps",
            "total_episodes", "batch_size",
        )  # fmt: skip
        # As PPO's: the policy changes every step and vLLM would need its weights synced.
        _require(self.sampler != "vllm",
                 "critic-free rollouts use the built-in sampler: vLLM would need the policy's"
                 " weights loaded into it after every step, which is not implemented; use"
                 " sampler 'auto' or 'builtin'", "sampler")  # fmt: skip
        self._require_no_dropout()
        if self.processes is not None:
            _require(not (problem := self.shared_batch_problem(self.processes)), problem,
                     "processes", "batch_size", "group_size", "mini_batch_size")  # fmt: skip

    def rows_per_step(self) -> int:
        return self.batch_size * self.group_size  # responses

    def shared_batch_problem(self, processes: int) -> str:
        """Why `processes` cannot share this run's batches ("" when they can)."""
        responses = self.batch_size * self.group_size
        return _shared_batch_problem(self, processes, "batch_size x group_size", responses)


@dataclass(frozen=True, kw_only=True)
class SampleConfig(FrozenModelConfig):
    model_path: str  # model to sample from (a policy or SFT directory)
    k: int = 4  # completions per prompt (labelers rank K = 2..9; 1 for plain evaluation samples)
    # Sample a prompt again (as many as it lacks) while its K samples are not all different, at
    # most this many more times: a ranking task of repeats tells the reward model nothing.
    resample_duplicates: int = 2
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling mass (1.0 = off)
    max_new_tokens: int = 128  # completion length cap
    max_prompt_length: int = 256  # prompt tokens kept (cut from the left)
    batch_size: int = 16  # sequences generated together
    sampler: str = "auto"  # "auto" (vLLM on a CUDA worker that has it, else "builtin") or "vllm"
    # Built-in sampler: torch.compile its decoding step (static KV cache). Off by default on CUDA
    # too: each model and batch shape compiles anew (tens of seconds), repaid only by long outputs.
    compile: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.k >= 1, f"k must be at least 1, not {self.k}", "k")
        _require(self.resample_duplicates >= 0,
                 f"resample_duplicates must be >= 0, not {self.resample_duplicates}",
                 "resample_duplicates")  # fmt: skip
        _require(self.temperature > 0, f"temperature must be > 0, not {self.temperature}",
                 "temperature")  # fmt: skip
        _require(0 < self.top_p <= 1, f"top_p must be in (0, 1], not {self.top_p}", "top_p")
