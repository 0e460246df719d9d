"""The GPT-2 scoring fast path agrees with the Hugging Face forward, values and gradients."""

from __future__ import annotations

from functools import partial

import torch

from tests.training.engine.helpers import CPU
from training.engine.cpu_fast import gpt2
from training.engine.data import collate_rankings, encode_rankings, pad_left, pad_right
from training.engine.lm import (
    load_causal_lm,
    load_tokenizer,
    logits_at,
    position_ids_from_mask,
    response_hidden_states,
    response_logits,
)
from training.engine.reward_model import RewardModel, last_real_index


def both_side_padded(tokenizer):
    """Left-padded prompts followed by right-padded responses, as PPO scores them."""
    prompts = [tokenizer(t)["input_ids"] for t in ("Hi", "What does the cat do?", "Yo")]
    responses = [tokenizer(t)["input_ids"] for t in ("the moon.", "tea", "a dog eats some bread.")]
    prompt_ids = pad_left(prompts, tokenizer.pad_token_id)
    prompt_mask = pad_left([[1] * len(p) for p in prompts], 0)
    response_ids = pad_right(responses, tokenizer.pad_token_id)
    response_mask = pad_right([[1] * len(r) for r in responses], 0)
    return torch.cat([prompt_ids, response_ids], 1), torch.cat([prompt_mask, response_mask], 1)


def hf_last_hidden(trunk, ids, mask):
    hidden = trunk(
        input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)
    ).last_hidden_state
    return hidden[torch.arange(ids.shape[0]), last_real_index(mask)]


def fast_last_hidden(trunk, ids, mask):
    _, hidden = gpt2.run_trunk(
        trunk, ids, mask.bool(), position_ids_from_mask(mask), read=last_real_index(mask)
    )
    return hidden


def test_the_fast_last_hidden_state_is_the_hf_one_under_padding_on_both_sides(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    trunk = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).trunk.eval()
    ids, mask = both_side_padded(tokenizer)
    assert gpt2.supports(trunk)
    with torch.no_grad():
        torch.testing.assert_close(
            fast_last_hidden(trunk, ids, mask),
            hf_last_hidden(trunk, ids, mask),
            rtol=1e-5,
            atol=1e-5,
        )


def test_the_fast_path_gives_the_hf_gradients(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    ids, mask = both_side_padded(tokenizer)
    direction = torch.randn(64, generator=torch.Generator().manual_seed(0))
    gradients = []
    for last_hidden in (fast_last_hidden, hf_last_hidden):
        trunk = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).trunk.eval()
        (last_hidden(trunk, ids, mask) @ direction).sum().backward()
        gradients.append({name: p.grad for name, p in trunk.named_parameters()})
    fast, hf = gradients
    assert fast.keys() == hf.keys()
    for name in fast:
        scale = hf[name].abs().max().item()  # float error is relative to the gradient's size
        torch.testing.assert_close(fast[name], hf[name], rtol=1e-4, atol=1e-6 * scale, msg=name)


def test_other_architectures_take_the_hf_path_and_score_the_same(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    fast = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).eval()
    generic = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).eval()
    generic.head.load_state_dict(fast.head.state_dict())
    generic.trunk.set_attn_implementation("eager")  # not a path gpt2.py drives
    assert gpt2.supports(fast.trunk) and not gpt2.supports(generic.trunk)

    ids, mask = both_side_padded(tokenizer)
    records = [{"prompt": "Hi", "completions": ["tea.", "the moon and a dog."], "ranks": [1, 2]}]
    batch = collate_rankings(encode_rankings(tokenizer, records, 64), tokenizer.pad_token_id)
    shared = (
        batch["prompt_ids"],
        batch["prompt_mask"],
        batch["completion_ids"],
        batch["completion_mask"],
        batch["ranking_index"],
    )
    with torch.no_grad():
        torch.testing.assert_close(fast(ids, mask), generic(ids, mask), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            fast.score_completions(*shared),
            generic.score_completions(*shared),
            rtol=1e-5,
            atol=1e-5,
        )


def test_hidden_states_read_from_a_start_position_match_hf_at_real_tokens(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    ids, mask = both_side_padded(tokenizer)
    start = 4  # where the responses begin
    real = mask[:, start:].bool().unsqueeze(-1)
    direction = torch.randn(64, generator=torch.Generator().manual_seed(1))
    results = []
    for fast_path in (True, False):
        trunk = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).trunk.eval()
        if fast_path:
            _, hidden = gpt2.run_trunk(
                trunk, ids, mask.bool(), position_ids_from_mask(mask), read=start
            )
        else:
            positions = position_ids_from_mask(mask)
            hidden = trunk(input_ids=ids, attention_mask=mask, position_ids=positions)
            hidden = hidden.last_hidden_state[:, start:]
        hidden = torch.where(real, hidden, 0.0)  # pad positions are never read
        (hidden @ direction).sum().backward()
        results.append((hidden.detach(), {n: p.grad for n, p in trunk.named_parameters()}))
    (fast_hidden, fast_grads), (hf_hidden, hf_grads) = results
    torch.testing.assert_close(fast_hidden, hf_hidden, rtol=1e-5, atol=1e-5)
    for name in fast_grads:
        scale = hf_grads[name].abs().max().item()
        torch.testing.assert_close(
            fast_grads[name], hf_grads[name], rtol=1e-4, atol=1e-6 * scale, msg=name
        )


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


def test_packed_hidden_states_are_the_hf_ones_at_the_response_positions(toy_model_dir):
    """`response_hidden_states` (GPT-2: real tokens only, packed) against the HF forward read at
    the positions that predict each real response token: values and gradients."""
    tokenizer = load_tokenizer(toy_model_dir)
    ids, mask, prompt_length, response_mask = prompts_and_responses(tokenizer)
    assert mask[:, :prompt_length].min() == 0 and response_mask.min() == 0  # padded both sides
    width = response_mask.shape[1]
    direction = torch.randn(64, generator=torch.Generator().manual_seed(2))
    results = []
    for fast_path in (True, False):
        trunk = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).trunk.eval()
        if fast_path:
            assert gpt2.supports(trunk)
            hidden = response_hidden_states(trunk, ids, mask, prompt_length, response_mask)
        else:
            positions = position_ids_from_mask(mask)
            hidden = trunk(input_ids=ids, attention_mask=mask, position_ids=positions)
            hidden = hidden.last_hidden_state[:, prompt_length - 1 : prompt_length - 1 + width]
            hidden = hidden[response_mask.bool()]
        (torch.tanh(hidden) @ direction).sum().backward()
        results.append((hidden.detach(), {n: p.grad for n, p in trunk.named_parameters()}))
    (fast_hidden, fast_grads), (hf_hidden, hf_grads) = results
    assert fast_hidden.shape == (response_mask.sum(), 64)
    torch.testing.assert_close(fast_hidden, hf_hidden, rtol=1e-5, atol=1e-5)
    assert fast_grads.keys() == hf_grads.keys()
    for name in fast_grads:
        scale = hf_grads[name].abs().max().item()
        torch.testing.assert_close(
            fast_grads[name], hf_grads[name], rtol=1e-4, atol=1e-6 * scale, msg=name
        )


def test_packed_logits_and_values_agree_with_the_padded_paths(toy_model_dir):
    """The causal LM's response logits (GPT-2 packed, and an HF-only architecture) and the value
    model's response values equal the padded `logits_at` and `values` at real response tokens."""
    tokenizer = load_tokenizer(toy_model_dir)
    ids, mask, prompt_length, response_mask = prompts_and_responses(tokenizer)
    real, width = response_mask.bool(), response_mask.shape[1]
    start, end = prompt_length - 1, prompt_length - 1 + width
    model = load_causal_lm(toy_model_dir, tokenizer, CPU).eval()
    generic = load_causal_lm(toy_model_dir, tokenizer, CPU).eval()
    generic.set_attn_implementation("eager")
    value_model = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).eval()
    assert gpt2.supports(model) and not gpt2.supports(generic)
    with torch.no_grad():
        expected = logits_at(model, ids, mask, start, end)[real]
        for lm in (model, generic):
            logits = response_logits(lm, ids, mask, prompt_length, response_mask)
            torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            value_model.response_values(ids, mask, prompt_length, response_mask),
            value_model.values(ids, mask, start, end)[real],
            rtol=1e-5,
            atol=1e-5,
        )
        # Columns past the longest response (as a rollout has) change nothing.
        longer = torch.cat([ids, torch.full_like(ids[:, :2], tokenizer.pad_token_id)], 1)
        longer_mask = torch.cat([mask, torch.zeros_like(mask[:, :2])], 1)
        torch.testing.assert_close(
            response_logits(model, longer, longer_mask, prompt_length, response_mask),
            expected,
            rtol=1e-5,
            atol=1e-5,
        )


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
