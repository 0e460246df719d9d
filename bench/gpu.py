"""Throughput on one GPU of SFT, reward, DPO, PPO, GRPO and sampling through the engine, beside TRL.

    python bench/gpu.py [--smoke] [--trl] [--set STAGE.FIELD=VALUE ...] [--reward-k 4] [--out FILE]
      [--stages sft,reward,dpo,ppo,critic_free,sample,trl-sft,trl-reward,trl-grpo] [--peak-tflops T]

A randomly initialised Qwen2-0.5B shape (bf16 autocast on CUDA), each stage in its own process, the
median step after warm-up; FULL below holds each step's work (SMOKE: a tiny shape for a CPU check).
Prints SFT tokens/s and MFU, reward and DPO pairs/s, PPO and critic-free GRPO episodes/s (with
their generation/scoring/update shares), sampling tokens/s and the peak memory of each, then a JSON
line of every figure. --trl: the same SFT, reward, GRPO work through TRL's trainers (if it imports).
The H200 has transformers 5.17 (the engine needs 5.25) and no trl: carry wheels. Here, in the root:
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl transformers==5.25.0 huggingface_hub==2.4.0 httpx2==2.17.0 httpcore2==2.17.0 truststore==0.10.5 hf-xet==1.8.0 click==8.5.1 regex==2026.12.2 idna==3.20 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
(TRL's other needs, pyarrow and pandas among them, are in the image.) Then run(carry=[".whl"]):
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; PYTHONUNBUFFERED=1 python3 bench/gpu.py --trl --out $OUT/gpu.json
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import functools
import io
import itertools
import json
import math
import os
import random
import statistics
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path and its name would shadow the package.
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

from training.engine.config import (  # noqa: E402
    CriticFreeConfig,
    DPOConfig,
    PPOConfig,
    RewardConfig,
    SampleConfig,
    SFTConfig,
)

OURS = ("sft", "reward", "dpo", "ppo", "critic_free", "sample")
TRL = ("trl-sft", "trl-reward", "trl-grpo")
CONFIGS = {
    "sft": SFTConfig,
    "reward": RewardConfig,
    "dpo": DPOConfig,
    "ppo": PPOConfig,
    "critic_free": CriticFreeConfig,
    "sample": SampleConfig,
}
WARMUP_STEPS = 2  # untimed, as in bench/training.py: the first timed step is step WARMUP_STEPS + 2
# bf16 dense matrix peak by device name (vendor datasheets; the first match wins).
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))


@dataclass(frozen=True)
class Shapes:
    """The work of one step of each stage. Lengths count tokens; prompts include the chat
    template's role tokens."""

    model: dict[str, Any]  # Qwen2Config fields
    sft_batch: int  # demonstrations per step, each sft_length tokens (loss on all but the prompt)
    sft_length: int
    sft_prompt: int
    reward_sequences: int  # completions per step: reward_sequences // K rankings of K
    reward_length: int  # prompt + completion (with EOS)
    reward_prompt: int
    ppo_prompts: int  # episodes per step; PPO epochs over minibatches of ppo_mini_batch
    # (critic-free GRPO and TRL's: ppo_prompts / 4 prompts x 4 responses, ppo_epochs passes of one
    # minibatch of all ppo_prompts; DPO: the reward stage's rankings and lengths)
    ppo_prompt: int
    ppo_response: int  # new tokens (a random policy rarely samples EOS: all of them)
    ppo_mini_batch: int
    ppo_epochs: int
    sample_k: int  # completions per prompt
    sample_new: int  # new tokens per completion
    sample_batch: int  # sequences per batch (one timed step)
    sample_prompt: int
    steps: dict[str, int]  # timed steps per stage (PPO and GRPO: rollout + update rounds)


GRPO_GROUP = 4  # responses per prompt of the GRPO stages (critic_free, trl-grpo)


# The default run, estimated at 5-6 minutes on an H200 (not yet run on one): each of the 9 stage
# processes spends about 15-25 s importing, loading the 2 GB of fp32 weights and saving its result;
# the timed work is about 13 x 0.1 s for SFT, reward and DPO, 7 x 4 s for PPO, critic-free GRPO and
# TRL's GRPO, 6 x 5 s for sampling.
FULL = Shapes(
    model={
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "rope_theta": 1e6,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    },
    sft_batch=16,
    sft_length=512,
    sft_prompt=16,
    reward_sequences=32,
    reward_length=512,
    reward_prompt=64,
    ppo_prompts=64,
    ppo_prompt=64,
    ppo_response=128,
    ppo_mini_batch=64,  # InstructGPT's PPO minibatch; 4 epochs, as GRPO's num_iterations here
    ppo_epochs=4,
    sample_k=4,
    sample_new=256,
    sample_batch=64,
    sample_prompt=64,
    steps={
        "sft": 10,
        "reward": 10,
        "dpo": 10,
        "ppo": 4,
        "critic_free": 4,
        "sample": 3,
        "trl-sft": 10,
        "trl-reward": 10,
        "trl-grpo": 4,
    },  # fmt: skip
)
SMOKE = Shapes(
    model=FULL.model
    | {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 2048,
        "max_position_embeddings": 1024,
    },
    sft_batch=4,
    sft_length=64,
    sft_prompt=8,
    reward_sequences=8,
    reward_length=64,
    reward_prompt=16,
    ppo_prompts=8,
    ppo_prompt=16,
    ppo_response=16,
    ppo_mini_batch=8,
    ppo_epochs=4,
    sample_k=4,
    sample_new=16,
    sample_batch=8,
    sample_prompt=16,
    steps=dict.fromkeys(OURS + TRL, 2),
)


# --- the model and its tokenizer -----------------------------------------------------------------


def letter_words(count: int) -> list[str]:
    """The first `count` lowercase words in order of length, then alphabetically (a ... z, aa ...):
    every word's prefixes come before it."""
    lengths = itertools.count(1)
    every = itertools.chain.from_iterable(
        itertools.product(string.ascii_lowercase, repeat=n) for n in lengths
    )
    return ["".join(letters) for letters in itertools.islice(every, count)]


def build_tokenizer(vocab_size: int, max_length: int):
    """A byte-level BPE over the model's whole vocabulary, built without a corpus: the 256 byte
    tokens, the demo base model's special tokens and chat template, then " a", " b", ... " zz" ...
    (each word with its leading space is one token, made by merging its prefix and last letter).
    Not the demo's trained BPE (train_tokenizer): that one knows about 1,900 tokens, while a random
    policy samples any of the 151,936 ids, and TRL's GRPO decodes completions and tokenizes the text
    again for its reward model. Here an id decodes to text that encodes back to it, and a text of n
    words (each after a space) is n tokens. transformers loads it as a Qwen2Tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from training.demo.base_model import CHAT_TEMPLATE, EOS, PAD, ROLE_TOKENS

    byte_chars = bytes_to_unicode()  # byte -> the printable character BPE uses for it
    space = byte_chars[ord(" ")]
    vocab = {token: i for i, token in enumerate([*byte_chars.values(), EOS, PAD, *ROLE_TOKENS])}
    merges = []
    for word in letter_words(vocab_size - len(vocab)):
        vocab[space + word] = len(vocab)
        merges.append((space + word[:-1], word[-1]))
    backend = Tokenizer(models.BPE(vocab, merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=list(ROLE_TOKENS),
        model_max_length=max_length,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(shape: dict[str, Any], path: Path) -> None:
    """A randomly initialised (seeded) Qwen2 of `shape` and its tokenizer, saved under `path`
    (fp32 safetensors: what the engine loads and keeps as master weights)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()

    tokenizer = build_tokenizer(shape["vocab_size"], shape["max_position_embeddings"])
    ids = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**shape, bos_token_id=tokenizer.eos_token_id, **ids))
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))


# --- timing and figures --------------------------------------------------------------------------


class Timer:
    """Stamps the wall clock after every step: `on_progress` for the engine, `stamp` for TRL's
    callback. On CUDA it waits for the queued kernels first, so a step's time is its own."""

    def __init__(self) -> None:
        import torch

        self.sync = torch.cuda.synchronize if torch.cuda.is_available() else lambda: None
        self.wall: list[float] = []
        self.metrics: list[dict[str, float]] = []

    def __call__(self, step: int, total: int, metrics: dict[str, float]) -> None:
        self.stamp()
        self.metrics.append(metrics)

    def stamp(self) -> None:
        self.sync()
        self.wall.append(time.perf_counter())

    def median_step(self, every: int = 1) -> float:
        """Seconds of the median timed unit of `every` steps (GRPO: one rollout and its updates)
        after the warm-up units: on a shared machine the median is less at the mercy of others."""
        ends = self.wall[every - 1 :: every][WARMUP_STEPS:]
        return statistics.median(b - a for a, b in pairwise(ends))

    def timed_metrics(self) -> list[dict[str, float]]:
        return self.metrics[WARMUP_STEPS + 1 :]


def total_steps(spec: dict, stage: str) -> int:
    return WARMUP_STEPS + 1 + spec["shapes"]["steps"][stage]


def with_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    check_fields(type(cfg), overrides)
    return dataclasses.replace(cfg, **overrides)


def check_fields(cls: type, overrides: dict[str, Any]) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise SystemExit(
            f"--set: {cls.__name__} has no field {', '.join(unknown)}; its fields are"
            f" {', '.join(sorted(names))}"
        )


def model_flops_per_step(config: Any, tokens: int, seq_len: int, head_tokens: int) -> float:
    """Training FLOPs of one step counted the standard way (Kaplan et al. 2020; PaLM, Chowdhery et
    al. 2022, appendix B): 6 per matmul parameter per token, plus 12 * layers * d * seq_len per
    token for attention's score and value products (forward and backward, the full square). The
    output projection (vocab x d) counts only at the `head_tokens` positions where the loss is read:
    the engine computes logits only there (training/engine/lm.py), so prompt positions carry no
    head FLOPs. Embedding lookups and norms are not matmuls."""
    d, layers = config.hidden_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    per_layer = d * q + 2 * d * kv + q * d + 3 * d * config.intermediate_size
    attention = 12 * layers * q * seq_len
    return (6 * layers * per_layer + attention) * tokens + 6 * config.vocab_size * d * head_tokens


def device_figures(spec: dict) -> dict[str, Any]:
    """The device's name and its bf16 dense peak in TFLOP/s (None where unknown: MFU n/a)."""
    import torch

    if not torch.cuda.is_available():
        return {"device": "cpu", "peak_tflops": spec["peak_tflops"]}
    name = torch.cuda.get_device_name()
    known = next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)
    return {"device": name, "peak_tflops": spec["peak_tflops"] or known}


def sft_figures(spec: dict, tokens: int, seq_len: int, head_tokens: int, step_s: float) -> dict:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(spec["model_dir"])
    flops = model_flops_per_step(config, tokens, seq_len, head_tokens)
    peak = device_figures(spec)["peak_tflops"]
    return {
        "tokens_per_s": tokens / step_s,
        "model_tflops_per_s": flops / step_s / 1e12,
        "mfu": flops / step_s / (peak * 1e12) if peak else None,
        "step_s": step_s,
    }


# --- data: fixed token counts --------------------------------------------------------------------


@functools.cache
def vocabulary(tokenizer_size: int, special_tokens: int) -> list[str]:
    """The words of build_tokenizer's vocabulary: what follows the bytes and special tokens."""
    return letter_words(tokenizer_size - 256 - special_tokens)


def words(rng: random.Random, tokenizer, n: int) -> str:
    """n random words of the tokenizer's vocabulary, each after a space: n tokens."""
    known = vocabulary(len(tokenizer), len(tokenizer.all_special_tokens))
    return "".join(" " + rng.choice(known) for _ in range(n))


def prompt_words(tokenizer, rng: random.Random, tokens: int) -> str:
    """A prompt whose chat-formatted form is exactly `tokens` tokens long."""
    from training.engine.data import encode_prompts

    overhead = len(encode_prompts(tokenizer, [" a"], 10**6)[0]) - 1  # the role tokens, newlines
    prompt = words(rng, tokenizer, tokens - overhead)
    assert len(encode_prompts(tokenizer, [prompt], 10**6)[0]) == tokens
    return prompt


def dtype() -> str:
    import torch

    return "bfloat16" if torch.cuda.is_available() else "auto"


# --- our stages ----------------------------------------------------------------------------------


def sft_data(spec: dict, tokenizer, length: int, count: int) -> list[dict]:
    """Demonstrations of a short prompt and a long completion, cut to exactly `length` tokens."""
    rng = random.Random(0)
    prompt = spec["shapes"]["sft_prompt"]
    return [
        {
            "prompt": prompt_words(tokenizer, rng, prompt),
            "completion": words(rng, tokenizer, length),
        }
        for _ in range(count)
    ]


def bench_sft(spec: dict, out: str) -> dict:
    from training.engine.data import encode_demonstrations
    from training.engine.lm import load_tokenizer
    from training.engine.sft import run

    shapes, steps = spec["shapes"], total_steps(spec, "sft")
    cfg = SFTConfig(
        model_path=spec["model_dir"],
        output_dir=out,
        batch_size=shapes["sft_batch"],
        max_length=shapes["sft_length"],
        max_steps=steps,
        val_fraction=0.0,
        checkpoint_every=0,
        eval_every=10**9,
        dtype=dtype(),
    )
    cfg = with_overrides(cfg, spec["overrides"].get("sft", {}))
    tokenizer = load_tokenizer(cfg.model_path)
    demos = sft_data(spec, tokenizer, cfg.max_length, cfg.batch_size * steps)
    examples = encode_demonstrations(tokenizer, demos[: cfg.batch_size], cfg.max_length)
    tokens = sum(len(e.input_ids) for e in examples)
    # Loss positions: each predicts a response token (the last position predicts nothing).
    head_tokens = sum(len(e.input_ids) - e.prompt_length for e in examples)
    timer = Timer()
    run(cfg, {"demonstrations": demos}, on_progress=timer)
    figures = sft_figures(spec, tokens, cfg.max_length, head_tokens, timer.median_step())
    return figures | {"batch": cfg.batch_size, "seq": cfg.max_length, "loss_tokens": head_tokens}


def ranking_rows(spec: dict, tokenizer, k: int, count: int, length: int) -> list[dict]:
    rng = random.Random(0)
    prompt = spec["shapes"]["reward_prompt"]
    completion = length - prompt - 1  # + EOS
    return [
        {
            "prompt": prompt_words(tokenizer, rng, prompt),
            "completions": [words(rng, tokenizer, completion) for _ in range(k)],
            "ranks": rng.sample(range(k), k),
        }
        for _ in range(count)
    ]


def bench_reward(spec: dict, out: str) -> dict:
    from training.engine.reward import run

    shapes, steps, k = spec["shapes"], total_steps(spec, "reward"), spec["reward_k"]
    cfg = RewardConfig(
        model_path=spec["model_dir"],
        output_dir=out,
        batch_size=shapes["reward_sequences"] // k,
        max_length=shapes["reward_length"],
        max_steps=steps,
        val_fraction=0.0,
        checkpoint_every=0,
        eval_every=10**9,
        normalize_on_demonstrations=False,
        dtype=dtype(),
    )
    cfg = with_overrides(cfg, spec["overrides"].get("reward", {}))
    return on_rankings(run, cfg, spec, k, steps)


def on_rankings(run: Any, cfg: Any, spec: dict, k: int, steps: int) -> dict:
    """Time a stage that trains on rankings of K (reward model, DPO): pairs and sequences/s."""
    from training.engine.lm import load_tokenizer

    tokenizer = load_tokenizer(cfg.model_path)
    rankings = ranking_rows(spec, tokenizer, k, cfg.batch_size * steps, cfg.max_length)
    timer = Timer()
    run(cfg, {"rankings": rankings}, on_progress=timer)
    step_s = timer.median_step()
    return {
        "pairs_per_s": cfg.batch_size * math.comb(k, 2) / step_s,
        "sequences_per_s": cfg.batch_size * k / step_s,
        "k": k,
        "rankings_per_step": cfg.batch_size,
        "seq": cfg.max_length,
        "step_s": step_s,
    }


def bench_dpo(spec: dict, out: str) -> dict:
    """DPO on the reward stage's rankings (K = --reward-k, the same lengths): every step the policy
    on each completion, C(K, 2) pairs per ranking; the reference's log-probs once, before step 1."""
    from training.engine.dpo import run

    shapes, steps, k = spec["shapes"], total_steps(spec, "dpo"), spec["reward_k"]
    cfg = DPOConfig(
        model_path=spec["model_dir"],
        output_dir=out,
        batch_size=shapes["reward_sequences"] // k,
        max_length=shapes["reward_length"],
        max_steps=steps,
        val_fraction=0.0,
        checkpoint_every=0,
        eval_every=10**9,
        dtype=dtype(),
    )
    cfg = with_overrides(cfg, spec["overrides"].get("dpo", {}))
    return on_rankings(run, cfg, spec, k, steps)


def reward_model_dir(model: str, tokenizer, out: str) -> str:
    """A reward model with an untrained head on the policy's trunk (built on the CPU, so that it is
    not in the GPU's peak): the same work as a trained one."""
    import torch

    from training.engine.reward_model import RewardModel

    reward_dir = Path(out) / "reward-model"
    RewardModel.from_causal_lm(model, tokenizer, torch.device("cpu")).save_pretrained(
        reward_dir, tokenizer
    )
    return str(reward_dir)


def rollout_figures(timer: Timer, responses: int) -> dict:
    """Episodes/s of a rollout-and-update loop (PPO, critic-free), each part's share of its time,
    the generation's tokens/s and the mean response length over the timed steps."""
    step_s = timer.median_step()
    timed = timer.timed_metrics()
    parts = ("generation", "scoring", "update")
    seconds = {part: sum(m[f"time/{part}"] for m in timed) for part in parts}
    length = statistics.mean(m["response/length"] for m in timed)
    return {
        "episodes_per_s": responses / step_s,
        "time_share": {part: seconds[part] / sum(seconds.values()) for part in parts},
        "generation_tokens_per_s": responses * length * len(timed) / seconds["generation"],
        "mean_response_length": length,
        "episodes_per_step": responses,
        "step_s": step_s,
    }


def bench_ppo(spec: dict, out: str) -> dict:
    from training.engine.lm import load_tokenizer
    from training.engine.ppo import run

    shapes, steps = spec["shapes"], total_steps(spec, "ppo")
    model = spec["model_dir"]
    tokenizer = load_tokenizer(model)
    cfg = PPOConfig(
        policy_path=model,
        reward_model_path=reward_model_dir(model, tokenizer, out),
        output_dir=str(Path(out) / "run"),
        total_episodes=shapes["ppo_prompts"] * steps,
        batch_size=shapes["ppo_prompts"],
        mini_batch_size=shapes["ppo_mini_batch"],
        ppo_epochs=shapes["ppo_epochs"],
        max_prompt_length=shapes["ppo_prompt"],
        max_new_tokens=shapes["ppo_response"],
        checkpoint_every=0,
        # The policy's weights stay put (its optimizer still steps), so every step samples from the
        # same random model and does the same work; the value model's rate changes no sample.
        lr=0.0,
        dtype=dtype(),
    )
    cfg = with_overrides(cfg, spec["overrides"].get("ppo", {}))
    rng = random.Random(0)
    prompts = [prompt_words(tokenizer, rng, cfg.max_prompt_length) for _ in range(cfg.batch_size)]
    timer = Timer()
    run(cfg, {"prompts": prompts * steps}, on_progress=timer)
    figures = rollout_figures(timer, cfg.batch_size)
    return figures | {"mini_batch": cfg.mini_batch_size, "epochs": cfg.ppo_epochs}


def bench_critic_free(spec: dict, out: str) -> dict:
    """Critic-free GRPO on trl-grpo's work: ppo_prompts / 4 prompts x 4 responses per step, scored
    by a reward model on the same trunk, a KL to the reference (kl_coef 0.02, TRL's beta here), then
    ppo_epochs passes of one minibatch of all the responses (TRL's num_iterations). lr 0, as PPO's
    stage. An episode is a response, as TRL's."""
    from training.engine.critic_free import run
    from training.engine.lm import load_tokenizer

    shapes, steps = spec["shapes"], total_steps(spec, "critic_free")
    model = spec["model_dir"]
    tokenizer = load_tokenizer(model)
    cfg = CriticFreeConfig(
        policy_path=model,
        reward_model_path=reward_model_dir(model, tokenizer, out),
        output_dir=str(Path(out) / "run"),
        estimator="grpo",
        group_size=GRPO_GROUP,
        batch_size=shapes["ppo_prompts"] // GRPO_GROUP,  # prompts per step
        mini_batch_size=shapes["ppo_prompts"],  # responses per gradient step
        update_epochs=shapes["ppo_epochs"],
        total_episodes=shapes["ppo_prompts"] // GRPO_GROUP * steps,
        max_prompt_length=shapes["ppo_prompt"],
        max_new_tokens=shapes["ppo_response"],
        temperature=1.0,
        kl_coef=0.02,
        checkpoint_every=0,
        lr=0.0,  # every step samples from the same random model and does the same work
        dtype=dtype(),
    )
    cfg = with_overrides(cfg, spec["overrides"].get("critic_free", {}))
    rng = random.Random(0)
    prompts = [prompt_words(tokenizer, rng, cfg.max_prompt_length) for _ in range(cfg.batch_size)]
    timer = Timer()
    run(cfg, {"prompts": prompts * steps}, on_progress=timer)
    figures = rollout_figures(timer, cfg.batch_size * cfg.group_size)
    return figures | {
        "prompts_per_step": cfg.batch_size,
        "group_size": cfg.group_size,
        "mini_batch": cfg.mini_batch_size,
        "epochs": cfg.update_epochs,
    }


def bench_sample(spec: dict, out: str) -> dict:
    from training.engine.lm import load_tokenizer
    from training.engine.sample import run

    shapes, steps = spec["shapes"], total_steps(spec, "sample")
    cfg = SampleConfig(
        model_path=spec["model_dir"],
        output_dir=out,
        k=shapes["sample_k"],
        max_new_tokens=shapes["sample_new"],
        max_prompt_length=shapes["sample_prompt"],
        batch_size=shapes["sample_batch"],
        resample_duplicates=0,  # full batches only: a draw again for repeats is a smaller one
        dtype=dtype(),
    )
    cfg = with_overrides(cfg, spec["overrides"].get("sample", {}))
    tokenizer = load_tokenizer(cfg.model_path)
    rng = random.Random(0)
    count = math.ceil(cfg.batch_size * steps / cfg.k)
    prompts = [prompt_words(tokenizer, rng, cfg.max_prompt_length) for _ in range(count)]
    timer = Timer()
    result = run(cfg, {"prompts": prompts}, on_progress=timer)
    step_s = timer.median_step()
    length = statistics.mean(m["mean_length"] for m in timer.timed_metrics())
    return {
        "tokens_per_s": cfg.batch_size * length / step_s,
        "mean_length": length,
        "sampler": result["samples"][0]["provenance"]["sampler"],
        "batch": cfg.batch_size,
        "step_s": step_s,
    }


# --- TRL's stages --------------------------------------------------------------------------------


def trl_args(spec: dict, stage: str, config_class: type, out: str, **settings: Any) -> Any:
    """TRL's fastest honest settings: bf16 on CUDA, no gradient checkpointing (TRL's default is
    on), accumulation, logging, eval, saving or dataloader workers; the data pre-tokenized."""
    import torch

    cuda = torch.cuda.is_available()
    common = {
        "output_dir": out,
        "bf16": cuda,
        "fp16": False,
        "use_cpu": not cuda,
        "gradient_checkpointing": False,
        "gradient_accumulation_steps": 1,
        "logging_strategy": "no",
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "seed": 0,
    }
    overrides = spec["overrides"].get(stage, {})
    check_fields(config_class, overrides)
    return config_class(**common | settings | overrides)


def trl_train(trainer: Any, timer: Timer) -> None:
    """Train with `timer` stamping every optimizer step, printing nothing."""
    from transformers import PrinterCallback, TrainerCallback

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            timer.stamp()

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(Stamp())
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train()


def trl_models(spec: dict):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    options = {"dtype": torch.float32, "attn_implementation": "sdpa"}  # what our engine loads

    def policy():
        return AutoModelForCausalLM.from_pretrained(spec["model_dir"], **options)

    def scorer():
        return AutoModelForSequenceClassification.from_pretrained(
            spec["model_dir"], num_labels=1, **options
        )

    return policy, scorer


def bench_trl_sft(spec: dict, out: str) -> dict:
    """SFTTrainer on our SFT's token ids. Its MFU uses our count (the output projection only at the
    loss positions, though TRL applies it everywhere), so the two compare as their tokens/s do."""
    import datasets
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from training.engine.data import encode_demonstrations
    from training.engine.lm import load_tokenizer

    shapes, steps = spec["shapes"], total_steps(spec, "trl-sft")
    batch, length = shapes["sft_batch"], shapes["sft_length"]
    args = trl_args(
        spec,
        "trl-sft",
        TRLSFTConfig,
        out,
        per_device_train_batch_size=batch,
        max_length=length,
        max_steps=steps,
        completion_only_loss=True,
    )
    tokenizer = load_tokenizer(spec["model_dir"])
    demos = sft_data(spec, tokenizer, length, batch * steps)
    examples = encode_demonstrations(tokenizer, demos, length)  # the same ids as ours
    rows = [
        {
            "input_ids": e.input_ids,
            "completion_mask": [0] * e.prompt_length + [1] * (len(e.input_ids) - e.prompt_length),
        }
        for e in examples
    ]
    policy, _ = trl_models(spec)
    timer = Timer()
    trainer = SFTTrainer(
        model=policy(),
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trl_train(trainer, timer)
    tokens = sum(len(e.input_ids) for e in examples[:batch])
    head_tokens = sum(len(e.input_ids) - e.prompt_length for e in examples[:batch])
    figures = sft_figures(spec, tokens, length, head_tokens, timer.median_step())
    return figures | {"batch": batch, "seq": length, "loss_type": args.loss_type}


def bench_trl_reward(spec: dict, out: str) -> dict:
    import datasets
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    from training.engine.data import encode_rankings
    from training.engine.lm import load_tokenizer

    shapes, steps = spec["shapes"], total_steps(spec, "trl-reward")
    pairs, length = shapes["reward_sequences"] // 2, shapes["reward_length"]
    args = trl_args(
        spec,
        "trl-reward",
        TRLRewardConfig,
        out,
        per_device_train_batch_size=pairs,
        max_length=length,
        max_steps=steps,
    )
    tokenizer = load_tokenizer(spec["model_dir"])
    rankings = encode_rankings(
        tokenizer, ranking_rows(spec, tokenizer, 2, pairs * steps, length), length
    )
    rows = [
        {"chosen_ids": r.prompt + r.completions[0], "rejected_ids": r.prompt + r.completions[1]}
        for r in rankings
    ]
    _, scorer = trl_models(spec)
    model = scorer()
    model.config.pad_token_id = tokenizer.pad_token_id
    timer = Timer()
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trl_train(trainer, timer)
    step_s = timer.median_step()
    return {
        "pairs_per_s": pairs / step_s,
        "sequences_per_s": 2 * pairs / step_s,
        "seq": length,
        "step_s": step_s,
    }


def bench_trl_grpo(spec: dict, out: str) -> dict:
    """GRPO on our PPO's work (and critic_free's): a generation of ppo_prompts completions
    (ppo_prompts / 4 prompts x 4 generations), scored by a reward model on the same trunk, a KL to
    the reference (beta 0.02, as our kl_coef; TRL's default 0 skips the reference), then ppo_epochs
    passes of one minibatch each (num_iterations). No value model: GRPO has none. lr 0, as ours."""
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    from training.engine.lm import format_prompt, load_tokenizer

    shapes, steps = spec["shapes"], total_steps(spec, "trl-grpo")
    episodes, epochs = shapes["ppo_prompts"], shapes["ppo_epochs"]
    args = trl_args(
        spec,
        "trl-grpo",
        GRPOConfig,
        out,
        per_device_train_batch_size=episodes,
        steps_per_generation=1,
        num_generations=GRPO_GROUP,
        num_iterations=epochs,
        max_completion_length=shapes["ppo_response"],
        temperature=1.0,
        beta=0.02,
        learning_rate=0.0,
        max_steps=steps * epochs,
    )
    tokenizer = load_tokenizer(spec["model_dir"])
    rng = random.Random(0)
    # The chat-formatted prompt as plain text: the same ids as our PPO's prompts.
    prompts = [
        {"prompt": format_prompt(tokenizer, prompt_words(tokenizer, rng, shapes["ppo_prompt"]))}
        for _ in range(episodes * steps)
    ]
    policy, scorer = trl_models(spec)
    model, reward_model = policy(), scorer()
    timer = Timer()
    # generate()'s seconds and new tokens by round (one rollout and its `epochs` optimizer steps).
    generation: dict[int, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    generate = model.generate

    def timed_generate(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        output = generate(*args, **kwargs)
        timer.sync()
        sequences = output if hasattr(output, "shape") else output.sequences
        prompt = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        seconds_and_tokens = generation[len(timer.wall) // epochs]
        seconds_and_tokens[0] += time.perf_counter() - started
        seconds_and_tokens[1] += prompt.shape[0] * (sequences.shape[1] - prompt.shape[1])
        return output

    model.generate = timed_generate
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_model,
        args=args,
        train_dataset=datasets.Dataset.from_list(prompts),
        processing_class=tokenizer,
        reward_processing_classes=tokenizer,
    )
    trl_train(trainer, timer)
    round_s = timer.median_step(every=epochs)
    # The rounds median_step times: those after the warm-up and the first stamped round.
    timed = [generation[r] for r in range(WARMUP_STEPS + 1, steps)]
    generation_s = statistics.median(seconds for seconds, _ in timed)
    new_tokens = sum(tokens for _, tokens in timed) / len(timed) / episodes
    return {
        "episodes_per_s": episodes / round_s,
        "generation_share": generation_s / round_s,
        "generation_tokens_per_s": episodes * new_tokens / generation_s,
        "mean_new_tokens": new_tokens,
        "episodes_per_step": episodes,
        "epochs": epochs,
        "step_s": round_s,
    }


STAGES = {
    "sft": bench_sft,
    "reward": bench_reward,
    "dpo": bench_dpo,
    "ppo": bench_ppo,
    "critic_free": bench_critic_free,
    "sample": bench_sample,
    "trl-sft": bench_trl_sft,
    "trl-reward": bench_trl_reward,
    "trl-grpo": bench_trl_grpo,
}


def child(spec: dict) -> None:
    stage = spec["stage"]
    if stage in TRL:
        try:
            import datasets  # noqa: F401
            import trl
        except Exception as error:  # any failure to import (a missing package, a clash) is no TRL
            reason = f"trl does not import ({type(error).__name__}: {error})"
            print(json.dumps({"skipped": reason}))
            return
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch
    import transformers

    from training.engine.precision import peak_memory_mb, resolve_device

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as out:
        figures = STAGES[stage](spec, out)
    figures["peak_memory_mb"] = peak_memory_mb(resolve_device("auto"))
    if stage in TRL:
        figures["trl"] = trl.__version__
    print(json.dumps(figures))


# --- the parent: build once, one process per stage, print --------------------------------------


def describe(stage: str, f: dict) -> str:
    """One line of a stage's figures."""
    name = {
        "sft": "SFT",
        "reward": "reward",
        "dpo": "DPO",
        "ppo": "PPO",
        "critic_free": "critic-free",
        "sample": "sampling",
    }
    label = f"TRL {name.get(stage[4:], 'GRPO')}" if stage in TRL else name[stage]
    if "skipped" in f or "error" in f:
        return f"{label:12} {'skipped: ' + f['skipped'] if 'skipped' in f else 'FAILED'}"
    if stage in ("sft", "trl-sft"):
        mfu = "n/a" if f["mfu"] is None else f"{f['mfu']:.1%}"
        text = (
            f"{f['tokens_per_s']:10,.0f} tokens/s  MFU {mfu} ({f['model_tflops_per_s']:.1f}"
            f" model TFLOP/s; batch {f['batch']} x {f['seq']})"
        )
    elif stage in ("reward", "dpo", "trl-reward"):
        k = f"K = {f['k']}" if "k" in f else "pairs"
        text = (
            f"{f['pairs_per_s']:10,.1f} pairs/s  ({f['sequences_per_s']:,.1f} sequences/s;"
            f" {k}, {f['seq']} tokens)"
        )
    elif stage in ("ppo", "critic_free"):
        share = f["time_share"]
        text = (
            f"{f['episodes_per_s']:10,.2f} episodes/s  (generation {share['generation']:.0%},"
            f" scoring {share['scoring']:.0%}, update {share['update']:.0%}; generation"
            f" {f['generation_tokens_per_s']:,.0f} tokens/s; mean response"
            f" {f['mean_response_length']:.1f} tokens)"
        )
    elif stage == "trl-grpo":
        text = (
            f"{f['episodes_per_s']:10,.2f} episodes/s  (generation {f['generation_share']:.0%};"
            f" generation {f['generation_tokens_per_s']:,.0f} tokens/s; mean completion"
            f" {f['mean_new_tokens']:.1f} tokens)"
        )
    else:
        text = (
            f"{f['tokens_per_s']:10,.0f} tokens/s  ({f['sampler']} sampler, batch {f['batch']},"
            f" mean {f['mean_length']:.1f} new tokens)"
        )
    return f"{label:12} {text}  peak memory {f['peak_memory_mb']:,.0f} MiB"


def run_stage(stage: str, spec: dict, timeout: float) -> dict:
    """The stage in a process of its own (so that the peak memory is the stage's): its figures,
    or {"error": the end of its stderr}."""
    command = [sys.executable, __file__, "--child", json.dumps(spec | {"stage": stage})]
    # Keep the caller's PYTHONPATH (the device's carried wheels) after the repository.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode:
        return {"error": "\n".join(done.stderr.strip().splitlines()[-25:])}
    return json.loads(done.stdout.strip().splitlines()[-1])


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for package in ("torch", "transformers", "trl", "datasets", "accelerate", "pyarrow"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def targets(stages: dict[str, dict]) -> dict[str, Any]:
    """The issue's targets, where the figures exist: SFT MFU >= 45%, sampling >= 2,800 tokens/s,
    each stage >= TRL's (PPO against GRPO, the nearest TRL trainer; critic-free GRPO against it like
    for like)."""
    ok = {name: f for name, f in stages.items() if "skipped" not in f and "error" not in f}
    found: dict[str, Any] = {}
    if (mfu := ok.get("sft", {}).get("mfu")) is not None:
        found["sft_mfu_at_least_45%"] = mfu >= 0.45
    if "sample" in ok:
        found["sampling_at_least_2800_tokens_per_s"] = ok["sample"]["tokens_per_s"] >= 2800
    for ours, theirs, figure in (
        ("sft", "trl-sft", "tokens_per_s"),
        ("reward", "trl-reward", "sequences_per_s"),
        ("ppo", "trl-grpo", "episodes_per_s"),
        ("critic_free", "trl-grpo", "episodes_per_s"),
    ):
        if ours in ok and theirs in ok:
            found[f"{ours}_over_trl"] = ok[ours][figure] / ok[theirs][figure]
    return found


def parse_overrides(items: list[str], parser: argparse.ArgumentParser) -> dict[str, dict]:
    """--set STAGE.FIELD=VALUE, VALUE as JSON where it parses (true, 16, 1e-5), else text."""
    overrides: dict[str, dict] = {}
    for item in items:
        target, equals, raw = item.partition("=")
        stage, dot, field = target.partition(".")
        if not (equals and dot and field):
            parser.error(f"--set {item!r}: write STAGE.FIELD=VALUE, e.g. sample.compile=true")
        if stage not in STAGES:
            parser.error(f"--set {item!r}: no stage {stage!r}; the stages are {', '.join(STAGES)}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        overrides.setdefault(stage, {})[field] = value
    for stage, config_class in CONFIGS.items():  # TRL's configs are checked in their stages
        try:
            check_fields(config_class, overrides.get(stage, {}))
        except SystemExit as error:
            parser.error(str(error))
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny shape, for a CPU check")
    parser.add_argument("--trl", action="store_true", help="add TRL's stages (if trl imports)")
    parser.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="STAGE.FIELD=VALUE",
        help="override a stage's config field, e.g. sample.compile=true (repeatable)",
    )
    parser.add_argument("--reward-k", type=int, default=4, choices=(2, 4), help="ranking size")
    parser.add_argument("--steps", type=int, help="timed steps of every stage")
    parser.add_argument("--peak-tflops", type=float, help="the card's bf16 dense peak")
    parser.add_argument("--stage-timeout", type=float, default=300, help="seconds per stage")
    parser.add_argument("--out", type=Path, help="also write the JSON of every figure here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    stages = args.stages.split(",") if args.stages else [*OURS, *(TRL if args.trl else ())]
    if unknown := [s for s in stages if s not in STAGES]:
        parser.error(f"unknown stages {', '.join(unknown)}; the stages are {', '.join(STAGES)}")
    shapes = SMOKE if args.smoke else FULL
    if args.steps:
        shapes = dataclasses.replace(shapes, steps=dict.fromkeys(STAGES, args.steps))
    overrides = parse_overrides(args.overrides, parser)

    import torch

    spec = {
        "shapes": dataclasses.asdict(shapes),
        "reward_k": args.reward_k,
        "overrides": overrides,
        "peak_tflops": args.peak_tflops,
    }
    report: dict[str, Any] = {
        "settings": spec | {"warmup_steps": WARMUP_STEPS, "stages": stages},
        "versions": versions(),
        "cuda": torch.cuda.is_available(),
        "stages": {},
    }
    print(f"versions {report['versions']}; CUDA {report['cuda']}; smoke {args.smoke}")
    print(f"model {shapes.model}")
    print(
        f"shapes: SFT {shapes.sft_batch} x {shapes.sft_length} tokens (prompt {shapes.sft_prompt}); reward"
        f" {shapes.reward_sequences // args.reward_k} rankings of K = {args.reward_k} x"
        f" {shapes.reward_length} tokens (TRL: {shapes.reward_sequences // 2} pairs; DPO: as"
        f" reward); PPO {shapes.ppo_prompts} prompts of {shapes.ppo_prompt} x"
        f" {shapes.ppo_response} new tokens, {shapes.ppo_epochs} epochs of minibatches of"
        f" {shapes.ppo_mini_batch}; GRPO (critic-free, TRL) {shapes.ppo_prompts // GRPO_GROUP}"
        f" prompts x {GRPO_GROUP} responses, {shapes.ppo_epochs} epochs of one minibatch;"
        f" sampling K = {shapes.sample_k} x {shapes.sample_new} new tokens, batch"
        f" {shapes.sample_batch};"
        f" timed steps {shapes.steps} after {WARMUP_STEPS + 1}; overrides {overrides or 'none'}"
    )
    failed = False
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        model_dir = Path(scratch) / "random-qwen2"
        build_model(shapes.model, model_dir)
        spec["model_dir"] = str(model_dir)
        print(f"built the random model in {time.perf_counter() - started:.0f} s", flush=True)
        skip = None
        for stage in stages:
            started = time.perf_counter()
            if stage in TRL and skip:
                figures = {"skipped": skip}
            else:
                figures = run_stage(stage, spec, args.stage_timeout)
                skip = skip or figures.get("skipped")
            report["stages"][stage] = figures
            print(describe(stage, figures), f"[{time.perf_counter() - started:.0f} s]", flush=True)
            if "error" in figures:
                failed = True
                print(figures["error"], file=sys.stderr, flush=True)
            report["targets"] = targets(report["stages"])
            if args.out:  # after every stage: a run cut short keeps what it measured
                args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
