"""The sampling loop: draws follow the distribution, top-p keeps the right tokens, and EOS ends a
response; its decoders give a full forward's logits and one another's tokens (GPT-2's hand-written
decoder against the plain one: cpu_fast/test_gpt2.py)."""

from __future__ import annotations

import warnings
from functools import partial

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)

from tests.training.engine.helpers import CPU
from tests.training.engine.toy_model import questions
from training.engine import cpu_fast
from training.engine.data import collate_prompts, encode_prompts
from training.engine.generation import (
    Generation,
    _draw,
    _HFDecoder,
    _StaticDecoder,
    _top_p_filter,
    make_decoder,
    sample,
)
from training.engine.lm import freeze, load_causal_lm, load_tokenizer, position_ids_from_mask
from training.engine.reward_model import RewardModel


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


# --- the decoders: DynamicCache, StaticCache, compiled step -------------------------------------

VOCAB = 300
EOS, PAD = 1, 2


def tiny_lm(architecture: str) -> PreTrainedModel:
    """A random 2-layer causal LM (Llama with grouped-query attention: 4 heads, 2 KV heads)."""
    torch.manual_seed(0)
    ids = {"vocab_size": VOCAB, "bos_token_id": 0, "eos_token_id": EOS, "pad_token_id": PAD}
    if architecture == "gpt2":
        config = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, **ids)
        return freeze(GPT2LMHeadModel(config))
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        **ids,
    )
    return freeze(LlamaForCausalLM(config))


def left_padded_prompts(lengths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, VOCAB, (n,), generator=generator).tolist() for n in lengths]
    return collate_prompts(prompts, PAD)


ARCHITECTURES = pytest.mark.parametrize("architecture", ["gpt2", "llama"])


@ARCHITECTURES
def test_both_hf_decoders_give_the_logits_of_a_full_forward(architecture):
    model = tiny_lm(architecture)
    prompts = left_padded_prompts([5, 9, 2])
    continuation = torch.randint(3, VOCAB, (3, 4), generator=torch.Generator().manual_seed(1))
    ids = torch.cat([prompts["input_ids"], continuation], 1)
    mask = torch.cat([prompts["attention_mask"], torch.ones_like(continuation)], 1)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))
    prompt_length = prompts["input_ids"].shape[1]
    expected = full.logits[:, prompt_length - 1 : -1]  # logits predicting each continuation token

    for cache, decoder_class in (("dynamic", _HFDecoder), ("static", _StaticDecoder)):
        decoder = make_decoder(model, 3, ids.shape[1], cache=cache)
        assert type(decoder) is decoder_class
        with torch.no_grad():
            steps = [decoder.prefill(prompts["input_ids"], prompts["attention_mask"])]
            steps += [decoder.step(continuation[:, t]) for t in range(3)]
        torch.testing.assert_close(torch.stack(steps, 1), expected, rtol=1e-5, atol=1e-5)
    # The static cache was allocated whole: batch x (prompt + new tokens) for every layer.
    keys = decoder.cache.layers[0].keys
    assert keys.shape[0] == 3 and keys.shape[2] == ids.shape[1]


def sampled(model: PreTrainedModel, prompts: dict[str, torch.Tensor], **options) -> Generation:
    return sample(
        model,
        prompts["input_ids"],
        prompts["attention_mask"],
        max_new_tokens=16,
        eos_token_id=EOS,
        pad_token_id=PAD,
        temperature=0.9,
        top_p=0.95,
        generator=torch.Generator().manual_seed(3),
        **options,
    )


def assert_same_generation(ours: Generation, theirs: Generation) -> None:
    assert torch.equal(ours.tokens, theirs.tokens)
    assert torch.equal(ours.response_mask, theirs.response_mask)
    assert torch.equal(ours.finished, theirs.finished)


@ARCHITECTURES
def test_the_static_cache_samples_the_dynamic_caches_tokens(architecture):
    model = tiny_lm(architecture)
    prompts = left_padded_prompts([5, 9, 2, 7])
    dynamic = sampled(model, prompts, cache="dynamic")
    assert dynamic.tokens.shape == (4, 16)
    assert len({tuple(row) for row in dynamic.tokens.tolist()}) == 4
    assert_same_generation(sampled(model, prompts, cache="static"), dynamic)


def test_a_compiled_step_samples_the_same_tokens_and_serves_the_next_batch_uncompiled_again(
    monkeypatch,
):
    """torch.compile with fullgraph (no graph break in the step), on dynamo's eager backend: the
    graph is captured as on CUDA, without inductor's minutes of C++ compilation on a CPU. A next
    batch with other prompt lengths fits the same rounded cache length and compiles nothing."""
    monkeypatch.setattr(torch, "compile", partial(torch.compile, backend="eager"))
    model = tiny_lm("llama")
    first, second = left_padded_prompts([5, 9, 2, 7]), left_padded_prompts([3, 8, 6, 1], seed=1)
    compiled = sampled(model, first, compile=True)
    assert_same_generation(compiled, sampled(model, first, cache="dynamic"))
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert_same_generation(
            sampled(model, second, compile=True), sampled(model, second, cache="dynamic")
        )


def test_sampling_and_shared_prompt_scoring_use_no_deprecated_api(monkeypatch):
    """transformers 5 renamed `past_key_values` to `cache` (FutureWarning until 5.40, then gone):
    every decoder, and the reward model's shared-prompt scoring on the plain path, with warnings
    made errors."""
    monkeypatch.setenv(cpu_fast.SWITCH, "0")  # the plain paths, which call the HF forwards
    prompts = left_padded_prompts([5, 9, 2])
    trunk = tiny_lm("gpt2").transformer
    reward_model = RewardModel(trunk)
    completions = left_padded_prompts([3, 1, 4], seed=2)["input_ids"].flip(1)  # right-padded
    completion_mask = (completions != PAD).long()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for architecture in ("gpt2", "llama"):
            for options in ({"cache": "dynamic"}, {"cache": "static"}):
                sampled(tiny_lm(architecture), prompts, **options)
        reward_model.score_completions(
            prompts["input_ids"][:2],
            prompts["attention_mask"][:2],
            completions,
            completion_mask,
            torch.tensor([0, 1, 1]),
        )
