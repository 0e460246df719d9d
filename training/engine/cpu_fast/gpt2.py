"""Fast paths for GPT-2 that drive the model's own modules (same weights, same arithmetic) without
work whose result is never read: a CPU fast path, taken where `cpu_fast.gpt2_applies(model)`.
Every other architecture, and every model off the CPU, uses its Hugging Face forward;
tests/training/engine/cpu_fast/test_gpt2.py holds each path to the plain one.

- `Decoder`: sampling with a cache preallocated for the whole generation and the attention mask
  written in place, so a decoding step is only arithmetic.
- `run_trunk`: the last block's queries, attention and MLP are computed only at the positions
  whose hidden states are read (the others need only their keys and values): a reward model reads
  one position per sequence (about a fifth of a 4-layer trunk's work saved), SFT and PPO the
  response positions (the prompt's share of the last block saved).
- `run_trunk_packed` (PPO's log-probs and values, reward scores): the same on the real tokens, packed into
  one (tokens, embd) matrix for every per-token op, with attention in the padded layout.
Where they run the model's pieces themselves (packed trunk, decoding), attention is two batched
matmuls (SDPA's CPU kernel costs more than the arithmetic at these sizes) and GPT-2's tanh GELU is
`gelu_tanh`, a sigmoid form, while its activation fits in cache (`_mlp`). `run_trunk` (SFT, reward
training) keeps the model's own modules and SDPA: at SFT's 16 x 128 and reward training's shapes,
the bmm attention and the sigmoid GELU measured no faster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast, overload

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.activations import GELUTanh, NewGELUActivation
from transformers.models.gpt2.modeling_gpt2 import (
    GPT2MLP,
    GPT2Attention,
    GPT2Block,
    GPT2LMHeadModel,
    GPT2Model,
)
from transformers.pytorch_utils import Conv1D

KeyValues = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (batch, head, seq, head_dim) x 2


def supports(model: PreTrainedModel) -> bool:
    config = model.config
    return (
        config.model_type == "gpt2"
        and not config.add_cross_attention
        and not config.reorder_and_upcast_attn
        and config._attn_implementation == "sdpa"
    )


def _trunk(model: PreTrainedModel) -> GPT2Model:
    """The GPT2Model the caller checked with `supports`."""
    return cast(GPT2Model, model)


def _blocks(trunk: GPT2Model) -> Sequence[GPT2Block]:
    """The trunk's blocks (transformers types its ModuleList's items as plain Modules)."""
    return cast(Sequence[GPT2Block], trunk.h)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)  # (batch, head, len, dim)


def _attend(
    attention: GPT2Attention,
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


@overload
def run_trunk(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    key_is_real: torch.Tensor,
    positions: torch.Tensor,
    past: KeyValues | None = None,
    read: None = None,
) -> tuple[KeyValues, None]: ...


@overload
def run_trunk(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    key_is_real: torch.Tensor,
    positions: torch.Tensor,
    past: KeyValues | None = None,
    *,
    read: int | torch.Tensor,
) -> tuple[KeyValues, torch.Tensor]: ...


def run_trunk(
    model: PreTrainedModel,
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
    trunk = _trunk(model)
    heads, width = trunk.config.n_head, trunk.config.n_embd
    dropout = _blocks(trunk)[0].attn.attn_dropout.p if trunk.training else 0.0
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
    *blocks, last_block = _blocks(trunk)
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


class _ContiguousGrad(torch.autograd.Function):
    """The identity, whose backward hands on a contiguous gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def contiguous_grad(x: torch.Tensor) -> torch.Tensor:
    """x, with a contiguous gradient in the backward. `cat`'s backward gives each input a strided
    slice of the gradient, and some backwards are much slower on one: index_select's index_add
    falls back to a scatter_add (about 0.28 ms instead of a 0.03 ms copy and a 0.015 ms add for a
    reward batch's prompt keys)."""
    return _ContiguousGrad.apply(x)


_GELU_C = 2 * math.sqrt(2 / math.pi)  # 0.5 (1 + tanh(z)) = sigmoid(2 z)
_GELU_K = 0.044715


def _gelu_gate(x: torch.Tensor) -> torch.Tensor:
    """sigmoid(2 c (x + k x^3)) = sigmoid(x C (1 + K x^2)): gelu_tanh(x) = x * this. Three
    elementwise passes: C (1 + K x^2) in one addcmul, times x, sigmoid, the last two in place."""
    return torch.addcmul(x.new_full((), _GELU_C), x, x, value=_GELU_K * _GELU_C).mul_(x).sigmoid_()


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's tanh GELU; without autograd (sampling, scoring) no Function bookkeeping."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _GeluTanh.apply(x)
    return x * _gelu_gate(x)


class _GeluTanh(torch.autograd.Function):
    """GPT-2's tanh GELU, 0.5 x (1 + tanh(c (x + k x^3))), as x sigmoid(2 c (x + k x^3)): the same
    function, but sigmoid's CPU kernel is about four times faster than tanh's, and forward and
    backward are a few fused-in-place elementwise ops (torch's gelu_backward is as slow as tanh).
    The forward also computes the derivative, while x and the gate are still in cache, and keeps
    only it: the backward is one product."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        s = _gelu_gate(x)
        # d/dx x s(z) = s + x s (1 - s) dz/dx with dz/dx = C (1 + 3 K x^2): each pass an
        # addcmul (a + v b c) or an in-place product.
        dz = torch.addcmul(x.new_full((), _GELU_C), x, x, value=3 * _GELU_K * _GELU_C)
        slope = torch.addcmul(s, s, s, value=-1).mul_(dz)  # s (1 - s) dz/dx
        ctx.save_for_backward(torch.addcmul(s, slope, x))
        return x * s

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (derivative,) = ctx.saved_tensors
        return grad * derivative


# The sigmoid form's four elementwise passes beat torch's one tanh pass while the (rows, 4 * embd)
# activation stays in a core's cache (half of the 2 MiB L2 on the machine measured), not past it.
_SIGMOID_GELU_MAX_ELEMENTS = 2**18


def _linear(x: torch.Tensor, conv: Conv1D) -> torch.Tensor:
    """A Conv1D (x @ weight + bias) on rows as a matmul and an in-place bias add: addmm first
    broadcasts the bias into its output, a pass that costs more than the add for wide outputs.
    # (rows, out)"""
    return torch.mm(x, conv.weight).add_(conv.bias)


def _mlp(mlp: GPT2MLP, x: torch.Tensor) -> torch.Tensor:
    """GPT2MLP's forward (Conv1D, activation, Conv1D, dropout) with the tanh GELU as `_GeluTanh`
    where that is the faster one.  # like x"""
    rows = x.reshape(-1, x.shape[-1])
    gelu = isinstance(mlp.act, GELUTanh | NewGELUActivation)
    if not gelu or rows.shape[0] * mlp.c_fc.nf > _SIGMOID_GELU_MAX_ELEMENTS:
        return mlp(x)
    hidden = gelu_tanh(_linear(rows, mlp.c_fc))
    return mlp.dropout(torch.addmm(mlp.c_proj.bias, hidden, mlp.c_proj.weight).view(x.shape))


def _attend_heads(
    attention: GPT2Attention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor,
    dropout: float,
) -> torch.Tensor:
    """Softmax attention over (head * batch, len, head_dim) queries, keys and values with an
    additive mask (head * batch, len, len), as two batched matmuls: faster than SDPA's CPU kernel
    at these sizes.  # (head * batch, len, head_dim)"""
    scores = torch.baddbmm(bias, query, key.transpose(1, 2), alpha=attention.scaling)
    weights = torch.softmax(scores, -1)
    if dropout:
        weights = F.dropout(weights, dropout)
    return torch.bmm(weights, value)


def run_trunk_packed(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    keep: torch.Tensor,
    positions: torch.Tensor,
    read: torch.Tensor,
) -> torch.Tensor:
    """`run_trunk` on the tokens of `keep` only: every per-token op (the projections, the MLP, the
    layer norms, GELU) runs on a packed (tokens, embd) matrix with no padding; only attention sees
    the padded (batch, len) layout, which the packed rows are scattered into and gathered from.

    keep: (batch, len) the real tokens computed, among them every key a read position sees
    (tokens after a row's last read position may be left out); read: (batch, len) the positions
    whose final hidden states are returned, a subset of keep; positions: (batch, len).
    Returns (read positions in row-major order, embd): the hidden states `run_trunk` gives there.
    """
    trunk = _trunk(model)
    heads, width = trunk.config.n_head, trunk.config.n_embd
    head_dim = width // heads
    dropout = _blocks(trunk)[0].attn.attn_dropout.p if trunk.training else 0.0
    batch, length = input_ids.shape
    kept = keep.flatten().nonzero().squeeze(1)  # (tokens,) flat index of each packed row
    read_rows = read.flatten()[kept].nonzero().squeeze(1)  # (reads,) packed rows that are read
    read_at = kept[read_rows]  # (reads,) their flat index
    hidden = trunk.drop(trunk.wte(input_ids.flatten()[kept]) + trunk.wpe(positions.flatten()[kept]))

    # Query i sees kept keys up to itself; a query that is not kept sees itself, so no row of the
    # mask is empty (its output is never gathered). Attention runs head-major: (head * batch, ...).
    steps = torch.arange(length, device=input_ids.device)
    causal = steps <= steps.unsqueeze(1)  # (len, len)
    mask = (causal & keep[:, None, :]) | torch.eye(length, dtype=torch.bool, device=keep.device)
    bias = torch.zeros(mask.shape, dtype=hidden.dtype, device=mask.device)
    bias = bias.masked_fill_(~mask, float("-inf")).expand(heads, batch, length, length)
    bias = bias.reshape(heads * batch, length, length)  # shared by every layer

    def scatter(rows: torch.Tensor, at: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Packed rows (n, k * embd) at flat positions `at` -> k x (head * batch, len, head_dim),
        zeros elsewhere."""
        rows = rows.view(rows.shape[0], -1, head_dim).transpose(0, 1)  # (k * head, n, head_dim)
        full = rows.new_zeros(rows.shape[0], batch * length, head_dim).index_copy_(1, at, rows)
        return full.view(-1, heads * batch, length, head_dim).unbind(0)

    def attend(
        attention: GPT2Attention,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        at: torch.Tensor,
    ) -> torch.Tensor:
        """Attention output (after c_proj) at the packed rows of flat positions `at`. # (n, embd)"""
        attended = _attend_heads(attention, query, key, value, bias, dropout)
        attended = attended.view(heads, batch * length, head_dim).index_select(1, at)
        attended = attended.transpose(0, 1).reshape(-1, width)
        return attention.resid_dropout(attention.c_proj(attended))

    *blocks, last_block = _blocks(trunk)
    for block in blocks:
        attention = block.attn
        query, key, value = scatter(_linear(block.ln_1(hidden), attention.c_attn), kept)
        hidden = hidden + attend(attention, query, key, value, kept)
        hidden = hidden + _mlp(block.mlp, block.ln_2(hidden))

    # The last block: keys and values at every kept token, the rest only where a state is read.
    attention = last_block.attn
    x = last_block.ln_1(hidden)
    weight, bias_qkv = attention.c_attn.weight, attention.c_attn.bias  # Conv1D: x @ weight + bias
    key, value = scatter(torch.mm(x, weight[:, width:]).add_(bias_qkv[width:]), kept)
    (query,) = scatter(torch.addmm(bias_qkv[:width], x[read_rows], weight[:, :width]), read_at)
    residual = hidden[read_rows] + attend(attention, query, key, value, read_at)
    residual = residual + _mlp(last_block.mlp, last_block.ln_2(residual))
    return trunk.ln_f(residual)


def response_hidden_states(
    trunk: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    positions: torch.Tensor,
    prompt_length: int,
    response_mask: torch.Tensor,
) -> torch.Tensor:
    """`lm.response_hidden_states` (the positions that predict the response tokens where the bool
    response_mask is set, row-major) computed on the real tokens those positions see only: no
    prompt or response padding, nothing after each row's last read position.
    input_ids, attention_mask, positions: (batch, >= prompt_length + T - 1); response_mask:
    (batch, T).  # (response_mask.sum(), embd)"""
    length, width = input_ids.shape[1], response_mask.shape[1]
    read = F.pad(response_mask, (prompt_length - 1, length - prompt_length + 1 - width))
    # A read position sees the real tokens up to itself: those after a row's last are unused.
    last_read = prompt_length - 2 + response_mask.sum(1, keepdim=True)  # (batch, 1)
    columns = torch.arange(length, device=input_ids.device)
    keep = (attention_mask.bool() & (columns <= last_read)) | read
    return run_trunk_packed(trunk, input_ids, keep, positions, read)


def last_hidden_states(
    trunk: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    positions: torch.Tensor,
    last_index: torch.Tensor,
) -> torch.Tensor:
    """Final hidden state of each row at `last_index` (a reward model's last real token), on the
    real tokens only (packed): no prompt or response padding is computed.
    input_ids, attention_mask, positions: (batch, len); last_index: (batch,).  # (batch, embd)"""
    read = F.one_hot(last_index, input_ids.shape[1]).bool()
    return run_trunk_packed(trunk, input_ids, attention_mask.bool() | read, positions, read)


def shared_prompt_last_hidden_states(
    trunk: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    prompt_positions: torch.Tensor,
    completion_ids: torch.Tensor,
    key_is_real: torch.Tensor,
    completion_positions: torch.Tensor,
    prompt_index: torch.Tensor,
    last_index: torch.Tensor,
) -> torch.Tensor:
    """Final hidden state at each completion's `last_index` when completions share prompts: each
    prompt goes through the trunk once and its keys and values (gradients flow through them)
    serve all its completions; the last block runs at the read position only.
    prompt_*: (prompts, P); completion_ids, completion_positions: (completions, T); key_is_real:
    (completions, P + T); prompt_index, last_index: (completions,).  # (completions, embd)"""
    prompt_kv, _ = run_trunk(trunk, prompt_ids, prompt_mask.bool(), prompt_positions)
    _, last_hidden = run_trunk(
        trunk,
        completion_ids,
        key_is_real,
        completion_positions,
        # Each completion's copy of its prompt's keys and values; run_trunk puts them before the
        # completion's own with a cat, whose backward slices the gradient.
        past=[
            (
                contiguous_grad(key.index_select(0, prompt_index)),
                contiguous_grad(value.index_select(0, prompt_index)),
            )
            for key, value in prompt_kv
        ],
        read=last_index,
    )
    return last_hidden


class Decoder:
    """Sampling state for one batch: GPT-2's modules driven with a cache preallocated for the whole
    generation and the attention mask written in place: per step only the arithmetic is left."""

    def __init__(self, model: PreTrainedModel, batch: int, max_length: int) -> None:
        lm = cast(GPT2LMHeadModel, model)  # the caller checked `supports`
        self.trunk, self.lm_head = lm.transformer, lm.lm_head
        config = lm.config
        self.heads = config.n_head
        self.head_dim = config.n_embd // config.n_head
        # Keys and values of a layer side by side, so that one copy writes both.
        self.shape = (config.n_layer, 2, batch, self.heads, max_length, self.head_dim)
        self.cache: torch.Tensor | None = None  # (layer, key/value, batch, head, max_len, head_dim)
        device = lm.lm_head.weight.device
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
        # Decoding steps add a query row over the real keys as one additive mask row per
        # (batch, head), made once: -inf on the prompt's pad, 0 on every other key.
        batch, max_length = self.key_is_real.shape
        bias = torch.zeros(self.key_is_real.shape, dtype=logits.dtype, device=logits.device)
        bias = bias.masked_fill_(~self.key_is_real, float("-inf"))[:, None, None]
        self.bias = bias.expand(batch, self.heads, 1, max_length).reshape(-1, 1, max_length)
        return logits

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.positions = self.positions + 1
        return self._forward(tokens.unsqueeze(-1), self.positions, None)

    def _step_attention(
        self, attention: GPT2Attention, query: torch.Tensor, cached: torch.Tensor, end: int
    ) -> torch.Tensor:
        """One new query per row over the layer's cached keys and values (2, batch, head, end,
        head_dim), as two batched matmuls (SDPA's CPU kernel costs more than the arithmetic at
        one query).  # (batch, 1, embd), after c_proj"""
        batch = query.shape[0]
        keys, values = cached.flatten(1, 2).unbind(0)  # views
        query = query.reshape(-1, 1, self.head_dim)  # (batch * head, 1, head_dim)
        scores = torch.baddbmm(
            self.bias[:, :, :end], query, keys.transpose(1, 2), alpha=attention.scaling
        )
        attended = torch.bmm(torch.softmax(scores, -1), values).view(batch, 1, -1)
        return attention.resid_dropout(attention.c_proj(attended))

    def _forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """mask: (batch, 1, length, end) for the prefill; None for a decoding step (one token)."""
        batch, length = input_ids.shape
        start, end = self.length, self.length + length
        hidden = self.trunk.wte(input_ids) + self.trunk.wpe(positions)  # (batch, length, embd)
        for layer, block in enumerate(_blocks(self.trunk)):
            attention = block.attn
            qkv = attention.c_attn(block.ln_1(hidden))
            qkv = qkv.view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            if self.cache is None:
                self.cache = qkv.new_empty(self.shape)
            self.cache[layer, :, :, :, start:end] = qkv[1:]  # keys and values, one copy
            cached = self.cache[layer, :, :, :, :end]  # (2, batch, head, end, head_dim), a view
            if mask is None:  # a decoding step
                attended = self._step_attention(attention, qkv[0], cached, end)
            else:
                keys, values = cached.unbind(0)
                attended = _attend(attention, qkv[0], keys, values, mask, 0.0)
            hidden = hidden + attended
            hidden = hidden + _mlp(block.mlp, block.ln_2(hidden))
        self.length = end
        return self.lm_head(self.trunk.ln_f(hidden[:, -1]))  # (batch, vocab)
