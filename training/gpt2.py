"""Fast paths for GPT-2 that drive the model's own modules (same weights, same arithmetic) without
work whose result is never read. Every other architecture uses its Hugging Face forward; tests hold
each path to the HF one.

- `Decoder`: sampling with a cache preallocated for the whole generation and the attention mask
  written in place, so a decoding step is only arithmetic.
- `run_trunk`: the last block's queries, attention and MLP are computed only at the positions
  whose hidden states are read (the others need only their keys and values): a reward model reads
  one position per sequence (about a fifth of a 4-layer trunk's work saved), SFT and PPO the
  response positions (the prompt's share of the last block saved).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

KeyValues = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (batch, head, seq, head_dim) x 2


def supports(model: PreTrainedModel) -> bool:
    config = model.config
    return (
        config.model_type == "gpt2"
        and not config.add_cross_attention
        and not config.reorder_and_upcast_attn
        and config._attn_implementation == "sdpa"
    )


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)  # (batch, head, len, dim)


def _attend(
    attention: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    dropout: float,
) -> torch.Tensor:
    """Attention output after GPT-2's output projection.  # (batch, query_len, embd)"""
    attended = F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=dropout, scale=attention.scaling
    )
    batch, _, length, _ = attended.shape
    attended = attended.transpose(1, 2).reshape(batch, length, -1)
    return attention.resid_dropout(attention.c_proj(attended))


def run_trunk(
    trunk: PreTrainedModel,
    input_ids: torch.Tensor,
    key_is_real: torch.Tensor,
    positions: torch.Tensor,
    past: KeyValues | None = None,
    read: int | torch.Tensor | None = None,
) -> tuple[KeyValues, torch.Tensor | None]:
    """Run a GPT2Model over `input_ids` (after `past` keys and values, if any), computing the last
    block only where its output is read.

    key_is_real: (batch, past + len) which keys are real tokens; positions: (batch, len).
    read: an int `start` for the final hidden states of positions start.. of input_ids, a (batch,)
    tensor for one position per row (a reward model's last token), or None for keys and values
    only (a prompt whose continuations come later).
    Returns (keys and values of every layer, past included; the final hidden states read or None):
    (batch, len - start, embd) or (batch, embd).
    """
    heads, width = trunk.config.n_head, trunk.config.n_embd
    dropout = trunk.h[0].attn.attn_dropout.p if trunk.training else 0.0
    batch, length = input_ids.shape
    past_length = 0 if past is None else past[0][0].shape[2]
    hidden = trunk.drop(trunk.wte(input_ids) + trunk.wpe(positions))  # (batch, len, embd)

    # Query i (at past_length + i) sees real keys up to itself; a pad query sees itself, so no row
    # of the mask is empty.
    keys_at = torch.arange(past_length + length, device=input_ids.device)
    queries_at = keys_at[past_length:].unsqueeze(1)
    causal = keys_at <= queries_at  # (len, past + len)
    mask = (causal & key_is_real[:, None, None, :]) | (keys_at == queries_at)

    def keys_and_values(layer: int, key: torch.Tensor, value: torch.Tensor) -> None:
        key, value = _split_heads(key, heads), _split_heads(value, heads)
        if past is not None:
            key = torch.cat([past[layer][0], key], dim=2)
            value = torch.cat([past[layer][1], value], dim=2)
        key_values.append((key, value))

    key_values: KeyValues = []
    *blocks, last_block = trunk.h
    for layer, block in enumerate(blocks):
        attention = block.attn
        query, key, value = attention.c_attn(block.ln_1(hidden)).split(width, dim=2)
        keys_and_values(layer, key, value)
        query = _split_heads(query, heads)
        hidden = hidden + _attend(attention, query, *key_values[-1], mask, dropout)
        hidden = hidden + block.mlp(block.ln_2(hidden))

    # The last block: keys and values everywhere, the rest only where a hidden state is read.
    attention = last_block.attn
    x = last_block.ln_1(hidden)
    weight, bias = attention.c_attn.weight, attention.c_attn.bias  # Conv1D: x @ weight + bias
    keys_and_values(len(blocks), *(x @ weight[:, width:] + bias[width:]).split(width, dim=2))
    if read is None:
        return key_values, None
    if isinstance(read, int):
        residual, x_read, read_mask = hidden[:, read:], x[:, read:], mask[:, :, read:]
    else:
        rows = torch.arange(batch, device=input_ids.device)
        residual = hidden[rows, read].unsqueeze(1)  # (batch, 1, embd)
        x_read = x[rows, read].unsqueeze(1)
        read_mask = mask[rows, :, read].unsqueeze(2)  # (batch, 1, 1, past + len)
    query = _split_heads(x_read @ weight[:, :width] + bias[:width], heads)
    residual = residual + _attend(attention, query, *key_values[-1], read_mask, dropout)
    residual = residual + last_block.mlp(last_block.ln_2(residual))
    hidden = trunk.ln_f(residual)
    return key_values, hidden if isinstance(read, int) else hidden.squeeze(1)


class Decoder:
    """Sampling state for one batch: GPT-2's modules driven with a cache preallocated for the whole
    generation and the attention mask written in place: per step only the arithmetic is left."""

    def __init__(self, model: PreTrainedModel, batch: int, max_length: int) -> None:
        self.trunk, self.lm_head = model.transformer, model.lm_head
        config = model.config
        self.heads = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.shape = (config.n_layer, batch, self.heads, max_length, self.head_dim)
        self.keys: torch.Tensor | None = None  # (layer, batch, head, max_length, head_dim)
        self.values: torch.Tensor | None = None
        device = model.lm_head.weight.device
        self.key_is_real = torch.ones(batch, max_length, dtype=torch.bool, device=device)
        self.length = 0

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        prompt_length = input_ids.shape[1]
        self.key_is_real[:, :prompt_length] = attention_mask.bool()
        self.positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        causal = torch.ones(prompt_length, prompt_length, dtype=torch.bool, device=input_ids.device)
        causal = causal.tril()
        # A pad query attends to itself only, so no row is empty.
        mask = causal & (self.key_is_real[:, None, None, :prompt_length] | causal.diag().diag())
        logits = self._forward(input_ids, self.positions, mask)
        self.positions = self.positions[:, -1:]
        return logits

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.positions = self.positions + 1
        mask = self.key_is_real[:, None, None, : self.length + 1]
        return self._forward(tokens.unsqueeze(-1), self.positions, mask)

    def _forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        batch, length = input_ids.shape
        start, end = self.length, self.length + length
        hidden = self.trunk.wte(input_ids) + self.trunk.wpe(positions)  # (batch, length, embd)
        for layer, block in enumerate(self.trunk.h):
            attention = block.attn
            query, key, value = attention.c_attn(block.ln_1(hidden)).split(attention.split_size, 2)
            query, key, value = (
                t.view(batch, length, self.heads, self.head_dim).transpose(1, 2)
                for t in (query, key, value)
            )  # (batch, head, length, head_dim)
            if self.keys is None:
                self.keys = key.new_empty(self.shape)
                self.values = value.new_empty(self.shape)
            self.keys[layer, :, :, start:end] = key
            self.values[layer, :, :, start:end] = value
            hidden = hidden + _attend(
                attention,
                query,
                self.keys[layer, :, :, :end],
                self.values[layer, :, :, :end],
                mask,
                0.0,
            )
            hidden = hidden + block.mlp(block.ln_2(hidden))
        self.length = end
        return self.lm_head(self.trunk.ln_f(hidden[:, -1]))  # (batch, vocab)
