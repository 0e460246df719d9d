"""Frozen configs for the four training stages.

A Celery task builds one with `SFTConfig.from_dict(row.config)`; `asdict(cfg)` goes back into the
row. Defaults follow InstructGPT (Ouyang et al. 2022, appendix C) scaled down to small models, and
the PPO ones "The N+ implementation details of RLHF with PPO" (Huang et al. 2024,
https://arxiv.org/abs/2403.17031).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Self

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16")


@dataclass(frozen=True, kw_only=True)
class _Common:
    output_dir: str  # run directory: checkpoints/ and model/ are written under it
    seed: int = 0  # seeds torch, the data order and sampling
    checkpoint_every: int = 50  # save a resumable checkpoint every N optimizer steps (0 = never)
    device: str = "auto"  # "auto" (cuda if available), "cpu" or "cuda"
    dtype: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 on CPU), "float32" or "bfloat16"

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(
                f"{type(self).__name__}.device must be one of {DEVICES}, got {self.device!r}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(
                f"{type(self).__name__}.dtype must be one of {DTYPES}, got {self.dtype!r}"
            )
        if self.checkpoint_every < 0:
            raise ValueError(f"{type(self).__name__}.checkpoint_every must be >= 0")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Build a config from plain data, refusing keys the config does not have."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"{cls.__name__}: unknown keys {unknown}; allowed keys are {sorted(known)}"
            )
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(values))
        if missing:
            raise ValueError(f"{cls.__name__}: missing required keys {missing}")
        return cls(**values)


def asdict(cfg: _Common) -> dict[str, Any]:
    """Plain-data form of a config (round-trips through `from_dict`)."""
    return dataclasses.asdict(cfg)


@dataclass(frozen=True, kw_only=True)
class SFTConfig(_Common):
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
class RewardConfig(_Common):
    model_path: str  # trunk init, usually the SFT model (InstructGPT initialises the RM from SFT)
    lr: float = 9e-6  # AdamW learning rate
    warmup_steps: int = 0  # linear warmup from 0 to lr over this many steps
    weight_decay: float = 0.0  # AdamW weight decay
    batch_size: int = 8  # rankings per optimizer step; each ranking is one batch element
    epochs: int = 1  # InstructGPT trains one epoch: the RM overfits after that
    max_steps: int | None = None  # stop after this many optimizer steps instead of epochs
    max_length: int = 512  # prompt + completion tokens kept per completion
    val_fraction: float = 0.1  # share of rankings held out for loss and pair accuracy
    eval_every: int = 50  # evaluate every N steps (and at the end)
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 = off)
    normalize_on_demonstrations: bool = True  # set the bias so demonstrations score mean 0


@dataclass(frozen=True, kw_only=True)
class PPOConfig(_Common):
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

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size % self.mini_batch_size:
            raise ValueError("PPOConfig.batch_size must be a multiple of mini_batch_size")
        if self.temperature <= 0:
            raise ValueError("PPOConfig.temperature must be > 0 (log-probs divide by it)")


@dataclass(frozen=True, kw_only=True)
class SampleConfig(_Common):
    model_path: str  # model to sample from (a policy or SFT directory)
    k: int = 4  # completions per prompt (labelers rank K = 2..9; 1 for plain evaluation samples)
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling mass (1.0 = off)
    max_new_tokens: int = 128  # completion length cap
    max_prompt_length: int = 256  # prompt tokens kept (cut from the left)
    batch_size: int = 16  # sequences generated together

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1:
            raise ValueError("SampleConfig.k must be >= 1")
