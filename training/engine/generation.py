"""A small sampling loop with a KV cache, for PPO rollouts and for samples sent to labelers.

Why not `model.generate`: on a small model on CPU its per-step bookkeeping (logits processors,
stopping criteria, cache objects, mask building) costs more than the forward itself, and PPO needs
to know exactly which temperature it sampled with. Three decoders, chosen by `make_decoder`:
- on CPU, for GPT-2, the loop drives the model's own modules with a preallocated cache
  (`cpu_fast.gpt2.Decoder`);
- on CUDA, any architecture goes through its HF forward with a `StaticCache` allocated whole for
  batch x (prompt + max_new_tokens) (`_StaticDecoder`): every decoding step has the same shapes,
  so `compile=True` can compile it (and capture it as a CUDA graph);
- anything else goes through its HF forward with a `DynamicCache` (`_HFDecoder`).
All give the logits a full forward gives (tests/training/engine/test_generation.py,
tests/training/engine/cpu_fast/test_gpt2.py).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import Cache, DynamicCache, PreTrainedModel, StaticCache

from training.engine import cpu_fast
from training.engine.cpu_fast import gpt2
from training.engine.lm import evaluating, position_ids_from_mask
from training.engine.losses import at_temperature


@dataclass(frozen=True)
class Part:
    """Rows index, index + stride, ... of a batch of `total` rows: one process's share of a batch
    sampled by several (training/engine/distributed.py). Its rows draw the random numbers they
    would draw in the whole batch, so a response does not depend on how the batch was shared."""

    index: int
    stride: int
    total: int

    def take(self, rows: torch.Tensor) -> torch.Tensor:
        return rows[self.index :: self.stride]


@dataclass
class Generation:
    tokens: torch.Tensor  # (batch, new) sampled ids; pad after EOS
    response_mask: torch.Tensor  # (batch, new) 1 up to and including EOS
    finished: torch.Tensor  # (batch,) bool: the response ended with EOS


def _forward(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    cache: Cache,
) -> torch.Tensor:
    """The next-token logits after `input_ids`, their keys and values written to `cache`.
    # (batch, vocab)"""
    outputs = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return outputs.logits[:, -1]


class _HFDecoder:
    """Any causal LM through its own forward and a DynamicCache, which grows by a column a step."""

    def __init__(self, model: PreTrainedModel, batch: int, max_length: int) -> None:
        self.model = model
        self.cache = DynamicCache(config=model.config)
        self.attention_mask: torch.Tensor  # set by prefill

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.attention_mask = attention_mask
        position_ids = position_ids_from_mask(attention_mask)
        self.positions = position_ids[:, -1:]
        return _forward(self.model, input_ids, self.attention_mask, position_ids, self.cache)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.attention_mask = F.pad(self.attention_mask, (0, 1), value=1)
        self.positions = self.positions + 1
        return _forward(
            self.model, tokens.unsqueeze(-1), self.attention_mask, self.positions, self.cache
        )


# Compiled decoding steps, one per model (a new function object would compile anew).
_compiled_steps: weakref.WeakKeyDictionary[PreTrainedModel, Callable[..., torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def _compiled_step(model: PreTrainedModel) -> Callable[..., torch.Tensor]:
    """`_forward` compiled for `model`. On CUDA as CUDA graphs ("reduce-overhead"): a decoding
    step of a small model is a few hundred tiny kernels, and launching them is most of its time."""
    if model not in _compiled_steps:
        mode = "reduce-overhead" if model.device.type == "cuda" else None
        _compiled_steps[model] = torch.compile(_forward, fullgraph=True, mode=mode)
    return _compiled_steps[model]


class _StaticDecoder:
    """Any causal LM through its own forward and a StaticCache: keys and values for batch x
    max_length allocated whole at the prefill (in the dtype the forward computes in), and an
    attention mask of that length written once (1 after the prompt: the causal mask hides the
    columns not written yet). Every decoding step has the same shapes, so it can be compiled."""

    def __init__(
        self, model: PreTrainedModel, batch: int, max_length: int, *, compile: bool = False
    ) -> None:
        self.model = model
        self.max_length = max_length
        self.cache = StaticCache(config=model.config, max_cache_len=max_length)
        self.decode_step = _compiled_step(model) if compile else _forward
        self.attention_mask: torch.Tensor  # set by prefill

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        new_columns = self.max_length - attention_mask.shape[1]
        self.attention_mask = F.pad(attention_mask, (0, new_columns), value=1)  # (batch, max_len)
        position_ids = position_ids_from_mask(attention_mask)
        self.positions = position_ids[:, -1:]
        # The prefill runs uncompiled: its shape changes with every batch of prompts.
        return _forward(self.model, input_ids, self.attention_mask, position_ids, self.cache)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.positions = self.positions + 1
        return self.decode_step(
            self.model, tokens.unsqueeze(-1), self.attention_mask, self.positions, self.cache
        )


Decoder = gpt2.Decoder | _HFDecoder | _StaticDecoder
CACHES = ("auto", "dynamic", "static")
# With compile, the static cache's length is rounded up to a multiple of this, so that batches
# whose prompts differ by a few tokens reuse one compiled step (unused columns are masked).
COMPILED_LENGTH_MULTIPLE = 64


def make_decoder(
    model: PreTrainedModel,
    batch: int,
    max_length: int,
    *,
    cache: str = "auto",
    compile: bool = False,
) -> Decoder:
    """cache: "auto" is GPT-2's hand-written decoder where `cpu_fast` applies, a StaticCache on
    CUDA and a DynamicCache otherwise; "dynamic" or "static" forces one. compile (the decoding
    step, with torch.compile) implies the static cache."""
    if cache not in CACHES:
        raise ValueError(f"cache must be one of {CACHES}, not {cache!r}")
    if compile:
        max_length = -(-max_length // COMPILED_LENGTH_MULTIPLE) * COMPILED_LENGTH_MULTIPLE
        return _StaticDecoder(model, batch, max_length, compile=True)
    if cache == "static" or (cache == "auto" and model.device.type == "cuda"):
        return _StaticDecoder(model, batch, max_length)
    if cache == "auto" and cpu_fast.gpt2_applies(model):  # cpu_fast: GPT-2's modules by hand
        return gpt2.Decoder(model, batch, max_length)
    return _HFDecoder(model, batch, max_length)


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus sampling (Holtzman et al. 2019): keep the fewest tokens whose mass reaches top_p."""
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    sorted_probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = sorted_probs.cumsum(-1) - sorted_probs
    sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def _draw(
    probs: torch.Tensor, generator: torch.Generator | None, part: Part | None = None
) -> torch.Tensor:
    """One token per row from `probs` by inverting the CDF at a uniform draw: one random number per
    row instead of torch.multinomial's slower CPU kernel. A token of probability 0 has a flat
    stretch of CDF and cannot be picked (searchsorted returns the first index whose CDF > u).
    part: these rows are that part of a bigger batch, and draw that batch's numbers."""
    cdf = probs.cumsum(-1)  # (batch, vocab)
    rows = part.total if part is not None else probs.shape[0]
    uniform = torch.rand(rows, 1, generator=generator, device=probs.device)  # (rows, 1)
    if part is not None:
        uniform = part.take(uniform)  # (batch, 1)
    token = torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True).squeeze(-1)
    return token.clamp(max=probs.shape[-1] - 1)


@torch.inference_mode()
def sample(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    cache: str = "auto",
    compile: bool = False,
    part: Part | None = None,
) -> Generation:
    """Sample continuations of left-padded prompts. Stops early once every row has emitted EOS.
    cache and compile choose the decoder (`make_decoder`). part: the rows are that part of a
    batch (`Part`), and draw what they would draw in it."""
    with evaluating(model):  # a trained model under activation checkpointing keeps no cache else
        return _sample(model, input_ids, attention_mask, max_new_tokens, eos_token_id,
                       pad_token_id, temperature, top_p, generator, cache, compile,
                       part)  # fmt: skip


def _sample(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None,
    cache: str,
    compile: bool,
    part: Part | None,
) -> Generation:
    batch = input_ids.shape[0]
    max_length = input_ids.shape[1] + max_new_tokens
    decoder = make_decoder(model, batch, max_length, cache=cache, compile=compile)
    logits = decoder.prefill(input_ids, attention_mask)
    finished = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    tokens = []
    for step in range(max_new_tokens):
        logits = at_temperature(logits, temperature)  # (batch, vocab)
        if top_p < 1.0:
            logits = _top_p_filter(logits, top_p)
        token = _draw(torch.softmax(logits, dim=-1), generator, part)
        token = token.masked_fill(finished, pad_token_id)
        tokens.append(token)
        finished = finished | (token == eos_token_id)
        if step == max_new_tokens - 1 or bool(finished.all()):
            break
        logits = decoder.step(token)
    new_tokens = torch.stack(tokens, dim=1)  # (batch, new)
    # A token is part of the response if no EOS came strictly before it.
    is_eos = (new_tokens == eos_token_id).long()
    eos_before = is_eos.cumsum(1) - is_eos
    response_mask = (eos_before == 0).long()
    return Generation(new_tokens, response_mask, finished)
