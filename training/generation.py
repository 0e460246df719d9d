"""A small sampling loop with a KV cache, for PPO rollouts and for samples sent to labelers.

Why not `model.generate`: its per-step bookkeeping (logits processors, stopping criteria, cache
setup) costs more than a forward of a small model on CPU, and PPO needs the exact temperature it
sampled with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel

from training.modeling import position_ids_from_mask


@dataclass
class Generation:
    tokens: torch.Tensor  # (batch, new) sampled ids; pad after EOS
    response_mask: torch.Tensor  # (batch, new) 1 up to and including EOS
    finished: torch.Tensor  # (batch,) bool: the response ended with EOS


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus sampling (Holtzman et al. 2019): keep the fewest tokens whose mass reaches top_p."""
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    mass_before = torch.softmax(sorted_logits, dim=-1).cumsum(-1) - torch.softmax(sorted_logits, -1)
    sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


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
) -> Generation:
    """Sample continuations of left-padded prompts. Stops early once every row has emitted EOS."""
    batch = input_ids.shape[0]
    positions = position_ids_from_mask(attention_mask)
    cache = DynamicCache(config=model.config)
    outputs = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    next_positions = positions[:, -1:] + 1  # (batch, 1)
    finished = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    ones = attention_mask.new_ones(batch, 1)
    tokens = []
    for step in range(max_new_tokens):
        logits = outputs.logits[:, -1].float() / temperature  # (batch, vocab)
        if top_p < 1.0:
            logits = _top_p_filter(logits, top_p)
        probs = torch.softmax(logits, dim=-1)
        token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        token = token.masked_fill(finished, pad_token_id)
        tokens.append(token)
        finished = finished | (token == eos_token_id)
        if step == max_new_tokens - 1 or bool(finished.all()):
            break
        attention_mask = torch.cat([attention_mask, ones], dim=1)
        outputs = model(
            input_ids=token.unsqueeze(-1),
            attention_mask=attention_mask,
            position_ids=next_positions,
            past_key_values=cache,
            use_cache=True,
        )
        next_positions = next_positions + 1
    new_tokens = torch.stack(tokens, dim=1)  # (batch, new)
    # A token is part of the response if no EOS came strictly before it.
    is_eos = (new_tokens == eos_token_id).long()
    eos_before = is_eos.cumsum(1) - is_eos
    response_mask = (eos_before == 0).long()
    return Generation(new_tokens, response_mask, finished)
