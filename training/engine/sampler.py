"""The one way a stage samples: a `Sampler` turns prompts (token ids) into a `Generation`.

Two backends: the built-in loop (`generation.sample` on a loaded model, any device; PPO's
rollouts and, by default, `sample` runs) and vLLM (`vllm_sampler`, optional: imported only when
chosen, on a CUDA worker that has it installed). A config's `sampler` is resolved here, on the
worker, not when the run is configured: the web server that validates configs has no vLLM.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.engine import distributed
from training.engine.data import collate_prompts
from training.engine.generation import Generation, Part, sample
from training.engine.precision import Amp, to_device


class SamplerUnavailable(RuntimeError):
    """The sampler a config asks for cannot run on this worker."""


class Sampler(Protocol):
    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        seed: int,
        part: tuple[int, int] | None = None,
    ) -> tuple[dict[str, torch.Tensor], Generation]:
        """One sampled continuation per entry of prompt_ids (a prompt repeated K times gets K),
        drawn from `seed`: (the left-padded prompts, input_ids and attention_mask
        (batch, prompt_length), and the generation (batch, T)). part (index, stride): only the
        entries index, index + stride, ... (one process's share of the batch; the prompts are
        padded as the whole batch's), each sampled as it would be in the whole batch."""
        ...


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def choose(name: str, device: torch.device) -> str:
    """The backend a config's `sampler` runs with here: "auto" is vLLM on CUDA when it is
    installed and the built-in loop otherwise; "builtin" and "vllm" are themselves (vLLM not
    installed is `vllm_sampler`'s error, raised when it is built)."""
    if name == "auto":
        return "vllm" if device.type == "cuda" and vllm_installed() else "builtin"
    return name


@dataclass
class BuiltinSampler:
    """The built-in loop on a loaded model (the policy being trained, for PPO), under the run's
    autocast. cache and compile: `generation.make_decoder`."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    amp: Amp
    compile: bool = False
    cache: str = "auto"

    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        seed: int,
        part: tuple[int, int] | None = None,
    ) -> tuple[dict[str, torch.Tensor], Generation]:
        device = self.model.device
        prompts = to_device(collate_prompts(prompt_ids, self.tokenizer.pad_token_id), device)
        rows = None
        if part is not None:
            rows = Part(*part, total=len(prompt_ids))
            prompts = {name: rows.take(tensor) for name, tensor in prompts.items()}
        # A model sharded with FSDP2 is gathered whole for the sampling (a collective).
        with distributed.unsharded(self.model), torch.inference_mode(), self.amp():
            generation = sample(
                self.model,
                prompts["input_ids"],
                prompts["attention_mask"],
                max_new_tokens=max_new_tokens,
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
                temperature=temperature,
                top_p=top_p,
                generator=torch.Generator(device).manual_seed(seed),
                cache=self.cache,
                compile=self.compile,
                part=rows,
            )
        return prompts, generation
