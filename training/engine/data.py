"""Plain records -> token ids -> padded tensors, and the seeded data order every stage uses.
No Django, no datasets library.

Record shapes (as labeling/exports.py writes them, TRL's conversational shapes):
  demonstration: {"prompt": str | [messages], "completion": str | [assistant messages]}
  ranking:       {"prompt": ..., "completions": [str, ...], "ranks": [int, ...]}
                 (lower rank = better, ties allowed)
  prompt:        {"prompt": ..., "id": optional} or the bare prompt
Every demonstration and completion ends with EOS, so the SFT model learns to stop and the reward
model reads its score at the EOS (InstructGPT).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from transformers import PreTrainedTokenizerBase

from training.engine.lm import Prompt, format_prompt
from training.engine.losses import IGNORE_INDEX

T = TypeVar("T")


def prompt_of(record: Any) -> Prompt:
    return record["prompt"] if isinstance(record, dict) else record


def user_text(prompt: Prompt) -> str:
    """What the user asked: the prompt itself, or the last user message of a conversation
    (what a programmatic judge matches, without the chat template's markup)."""
    if isinstance(prompt, str):
        return prompt
    return next(m["content"] for m in reversed(prompt) if m["role"] == "user")


def completion_text(completion: str | list[dict[str, str]]) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in completion if m.get("role", "assistant") == "assistant")


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], max_length: int
) -> list[list[int]]:
    """Token ids of each formatted prompt, cut from the left (the end of a prompt matters most)."""
    texts = [format_prompt(tokenizer, p) for p in prompts]
    # A chat template writes its own special tokens; the plain fallback lets the tokenizer add BOS.
    encoded = tokenizer(texts, add_special_tokens=not tokenizer.chat_template)["input_ids"]
    return [ids[-max_length:] for ids in encoded]


def encode_responses(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each response followed by EOS."""
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [ids + [tokenizer.eos_token_id] for ids in encoded]


def _join(prompt_ids: list[int], response_ids: list[int], max_length: int) -> tuple[list[int], int]:
    """prompt + response within max_length: the prompt gives way first (down to half the budget),
    then the response is cut. Returns (ids, prompt length)."""
    if len(prompt_ids) + len(response_ids) > max_length:
        keep = max(max_length - len(response_ids), max_length // 2)
        prompt_ids = prompt_ids[-keep:]
    return (prompt_ids + response_ids)[:max_length], len(prompt_ids)


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    prompt_length: int  # tokens before the response: masked out of the SFT loss


def encode_demonstrations(
    tokenizer: PreTrainedTokenizerBase, records: Sequence[dict[str, Any]], max_length: int
) -> list[Example]:
    prompt_ids = encode_prompts(tokenizer, [r["prompt"] for r in records], max_length)
    response_ids = encode_responses(tokenizer, [completion_text(r["completion"]) for r in records])
    return [
        Example(*_join(p, r, max_length)) for p, r in zip(prompt_ids, response_ids, strict=True)
    ]


@dataclass(frozen=True)
class EncodedRanking:
    prompt: list[int]  # shared by all K completions
    completions: list[list[int]]  # completion + EOS, one per completion
    ranks: list[int]


def encode_rankings(
    tokenizer: PreTrainedTokenizerBase, records: Sequence[dict[str, Any]], max_length: int
) -> list[EncodedRanking]:
    """Each ranking's prompt is cut once (all its completions must share it): from the left, so
    the longest completion fits, down to half of max_length; then completions are cut to fit."""
    for record in records:
        if len(record["completions"]) != len(record["ranks"]):
            raise ValueError("a ranking needs exactly one rank per completion")
        if not 2 <= len(record["completions"]) <= 9:
            raise ValueError(
                f"a ranking has K = 2..9 completions, got {len(record['completions'])}"
            )
    prompt_ids = encode_prompts(tokenizer, [r["prompt"] for r in records], max_length)
    flat_texts = [completion_text(c) for r in records for c in r["completions"]]
    flat_ids = iter(encode_responses(tokenizer, flat_texts))
    rankings = []
    for record, prompt in zip(records, prompt_ids, strict=True):
        completions = [next(flat_ids) for _ in record["completions"]]
        longest = max(len(c) for c in completions)
        if len(prompt) + longest > max_length:
            prompt = prompt[-max(max_length - longest, max_length // 2) :]
        completions = [c[: max_length - len(prompt)] for c in completions]
        rankings.append(EncodedRanking(prompt, completions, [int(r) for r in record["ranks"]]))
    return rankings


def pad_right(sequences: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """(batch, longest) with `value` after each sequence."""
    width = max(len(s) for s in sequences)
    return torch.tensor([list(s) + [value] * (width - len(s)) for s in sequences], dtype=torch.long)


def pad_left(sequences: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """(batch, longest) with `value` before each sequence: generation appends on the right."""
    width = max(len(s) for s in sequences)
    return torch.tensor([[value] * (width - len(s)) + list(s) for s in sequences], dtype=torch.long)


def collate_sft(examples: Sequence[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; labels equal input_ids on response tokens and IGNORE_INDEX elsewhere."""
    input_ids = pad_right([e.input_ids for e in examples], pad_token_id)  # (batch, seq)
    attention_mask = pad_right([[1] * len(e.input_ids) for e in examples], 0)
    labels = pad_right(
        [[IGNORE_INDEX] * e.prompt_length + e.input_ids[e.prompt_length :] for e in examples],
        IGNORE_INDEX,
    )
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def collate_prompts(
    prompt_ids: Sequence[Sequence[int]], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Left-padded prompts for generation."""
    return {
        "input_ids": pad_left(prompt_ids, pad_token_id),  # (batch, prompt_len)
        "attention_mask": pad_left([[1] * len(p) for p in prompt_ids], 0),
    }


def collate_rankings(
    rankings: Sequence[EncodedRanking], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Prompts once per ranking (left-padded) and all completions of all rankings in one
    right-padded batch: one forward gives every pair's scores, and the prompt's keys and values are
    computed once for its K completions. Plus (groups, K_max) ranks and a mask of real slots."""
    completions = [ids for ranking in rankings for ids in ranking.completions]
    ranking_index = [g for g, ranking in enumerate(rankings) for _ in ranking.completions]
    k_max = max(len(r.ranks) for r in rankings)
    ranks = torch.tensor([r.ranks + [0] * (k_max - len(r.ranks)) for r in rankings])
    valid = torch.tensor([[i < len(r.ranks) for i in range(k_max)] for r in rankings])
    return {
        "prompt_ids": pad_left([r.prompt for r in rankings], pad_token_id),  # (groups, prompt)
        "prompt_mask": pad_left([[1] * len(r.prompt) for r in rankings], 0),
        "completion_ids": pad_right(completions, pad_token_id),  # (sum K, completion)
        "completion_mask": pad_right([[1] * len(ids) for ids in completions], 0),
        "ranking_index": torch.tensor(ranking_index),  # (sum K,) the ranking of each completion
        "ranks": ranks,  # (groups, K_max)
        "valid": valid,  # (groups, K_max)
    }


def fold_scores(flat_scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(sum K,) scores -> (groups, K_max), zeros in padded slots (`valid` is row-major)."""
    scores = flat_scores.new_zeros(valid.shape)
    return scores.masked_scatter(valid.to(flat_scores.device), flat_scores)


# --- data order ------------------------------------------------------------------------------


def _held_out_order(n_items: int, seed: int) -> list[int]:
    return torch.randperm(n_items, generator=torch.Generator().manual_seed(seed)).tolist()


def split_train_val(items: Sequence[T], val_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """A seeded split, so a resumed run holds out the same examples."""
    order = _held_out_order(len(items), seed)
    n_val = round(len(items) * val_fraction) if len(items) > 1 else 0
    return [items[i] for i in order[n_val:]], [items[i] for i in order[:n_val]]


def untied_pairs(ranks: Sequence[int]) -> int:
    """Completion pairs of one ranking that its labeler ordered (a tie says nothing)."""
    return sum(1 for a, b in itertools.combinations(ranks, 2) if a != b)


def split_rankings(
    rankings: Sequence[EncodedRanking],
    *,
    val_fraction: float,
    min_val_pairs: int,
    max_val_fraction: float,
    seed: int,
) -> tuple[list[EncodedRanking], list[EncodedRanking]]:
    """split_train_val's split, holding out more rankings when `val_fraction` of them gives
    fewer than `min_val_pairs` untied pairs: the next in the same seeded order, until the pairs
    are reached or `max_val_fraction` of the rankings is held out. A pair accuracy measured on
    too few pairs cannot tell a useful reward model from a coin (RewardConfig.val_min_pairs)."""
    order = _held_out_order(len(rankings), seed)
    n_val = round(len(rankings) * val_fraction) if len(rankings) > 1 else 0
    most = max(n_val, math.floor(len(rankings) * max_val_fraction)) if len(rankings) > 1 else 0
    pairs = sum(untied_pairs(rankings[i].ranks) for i in order[:n_val])
    while pairs < min_val_pairs and n_val < most:
        pairs += untied_pairs(rankings[order[n_val]].ranks)
        n_val += 1
    return [rankings[i] for i in order[n_val:]], [rankings[i] for i in order[:n_val]]


def steps_per_epoch(n_items: int, batch_size: int) -> int:
    return math.ceil(n_items / batch_size)


def batch_for_step(items: Sequence[T], step: int, batch_size: int, seed: int) -> list[T]:
    """Items of 0-based optimizer step `step`: a fresh seeded shuffle every epoch, computed from the
    step alone, so resuming needs no data-loader state."""
    per_epoch = steps_per_epoch(len(items), batch_size)
    epoch, index = divmod(step, per_epoch)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(items), generator=generator).tolist()
    return [items[i] for i in order[index * batch_size : (index + 1) * batch_size]]


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
