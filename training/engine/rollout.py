"""Rollouts, shared by every online algorithm (PPO, critic-free RL); `decode` also serves sampling
for labelers.

`make_rollout` samples a continuation for each prompt given with a `Sampler` (sampler.py; a
prompt repeated K times gets K continuations) and adds what an online algorithm learns from: one
score per response (a reward model or a programmatic reward), and the policy's log-probs, the
reference's log-probs and the value model's values (0 without a value model: the critic-free
methods) at every real response token, computed on the real tokens only and laid out (batch, T)
with 0 after EOS, where every use masks them out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.engine import distributed
from training.engine.cpu_fast.first_pass import FirstPass
from training.engine.cpu_fast.threads import SideBySide, in_order
from training.engine.lm import response_logits
from training.engine.losses import at_temperature, entropy_from_logits, logprobs_from_logits
from training.engine.memory import adapters_disabled
from training.engine.precision import Amp
from training.engine.reward_model import RewardModel
from training.engine.sampler import Sampler

# (prompts as the user wrote them, decoded responses without EOS) -> one score per response
RewardFn = Callable[[list[str], list[str]], list[float]]
# (query_responses, attention_mask, responses) -> one score per response  # (batch,)
Scorer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Rollout:
    """One batch of episodes; T response tokens, predicted at positions prompt_length-1 .. end-1."""

    query_responses: torch.Tensor  # (batch, prompt_length + T) left-padded prompt, then response
    attention_mask: torch.Tensor  # (batch, prompt_length + T) 0 on prompt pad and after EOS
    responses: torch.Tensor  # (batch, T)
    response_mask: torch.Tensor  # (batch, T) 1 up to and including EOS
    finished: torch.Tensor  # (batch,) response ended with EOS
    prompt_length: int
    logprobs: torch.Tensor  # (batch, T) log pi_old(token) at the sampling temperature
    ref_logprobs: torch.Tensor  # (batch, T)
    values: torch.Tensor  # (batch, T) V(state before each response token)
    scores: torch.Tensor  # (batch,) reward-model reward (offset included) / reward_fn score
    entropy: torch.Tensor  # (batch, T)
    first_pass: FirstPass | None = None  # with keep_graph: logprobs and values, differentiable


def decode(tokenizer: PreTrainedTokenizerBase, responses: torch.Tensor) -> list[str]:
    """The text of each response, without EOS or padding."""
    return tokenizer.batch_decode(responses, skip_special_tokens=True)


def reward_model_scorer(reward_model: RewardModel) -> Scorer:
    """Rewards read by a reward model at each sequence's last real token (its EOS), its score
    offset included."""
    return lambda query_responses, attention_mask, responses: reward_model.rewards(
        query_responses, attention_mask
    )


def function_scorer(
    reward_fn: RewardFn, tokenizer: PreTrainedTokenizerBase, prompt_texts: list[str]
) -> Scorer:
    """Scores of a programmatic reward, which reads the prompts as the user wrote them and the
    decoded responses."""

    def score(_: torch.Tensor, __: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        values = reward_fn(prompt_texts, decode(tokenizer, responses))
        return torch.tensor(values, dtype=torch.float32, device=responses.device)

    return score


def unpack(packed: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Values for the set entries of `mask` (row-major, as `response_logits` returns them) laid out
    like the mask, 0 elsewhere.  # mask.shape"""
    return packed.new_zeros(mask.shape).masked_scatter(mask.bool(), packed)


def response_logprobs(
    model: PreTrainedModel,
    query_responses: torch.Tensor,
    attention_mask: torch.Tensor,
    responses: torch.Tensor,
    response_mask: torch.Tensor,
    prompt_length: int,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the real response tokens (where response_mask is set) under the distribution
    they were sampled from, and the logits / temperature they come from.
    # (response_mask.sum(),), (response_mask.sum(), vocab)"""
    mask = response_mask.bool()
    logits = at_temperature(
        response_logits(model, query_responses, attention_mask, prompt_length, mask), temperature
    )
    return logprobs_from_logits(logits, responses[mask]), logits


def make_rollout(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    value_model: RewardModel | None,
    score: Scorer,
    prompt_ids: Sequence[Sequence[int]],
    *,
    sampler: Sampler,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    amp: Amp,
    keep_graph: bool = False,
    side: SideBySide | None = None,
    part: tuple[int, int] | None = None,
) -> tuple[Rollout, dict[str, float]]:
    """Sample a response per prompt (with the policy's weights: `sampler` samples from `policy`),
    then one forward each of policy, reference, value model (unless None) and reward. keep_graph: run the
    policy and value forwards with autograd and keep them (`first_pass`). side: the trained
    models' forwards beside the frozen ones', unless the reference is the policy with its LoRA
    adapters off. part (index, stride): only those prompts' episodes, each sampled as in the whole
    batch (one process's share; `gather` puts the batch together). Returns the rollout and its
    timings."""
    started = time.perf_counter()
    with side.alone() if side else nullcontext():
        prompts, generation = sampler.generate(
            prompt_ids, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
            part=part,
        )  # fmt: skip
    generated = time.perf_counter()
    prompt_length = prompts["input_ids"].shape[1]
    # Plain tensors (not inference-mode ones), so that a forward with autograd can save them.
    responses, response_mask = generation.tokens.clone(), generation.response_mask.clone()
    query_responses = torch.cat([prompts["input_ids"], responses], dim=1)  # (batch, P + T)
    attention_mask = torch.cat([prompts["attention_mask"], response_mask], dim=1)

    logprobs_of = partial(
        response_logprobs,
        query_responses=query_responses,
        attention_mask=attention_mask,
        responses=responses,
        response_mask=response_mask,
        prompt_length=prompt_length,
        temperature=temperature,
    )

    def trained() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.set_grad_enabled(keep_graph), amp():
            logprobs, logits = logprobs_of(policy)
            if value_model is None:  # critic-free: no value to estimate
                return logprobs, logits, torch.zeros_like(logprobs.detach())
            values = value_model.response_values(
                query_responses, attention_mask, prompt_length, response_mask
            )
        return logprobs, logits, values

    def frozen() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode(), amp():
            with adapters_disabled(reference):  # the base model, when it is the policy's
                ref_logprobs, _ = logprobs_of(reference)
            return ref_logprobs, score(query_responses, attention_mask, responses)

    # Switching the policy's adapters off cannot happen beside the policy's own forward.
    both = in_order if reference is policy else (side or in_order)
    (logprobs, logits, values), (ref_logprobs, scores) = both(trained, frozen)
    # (response_mask.sum(),) -> (batch, T)
    first_pass = FirstPass(unpack(logprobs, response_mask), unpack(values.float(), response_mask))
    with torch.inference_mode():
        entropy = entropy_from_logits(logits.detach())
    rollout = Rollout(
        query_responses=query_responses,
        attention_mask=attention_mask,
        responses=responses,
        response_mask=response_mask,
        finished=generation.finished.clone(),
        prompt_length=prompt_length,
        logprobs=first_pass.logprobs.detach(),
        ref_logprobs=unpack(ref_logprobs, response_mask),
        values=first_pass.values.detach(),
        scores=scores.float(),
        entropy=unpack(entropy, response_mask),
        first_pass=first_pass if keep_graph else None,
    )
    timings = {
        "time/generation": generated - started,
        "time/scoring": time.perf_counter() - generated,
    }
    return rollout, timings


def gather(rollout: Rollout, world: distributed.World, pad_token_id: int) -> Rollout:
    """The whole batch's rollout on every rank, from each rank's share (rows rank, rank + size,
    ... of the batch, prompts padded alike): responses padded after their end to the longest
    on any rank, as one process sampling the whole batch pads them."""
    device = rollout.responses.device
    width = distributed.all_max(rollout.responses.shape[1], device)

    def whole(tensor: torch.Tensor, pad: float = 0) -> torch.Tensor:
        if tensor.dim() == 2:  # (rows, [prompt +] T): pad T on the right
            tensor = F.pad(tensor, (0, width - rollout.responses.shape[1]), value=pad)
        return distributed.gather_rows(tensor, world)

    return Rollout(
        query_responses=whole(rollout.query_responses, pad_token_id),
        attention_mask=whole(rollout.attention_mask),
        responses=whole(rollout.responses, pad_token_id),
        response_mask=whole(rollout.response_mask),
        finished=whole(rollout.finished),
        prompt_length=rollout.prompt_length,
        logprobs=whole(rollout.logprobs),
        ref_logprobs=whole(rollout.ref_logprobs),
        values=whole(rollout.values),
        scores=whole(rollout.scores),
        entropy=whole(rollout.entropy),
    )


def held_out_split(n_prompts: int, wanted: int, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) prompt indices: up to `wanted` prompts, at most a quarter of them, held
    out by a seeded draw (the same on resume), the rest in their order. wanted = 0: none."""
    n_held = min(wanted, n_prompts // 4)
    if n_held <= 0:
        return list(range(n_prompts)), []
    generator = torch.Generator().manual_seed(seed * 1_000_003 + 17)
    held = sorted(torch.randperm(n_prompts, generator=generator)[:n_held].tolist())
    chosen = set(held)
    return [i for i in range(n_prompts) if i not in chosen], held


@torch.inference_mode()
def held_out_score(
    sampler: Sampler,
    score_for: Callable[[list[str]], Scorer],
    prompt_ids: Sequence[Sequence[int]],
    prompt_texts: list[str],
    *,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    batch_size: int,
) -> float:
    """The mean score of one sampled response per held-out prompt, drawn from a fixed `seed`, so
    the scores before and after training differ by the policy only. A round's gate refuses a
    policy whose held-out score fell (issue 14): a rising training score alone can be a policy
    that fits its training prompts."""
    scores = []
    for start in range(0, len(prompt_ids), batch_size):
        ids = prompt_ids[start : start + batch_size]
        prompts, generation = sampler.generate(
            ids, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + start
        )
        query_responses = torch.cat([prompts["input_ids"], generation.tokens], dim=1)
        attention_mask = torch.cat([prompts["attention_mask"], generation.response_mask], dim=1)
        score = score_for(prompt_texts[start : start + batch_size])
        scores.append(score(query_responses, attention_mask, generation.tokens).float())
    return float(torch.cat(scores).mean())


@dataclass
class HeldOut:
    """An online loop's held-out prompts: the indices it trains on, and the held-out score before
    the first step (`before`, logged with step 1) and after the last (`evaluate()`)."""

    train: list[int]
    evaluate: Callable[[], float] | None  # None: nothing held out
    before: dict[str, float]


def hold_out(
    sampler: Sampler,
    score_for: Callable[[list[str]], Scorer],
    prompt_ids: Sequence[Sequence[int]],
    prompt_texts: list[str],
    *,
    wanted: int,
    resumed: bool,
    seed: int,
    max_new_tokens: int,
    temperature: float,
    batch_size: int,
) -> HeldOut:
    """Hold out up to `wanted` prompts (held_out_split) and score them now unless `resumed` (the
    score before training is then in the run's history already)."""
    train, held = held_out_split(len(prompt_ids), wanted, seed)
    if not held:
        return HeldOut(train, None, {"eval/held_out_prompts": 0.0} if wanted else {})
    evaluate = partial(
        held_out_score, sampler, score_for, [prompt_ids[i] for i in held],
        [prompt_texts[i] for i in held], max_new_tokens=max_new_tokens, temperature=temperature,
        seed=seed, batch_size=batch_size,
    )  # fmt: skip
    before = {"eval/held_out_prompts": float(len(held))}
    if not resumed:
        before["eval/score_start"] = evaluate()
    return HeldOut(train, evaluate, before)
