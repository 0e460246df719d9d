"""Sampling with vLLM (https://docs.vllm.ai) for `sample` runs, on a CUDA worker that has it.

vLLM is optional: nothing imports it until a `VLLMSampler` is built, and building one where it is
not installed raises `SamplerUnavailable`, naming the package. vLLM loads the model from its
directory and samples from those weights, so it serves runs whose model does not change. PPO's
policy changes after every step: using vLLM there would mean loading the new weights into vLLM's
model each step (OpenRLHF and TRL's colocate mode reach into vLLM's workers to do it, by a path
that changes between vLLM versions); that is not done here, and `PPOConfig` refuses "vllm".

A batch's consecutive copies of a prompt (a prompt's K samples) are one request with n=K. Each
request has its own seed, drawn from the batch's seed, so a batch sampled again (a resumed run)
gives the same completions on the same vLLM version and GPU; they are not the built-in sampler's.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from training.engine.data import collate_prompts, pad_right
from training.engine.generation import Generation
from training.engine.lm import check_safetensors_weights
from training.engine.precision import to_device
from training.engine.sampler import SamplerUnavailable

MISSING = (
    "sampler='vllm' needs the vllm package, which is not installed on this worker: install it"
    " there (pip install vllm, on a CUDA machine), or set sampler to 'auto' or 'builtin'"
)


def _import_vllm() -> ModuleType:
    try:
        import vllm
    except ImportError as error:
        raise SamplerUnavailable(MISSING) from error
    return vllm


def to_generation(
    completions: Sequence[Any], eos_token_id: int, pad_token_id: int, device: torch.device
) -> Generation:
    """vLLM's completions (`token_ids`, `finish_reason`) in our layout: (batch, longest), pad
    after EOS. A completion that stopped ("stop", not "length") ends with EOS even where vLLM left
    the stop token out of its ids."""
    rows, finished = [], []
    for completion in completions:
        ids = list(completion.token_ids)
        ended = completion.finish_reason == "stop"
        if ended and ids[-1:] != [eos_token_id]:
            ids.append(eos_token_id)
        rows.append(ids)
        finished.append(ended)
    tokens = pad_right(rows, pad_token_id)  # (batch, T)
    response_mask = pad_right([[1] * len(ids) for ids in rows], 0)
    return Generation(
        tokens.to(device),
        response_mask.to(device),
        torch.tensor(finished, dtype=torch.bool, device=device),
    )


class VLLMSampler:
    """A vLLM engine on the model directory; `generate` as the built-in sampler's."""

    def __init__(
        self,
        model_path: str | Path,
        tokenizer: PreTrainedTokenizerBase,
        *,
        device: torch.device,
        dtype: torch.dtype,
        max_model_len: int,
        seed: int,
    ) -> None:
        self.vllm = _import_vllm()
        self.tokenizer = tokenizer
        self.device = device
        check_safetensors_weights(model_path)  # as lm.load_pretrained: never pickle weights
        self.llm = self.vllm.LLM(
            model=str(model_path),
            load_format="safetensors",
            trust_remote_code=False,
            dtype=str(dtype).removeprefix("torch."),
            max_model_len=max_model_len,
            seed=seed,
            enable_prefix_caching=True,  # a prompt's K samples share its prefill
        )

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
        if part is not None:  # the online stages that share a batch use the built-in sampler
            raise ValueError("the vLLM sampler samples whole batches, not a process's part")
        requests = [(list(ids), len(list(run))) for ids, run in groupby(map(list, prompt_ids))]
        draws = torch.Generator().manual_seed(seed)
        seeds = torch.randint(2**31 - 1, (len(requests),), generator=draws).tolist()
        params = [
            self.vllm.SamplingParams(
                n=n,
                temperature=temperature,
                top_p=top_p,
                max_tokens=max_new_tokens,
                seed=request_seed,
                stop_token_ids=[self.tokenizer.eos_token_id],
                detokenize=False,  # the stage decodes with its own tokenizer
            )
            for (_, n), request_seed in zip(requests, seeds, strict=True)
        ]
        outputs = self.llm.generate(
            [{"prompt_token_ids": ids} for ids, _ in requests], params, use_tqdm=False
        )
        completions = [
            completion
            for output in outputs
            for completion in sorted(output.outputs, key=lambda c: c.index)
        ]
        pad = self.tokenizer.pad_token_id
        prompts = to_device(collate_prompts(prompt_ids, pad), self.device)
        return prompts, to_generation(completions, self.tokenizer.eos_token_id, pad, self.device)
