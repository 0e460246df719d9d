"""The samplers behind one interface: the built-in loop, and vLLM (optional, never required: not
installed here, so its adapter is tested against a stand-in module with vLLM's API)."""

from __future__ import annotations

import sys
import types
from functools import partial
from types import SimpleNamespace

import pytest
import torch

from tests.training.engine.helpers import CPU
from tests.training.engine.toy_model import questions
from training.engine import rollout, sample, sampler
from training.engine.config import SampleConfig
from training.engine.data import encode_prompts
from training.engine.lm import freeze, load_causal_lm, load_tokenizer
from training.engine.precision import autocast
from training.engine.sampler import BuiltinSampler, SamplerUnavailable
from training.engine.vllm_sampler import VLLMSampler, to_generation

AMP = partial(autocast, CPU, torch.float32)
CUDA = torch.device("cuda")


@pytest.mark.slow  # trains a model on CPU
def test_a_prompt_given_k_times_gets_k_continuations_decoded_without_eos_or_pad(sft_model_dir):
    tokenizer = load_tokenizer(sft_model_dir)
    model = freeze(load_causal_lm(sft_model_dir, tokenizer, CPU))
    short, long = encode_prompts(tokenizer, ["Why?", "What does the cat do today?"], 64)
    prompts, generation = BuiltinSampler(model, tokenizer, AMP).generate(
        [short] * 3 + [long], max_new_tokens=12, temperature=1.0, seed=0
    )
    assert prompts["input_ids"].shape == (4, len(long))
    assert prompts["input_ids"][0, -len(short) :].tolist() == short  # left-padded
    padding = len(long) - len(short)
    assert prompts["attention_mask"][0].tolist() == [0] * padding + [1] * len(short)
    assert len({tuple(row.tolist()) for row in generation.tokens[:3]}) > 1  # three draws
    assert generation.finished.any()
    texts = rollout.decode(tokenizer, generation.tokens)
    assert len(texts) == 4
    assert all(tokenizer.eos_token not in t and tokenizer.pad_token not in t for t in texts)


@pytest.mark.slow  # trains a model on CPU
def test_a_part_of_a_batch_samples_what_those_rows_sample_in_the_whole_batch(sft_model_dir):
    """A process's share of a batch (every second prompt) draws the random numbers its rows
    draw in the whole batch, and pads its prompts as the whole batch does: the same responses,
    whichever rows end first (each part stops when its own rows have ended)."""
    tokenizer = load_tokenizer(sft_model_dir)
    model = freeze(load_causal_lm(sft_model_dir, tokenizer, CPU))
    ids = encode_prompts(tokenizer, questions(6), 64)
    draw = partial(BuiltinSampler(model, tokenizer, AMP).generate, ids, max_new_tokens=16,
                   temperature=1.0, seed=5)  # fmt: skip
    prompts, whole = draw()
    assert len(set(whole.response_mask.sum(1).tolist())) > 1  # rows end at different lengths
    for index in range(2):
        part_prompts, part = draw(part=(index, 2))
        assert torch.equal(part_prompts["input_ids"], prompts["input_ids"][index::2])
        width = part.tokens.shape[1]
        assert torch.equal(part.tokens, whole.tokens[index::2, :width])
        assert torch.equal(part.response_mask, whole.response_mask[index::2, :width])
        assert not whole.response_mask[index::2, width:].any()  # nothing cut off
    # Those prompts sampled as a batch of their own draw other numbers: other responses.
    _, alone = BuiltinSampler(model, tokenizer, AMP).generate(
        ids[1::2], max_new_tokens=16, temperature=1.0, seed=5
    )
    width = min(alone.tokens.shape[1], whole.tokens.shape[1])
    assert not torch.equal(alone.tokens[:, :width], whole.tokens[1::2, :width])


def test_auto_is_the_builtin_sampler_except_on_cuda_with_vllm_installed(monkeypatch):
    for installed in (False, True):
        monkeypatch.setattr(sampler, "vllm_installed", lambda installed=installed: installed)
        assert sampler.choose("auto", CPU) == "builtin"
        assert sampler.choose("auto", CUDA) == ("vllm" if installed else "builtin")
        assert sampler.choose("builtin", CUDA) == "builtin"
        assert sampler.choose("vllm", CPU) == "vllm"


def test_asking_for_vllm_where_it_is_not_installed_fails_in_the_engine_naming_the_package(
    toy_model_dir, tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` fails, as where it is absent
    cfg = SampleConfig.from_dict(  # the web server accepts the setting: it has no vLLM either
        {"model_path": str(toy_model_dir), "output_dir": str(tmp_path), "sampler": "vllm"}
    )
    with pytest.raises(SamplerUnavailable, match=r"sampler='vllm' needs the vllm package"):
        sample.run(cfg, {"prompts": questions(2)})
    assert not (tmp_path / sample.SAMPLES_FILE).exists()


class FakeVLLM(types.ModuleType):
    """vLLM's `LLM(...).generate(prompts, params)` and `SamplingParams`, recording the calls.
    Completion c of a request: ids 10 + c, 20 + c (+ EOS unless it is the length-capped one)."""

    def __init__(self, eos: int) -> None:
        super().__init__("vllm")
        self.engines: list[dict] = []
        self.requests: list[tuple[dict, SimpleNamespace]] = []
        fake = self

        class LLM:
            def __init__(self, **options):
                fake.engines.append(options)

            def generate(self, prompts, params, use_tqdm=True):
                fake.requests += list(zip(prompts, params, strict=True))
                outputs = []
                for request in params:
                    completions = [
                        SimpleNamespace(index=c, token_ids=[10 + c, 20 + c], finish_reason="length")
                        if c == request.n - 1 and request.n > 1
                        else SimpleNamespace(
                            index=c, token_ids=[10 + c, 20 + c, eos], finish_reason="stop"
                        )
                        for c in range(request.n)
                    ]
                    outputs.append(SimpleNamespace(outputs=completions[::-1]))  # any order
                return outputs

        self.LLM = LLM
        self.SamplingParams = lambda **options: SimpleNamespace(**options)


def test_the_vllm_sampler_asks_for_a_prompts_k_samples_at_once_and_answers_in_our_layout(
    toy_model_dir, monkeypatch
):
    tokenizer = load_tokenizer(toy_model_dir)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    fake = FakeVLLM(eos)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    vllm = VLLMSampler(
        toy_model_dir, tokenizer, device=CPU, dtype=torch.bfloat16, max_model_len=96, seed=5
    )
    assert fake.engines == [
        {
            "model": str(toy_model_dir),
            "load_format": "safetensors",
            "trust_remote_code": False,
            "dtype": "bfloat16",
            "max_model_len": 96,
            "seed": 5,
            "enable_prefix_caching": True,
        }
    ]
    a, b = encode_prompts(tokenizer, ["Why?", "What does the cat do?"], 64)
    prompts, generation = vllm.generate(
        [a, a, a, b], max_new_tokens=7, temperature=0.8, top_p=0.9, seed=11
    )
    assert [(prompt["prompt_token_ids"], params.n) for prompt, params in fake.requests] == [
        (a, 3),
        (b, 1),
    ]
    seeds = [params.seed for _, params in fake.requests]
    assert len(set(seeds)) == 2
    for _, params in fake.requests:
        assert (params.temperature, params.top_p, params.max_tokens) == (0.8, 0.9, 7)
        assert params.stop_token_ids == [eos]
    assert prompts["input_ids"].shape == (4, len(b))
    assert generation.tokens.tolist() == [
        [10, 20, eos],
        [11, 21, eos],
        [12, 22, pad],  # capped by max_tokens: no EOS
        [10, 20, eos],
    ]
    assert generation.response_mask.tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 1, 1]]
    assert generation.finished.tolist() == [True, True, False, True]

    vllm.generate([a, a, a, b], max_new_tokens=7, temperature=0.8, seed=11)
    assert [params.seed for _, params in fake.requests[2:]] == seeds  # same seed, same requests


def test_a_stop_that_vllm_left_out_of_the_ids_still_ends_with_eos():
    completions = [
        SimpleNamespace(token_ids=[5, 6], finish_reason="stop"),
        SimpleNamespace(token_ids=[5, 6, 1], finish_reason="stop"),
        SimpleNamespace(token_ids=[7], finish_reason="length"),
    ]
    generation = to_generation(completions, eos_token_id=1, pad_token_id=0, device=CPU)
    assert generation.tokens.tolist() == [[5, 6, 1], [5, 6, 1], [7, 0, 0]]
    assert generation.response_mask.tolist() == [[1, 1, 1], [1, 1, 1], [1, 0, 0]]
    assert generation.finished.tolist() == [True, True, False]


def test_a_sample_run_with_vllm_records_it_in_each_samples_provenance(
    toy_model_dir, tmp_path, monkeypatch
):
    tokenizer = load_tokenizer(toy_model_dir)
    monkeypatch.setitem(sys.modules, "vllm", FakeVLLM(tokenizer.eos_token_id))
    cfg = SampleConfig(model_path=str(toy_model_dir), output_dir=str(tmp_path), k=2, sampler="vllm")
    samples = sample.run(cfg, {"prompts": questions(3)})["samples"]
    assert len(samples) == 6
    assert {s["provenance"]["sampler"] for s in samples} == {"vllm"}
    assert [s["provenance"]["finished_with_eos"] for s in samples] == [True, False] * 3
