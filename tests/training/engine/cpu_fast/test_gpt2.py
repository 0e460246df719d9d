"""The hand-written GPT-2 paths (cpu_fast/gpt2.py) against the plain Hugging Face forwards, with
the switch on and off: values within rtol 1e-5 (atol 1e-5), gradients within rtol 1e-4 or 1e-6 of
the largest entry, on the toy model."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from tests.training.engine.helpers import (
    CPU,
    assert_close_gradients,
    gradients,
    padded_response_logprobs,
    update_batch,
)
from tests.training.engine.toy_model import questions
from training.engine import cpu_fast, ppo
from training.engine.config import PPOConfig
from training.engine.cpu_fast import gpt2
from training.engine.data import (
    collate_prompts,
    collate_rankings,
    encode_prompts,
    encode_rankings,
    pad_left,
    pad_right,
)
from training.engine.generation import _HFDecoder, make_decoder
from training.engine.lm import (
    freeze,
    load_causal_lm,
    load_tokenizer,
    logits_at,
    position_ids_from_mask,
    response_hidden_states,
    response_logits,
    trunk_hidden_states,
)
from training.engine.losses import ppo_policy_loss, ppo_value_loss
from training.engine.precision import autocast
from training.engine.reward_model import RewardModel

VALUES = {"rtol": 1e-5, "atol": 1e-5}


def both_side_padded(tokenizer):
    """Left-padded prompts followed by right-padded responses, as PPO scores them."""
    prompts = [tokenizer(t)["input_ids"] for t in ("Hi", "What does the cat do?", "Yo")]
    responses = [tokenizer(t)["input_ids"] for t in ("the moon.", "tea", "a dog eats some bread.")]
    prompt_ids = pad_left(prompts, tokenizer.pad_token_id)
    prompt_mask = pad_left([[1] * len(p) for p in prompts], 0)
    response_ids = pad_right(responses, tokenizer.pad_token_id)
    response_mask = pad_right([[1] * len(r) for r in responses], 0)
    return torch.cat([prompt_ids, response_ids], 1), torch.cat([prompt_mask, response_mask], 1)


def prompts_and_responses(tokenizer):
    """Left-padded prompts, right-padded responses of different lengths: (ids, mask, P, mask of
    the response tokens)."""
    prompts = [tokenizer(t)["input_ids"] for t in ("Hi", "What does the cat do?", "Yo", "Why?")]
    responses = [
        tokenizer(t)["input_ids"]
        for t in ("the moon.", "tea", "a dog eats some bread.", "because the king said so.")
    ]
    prompt_ids = pad_left(prompts, tokenizer.pad_token_id)
    prompt_mask = pad_left([[1] * len(p) for p in prompts], 0)
    response_ids = pad_right(responses, tokenizer.pad_token_id)
    response_mask = pad_right([[1] * len(r) for r in responses], 0)
    ids = torch.cat([prompt_ids, response_ids], 1)
    return ids, torch.cat([prompt_mask, response_mask], 1), prompt_ids.shape[1], response_mask


def fast_and_plain(fast_paths, compute):
    """compute(), with the fast paths on and then off: [fast result, plain result]."""
    results = []
    for on in (True, False):
        fast_paths(on)
        results.append(compute())
    return results


def test_reward_scores_and_their_gradients_are_the_plain_ones(toy_model_dir, fast_paths):
    """`RewardModel.forward`: real tokens only, packed, read at each row's last real token."""
    tokenizer = load_tokenizer(toy_model_dir)
    ids, mask = both_side_padded(tokenizer)

    def scores():
        model = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).eval()
        torch.nn.init.normal_(model.head.weight, generator=torch.Generator().manual_seed(0))
        scores = model(ids, mask)
        (scores @ torch.tensor([1.0, -2.0, 0.5])).backward()
        return cpu_fast.gpt2_applies(model.trunk), scores.detach(), gradients(model)

    (took_fast, fast, fast_grads), (took_fast_too, plain, plain_grads) = fast_and_plain(
        fast_paths, scores
    )
    assert took_fast and not took_fast_too
    torch.testing.assert_close(fast, plain, **VALUES)
    assert_close_gradients(fast_grads, plain_grads)


def test_shared_prompt_scores_and_their_gradients_are_the_plain_ones(toy_model_dir, fast_paths):
    """`RewardModel.score_completions`: each prompt's keys and values computed once for its
    completions, the last block at the read position only."""
    tokenizer = load_tokenizer(toy_model_dir)
    records = [
        {
            "prompt": "What does the cat do?",
            "completions": ["tea.", "a dog eats."],
            "ranks": [1, 2],
        },
        {"prompt": "Hi", "completions": ["the moon.", "a", "the king hides."], "ranks": [3, 2, 1]},
    ]
    batch = collate_rankings(encode_rankings(tokenizer, records, 64), tokenizer.pad_token_id)

    def scores():
        model = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).eval()
        torch.nn.init.normal_(model.head.weight, generator=torch.Generator().manual_seed(0))
        scores = model.score_completions(
            batch["prompt_ids"],
            batch["prompt_mask"],
            batch["completion_ids"],
            batch["completion_mask"],
            batch["ranking_index"],
        )
        (scores @ torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0])).backward()
        return scores.detach(), gradients(model)

    (fast, fast_grads), (plain, plain_grads) = fast_and_plain(fast_paths, scores)
    torch.testing.assert_close(fast, plain, **VALUES)
    assert_close_gradients(fast_grads, plain_grads, scaled_atol=1e-5)


def test_hidden_states_read_from_a_start_position_are_the_plain_ones(toy_model_dir, fast_paths):
    """`trunk_hidden_states(start=...)` (SFT, reward training): the last block only from start."""
    tokenizer = load_tokenizer(toy_model_dir)
    ids, mask = both_side_padded(tokenizer)
    start = 4  # where the responses begin
    real = mask[:, start:].bool().unsqueeze(-1)
    direction = torch.randn(64, generator=torch.Generator().manual_seed(1))

    def hidden_states():
        trunk = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).trunk.eval()
        hidden = trunk_hidden_states(trunk, ids, mask, start)
        hidden = torch.where(real, hidden, 0.0)  # pad positions are never read
        (hidden @ direction).sum().backward()
        return hidden.detach(), gradients(trunk)

    (fast, fast_grads), (plain, plain_grads) = fast_and_plain(fast_paths, hidden_states)
    torch.testing.assert_close(fast, plain, **VALUES)
    assert_close_gradients(fast_grads, plain_grads)


def test_packed_response_hidden_states_are_the_plain_ones(toy_model_dir, fast_paths):
    """`response_hidden_states` (PPO's log-probs and values): real tokens only, packed, against
    the plain forward read at the positions that predict each real response token."""
    tokenizer = load_tokenizer(toy_model_dir)
    ids, mask, prompt_length, response_mask = prompts_and_responses(tokenizer)
    assert mask[:, :prompt_length].min() == 0 and response_mask.min() == 0  # padded both sides
    direction = torch.randn(64, generator=torch.Generator().manual_seed(2))

    def hidden_states():
        trunk = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).trunk.eval()
        hidden = response_hidden_states(trunk, ids, mask, prompt_length, response_mask)
        (torch.tanh(hidden) @ direction).sum().backward()
        return hidden.detach(), gradients(trunk)

    (fast, fast_grads), (plain, plain_grads) = fast_and_plain(fast_paths, hidden_states)
    assert fast.shape == (response_mask.sum(), 64)
    torch.testing.assert_close(fast, plain, **VALUES)
    assert_close_gradients(fast_grads, plain_grads)


def test_packed_logits_and_values_are_the_plain_padded_ones(toy_model_dir, fast_paths):
    """The causal LM's response logits and the value model's response values (packed) equal the
    plain padded `logits_at` and `values` at real response tokens, also when the batch has
    columns past its longest response (as a rollout has)."""
    tokenizer = load_tokenizer(toy_model_dir)
    ids, mask, prompt_length, response_mask = prompts_and_responses(tokenizer)
    real, width = response_mask.bool(), response_mask.shape[1]
    start, end = prompt_length - 1, prompt_length - 1 + width
    model = load_causal_lm(toy_model_dir, tokenizer, CPU).eval()
    value_model = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).eval()
    longer = torch.cat([ids, torch.full_like(ids[:, :2], tokenizer.pad_token_id)], 1)
    longer_mask = torch.cat([mask, torch.zeros_like(mask[:, :2])], 1)
    with torch.no_grad():
        fast_paths(True)
        logits = response_logits(model, ids, mask, prompt_length, response_mask)
        values = value_model.response_values(ids, mask, prompt_length, response_mask)
        logits_longer = response_logits(model, longer, longer_mask, prompt_length, response_mask)
        fast_paths(False)
        plain_logits = logits_at(model, ids, mask, start, end)[real]
        plain_values = value_model.values(ids, mask, start, end)[real]
    torch.testing.assert_close(logits, plain_logits, **VALUES)
    torch.testing.assert_close(values, plain_values, **VALUES)
    torch.testing.assert_close(logits_longer, plain_logits, **VALUES)


def test_a_ppo_part_on_real_tokens_gives_the_padded_losses_and_gradients(sft_model_dir, fast_paths):
    """`ppo.backward_part` on the fast path (real tokens only) against the padded computation
    it replaced, on the plain path: log-probs and values over every column, then the same
    losses (within rel 1e-5)."""
    tokenizer = load_tokenizer(sft_model_dir)
    policy = load_causal_lm(sft_model_dir, tokenizer, CPU)
    value_model = RewardModel.from_causal_lm(sft_model_dir, tokenizer, CPU)
    batch = update_batch(tokenizer)
    assert batch.attention_mask[:, : batch.prompt_length].min() == 0  # prompts are left-padded
    cfg = PPOConfig(policy_path="p", output_dir="o", temperature=0.7)

    fast_paths(True)
    fast_stats = ppo.backward_part(
        policy, value_model, batch, torch.arange(8), 1.0, cfg, partial(autocast, CPU, torch.float32)
    )
    fast_grads = gradients(policy, value_model)
    policy.zero_grad(set_to_none=True)
    value_model.zero_grad(set_to_none=True)
    fast_paths(False)
    end = batch.query_responses.shape[1] - 1
    logprobs, _ = padded_response_logprobs(
        policy,
        batch.query_responses,
        batch.attention_mask,
        batch.responses,
        batch.prompt_length,
        cfg.temperature,
    )
    values = value_model.values(
        batch.query_responses, batch.attention_mask, batch.prompt_length - 1, end
    )
    response_mask = batch.response_mask
    policy_loss, policy_stats = ppo_policy_loss(
        logprobs, batch.old_logprobs, batch.advantages, response_mask, cfg.cliprange
    )
    value_loss, _ = ppo_value_loss(
        values, batch.old_values, batch.returns, response_mask, cfg.cliprange_value
    )
    (policy_loss + cfg.vf_coef * value_loss).backward()
    assert fast_stats["loss/policy"] == pytest.approx(policy_loss.item(), rel=1e-5, abs=1e-6)
    assert fast_stats["loss/value"] == pytest.approx(value_loss.item(), rel=1e-5)
    assert fast_stats["policy/ratio"] == pytest.approx(policy_stats["ratio"].item(), rel=1e-5)
    assert_close_gradients(fast_grads, gradients(policy, value_model))


def test_both_decoders_give_the_logits_of_a_full_forward(toy_model_dir, fast_paths):
    """The sampler's decoder: GPT-2's modules with a preallocated cache (fast) or the HF forward
    with a DynamicCache (plain), each step against one full forward."""
    tokenizer = load_tokenizer(toy_model_dir)
    model = freeze(load_causal_lm(toy_model_dir, tokenizer, CPU))
    prompts = collate_prompts(encode_prompts(tokenizer, questions(3), 64), tokenizer.pad_token_id)
    assert prompts["attention_mask"].min() == 0  # the prompts really are left-padded
    continuation = torch.randint(2, 300, (3, 4), generator=torch.Generator().manual_seed(0))
    ids = torch.cat([prompts["input_ids"], continuation], 1)
    mask = torch.cat([prompts["attention_mask"], torch.ones_like(continuation)], 1)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))
    prompt_length = prompts["input_ids"].shape[1]
    expected = full.logits[:, prompt_length - 1 : -1]  # logits predicting each continuation token

    for on, decoder_class in ((True, gpt2.Decoder), (False, _HFDecoder)):
        fast_paths(on)
        decoder = make_decoder(model, 3, ids.shape[1])
        assert type(decoder) is decoder_class
        with torch.no_grad():
            steps = [decoder.prefill(prompts["input_ids"], prompts["attention_mask"])]
            steps += [decoder.step(continuation[:, t]) for t in range(3)]
        torch.testing.assert_close(torch.stack(steps, 1), expected, rtol=1e-4, atol=1e-4)


def test_other_architectures_take_the_plain_path(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    model = load_causal_lm(toy_model_dir, tokenizer, CPU)
    assert cpu_fast.gpt2_applies(model)
    model.set_attn_implementation("eager")  # not a path gpt2.py drives
    assert not gpt2.supports(model) and not cpu_fast.gpt2_applies(model)


def test_the_fast_tanh_gelu_is_torchs_values_and_gradients():
    """Same values and gradients as torch's tanh GELU up to float32 rounding; both measured against
    the float64 function (for x << 0, torch's 1 + tanh(z) cancels, so it is the less exact one)."""
    grid = torch.linspace(-12, 12, 20001, dtype=torch.float64)
    direction = torch.randn(grid.shape, generator=torch.Generator().manual_seed(3))
    results = []
    for gelu, dtype in (
        (gpt2._GeluTanh.apply, torch.float32),
        (partial(torch.nn.functional.gelu, approximate="tanh"), torch.float32),
        (partial(torch.nn.functional.gelu, approximate="tanh"), torch.float64),
    ):
        x = grid.to(dtype).requires_grad_()
        y = gelu(x)
        (y @ direction.to(dtype)).backward()
        results.append((y.detach().double(), x.grad.double()))
    (fast, fast_grad), (torch_gelu, torch_grad), (exact, exact_grad) = results
    torch.testing.assert_close(fast, torch_gelu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_grad, torch_grad, rtol=1e-5, atol=1e-5)
    assert (fast - exact).abs().max() <= 2 * (torch_gelu - exact).abs().max()
    assert (fast_grad - exact_grad).abs().max() <= 2 * (torch_grad - exact_grad).abs().max()


def test_contiguous_grad_is_the_identity_with_a_contiguous_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    y = gpt2.contiguous_grad(x)
    torch.testing.assert_close(y, x, rtol=0, atol=0)
    grads = []
    x.register_hook(grads.append)
    upstream = torch.randn(4, 3).T  # a strided gradient
    y.backward(upstream)
    assert grads[0].is_contiguous()
    torch.testing.assert_close(x.grad, upstream, rtol=0, atol=0)
