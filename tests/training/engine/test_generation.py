"""The sampling loop: draws follow the distribution, top-p keeps the right tokens, and EOS ends a
response (its decoders against a full forward: cpu_fast/test_gpt2.py)."""

from __future__ import annotations

import torch

from tests.training.engine.helpers import CPU
from tests.training.engine.toy_model import questions
from training.engine.data import collate_prompts, encode_prompts
from training.engine.generation import _draw, _top_p_filter, sample
from training.engine.lm import freeze, load_causal_lm, load_tokenizer


def test_draws_follow_the_distribution_and_never_pick_a_zero_probability_token():
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3]]).expand(40_000, 4)
    tokens = _draw(probs, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(tokens, minlength=4).float() / len(tokens)
    torch.testing.assert_close(frequencies, torch.tensor([0.1, 0.0, 0.6, 0.3]), atol=0.01, rtol=0)
    assert (tokens != 1).all()


def test_top_p_keeps_the_fewest_tokens_reaching_the_mass():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(_top_p_filter(logits, 0.75))
    assert kept.tolist() == [[True, True, False, False]]


def test_sampling_stops_at_eos_and_pads_after_it(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    model = freeze(load_causal_lm(toy_model_dir, tokenizer, CPU))
    eos = tokenizer.eos_token_id
    with torch.no_grad():  # make EOS likely so some rows finish early
        model.lm_head.weight[eos] += 0.3 * model.transformer.ln_f.weight.sign()
    prompts = collate_prompts(encode_prompts(tokenizer, questions(8), 64), tokenizer.pad_token_id)
    generation = sample(
        model,
        prompts["input_ids"],
        prompts["attention_mask"],
        max_new_tokens=20,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(0),
    )
    assert generation.finished.any()
    for tokens, mask, finished in zip(
        generation.tokens, generation.response_mask, generation.finished, strict=True
    ):
        length = int(mask.sum())
        if finished:
            assert tokens[length - 1] == eos
            assert (tokens[length:] == tokenizer.pad_token_id).all()
        else:
            assert length == generation.tokens.shape[1]
            assert (tokens != eos).all()
