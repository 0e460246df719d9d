"""Throughput of the training stages on fixed shapes, measured through each stage's real `run()`.

    python bench/training.py [--model PATH] [--threads 2] [--steps N] [--stages sft,reward,dpo,...]

Shapes (fixed by truncating long synthetic texts to exact token counts):
  SFT     batch 16 x 128 tokens (32 prompt + 96 response tokens; loss on the response)
  reward, DPO  8 rankings per step, K = 4 completions of 32 prompt + 32 completion tokens: 48 pairs
          from 32 sequences (DPO: reference log-probs once, up front); DPO2: 48 rankings of K = 2
  PPO     16 prompts of 16 tokens (--ppo-prompt-tokens) x up to 32 new tokens (the mean response
          length is printed), 4 PPO epochs, one minibatch of 16, scored by a reward model on the
          same trunk; learning rates 0, so every run samples the same responses
  PPO32   the same on a randomly initialised copy of the model, which almost never samples EOS:
          every response is 32 tokens, the work of TRL's reference (an untrained GPT-2)
  GRPO, RLOO  training/engine/critic_free.py on PPO32's random policy: 4 prompts of 16
          tokens x K = 4 responses of 32 new tokens, one epoch, one minibatch of 16, kl_coef 0.04,
          learning rate 0 (bench/trl_reference.py's grpo and rloo stages)
Each stage runs in its own process (peak RSS per stage); the first steps are warm-up. Throughput =
work per step / the median wall time of the timed steps (between `on_progress` calls); "per CPU-s"
divides by the median step's process CPU time (near the idle figure with --threads 1).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path and its name would shadow the package.
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
DEFAULT_MODELS = (REPO / "var/models/tiny-base", Path("/work/var/tiny-base"))
WORDS = [
    "the",
    "a",
    "river",
    "cat",
    "moon",
    "bread",
    "book",
    "quiet",
    "red",
    "green",
    "small",
    "large",
    "runs",
    "sees",
    "writes",
    "carries",
    "under",
    "over",
    "near",
    "after",
    "before",
    "because",
    "while",
    "and",
    "but",
    "or",
    "with",
    "without",
    "into",
    "onto",
    "from",
    "blue",
    "ocean",
    "garden",
    "teacher",
    "robot",
    "window",
    "morning",
    "evening",
    "letter",
    "music",
    "answer",
    "question",
]
WARMUP_STEPS = 2


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


class Timer:
    """on_progress callback that stamps wall and process CPU time after every step."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.metrics: list[dict[str, float]] = []

    def __call__(self, step: int, total: int, metrics: dict[str, float]) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())
        self.metrics.append(metrics)

    def rates(self, work_per_step: float) -> tuple[float, float]:
        """(work per wall second, work per CPU second) of the median step after the warm-up: on a
        shared machine the median step is less at the mercy of other processes than the mean."""
        wall = statistics.median(b - a for a, b in pairwise(self.wall[WARMUP_STEPS:]))
        cpu = statistics.median(b - a for a, b in pairwise(self.cpu[WARMUP_STEPS:]))
        return work_per_step / wall, work_per_step / cpu

    def timed_metrics(self) -> list[dict[str, float]]:
        return self.metrics[WARMUP_STEPS + 1 :]


def prompt_of_length(tokenizer, rng: random.Random, tokens: int) -> str:
    """A prompt whose formatted form is exactly `tokens` tokens long."""
    from training.engine.data import encode_prompts

    words: list[str] = []
    while True:
        length = len(encode_prompts(tokenizer, [" ".join(words)], 10**6)[0])
        if length == tokens:
            return " ".join(words)
        words = [] if length > tokens else [*words, rng.choice(WORDS)]


def bench_sft(model: str, out: str, steps: int) -> dict:
    from training.engine.config import SFTConfig
    from training.engine.lm import load_tokenizer
    from training.engine.sft import run

    rng = random.Random(0)
    tokenizer = load_tokenizer(model)
    demos = [
        {"prompt": prompt_of_length(tokenizer, rng, 32), "completion": text(rng, 200)}
        for _ in range(16 * 8)
    ]
    cfg = SFTConfig(
        model_path=model,
        output_dir=out,
        batch_size=16,
        max_length=128,
        max_steps=steps + WARMUP_STEPS + 1,
        val_fraction=0.0,
        checkpoint_every=0,
        eval_every=10**9,
    )
    timer = Timer()
    run(cfg, {"demonstrations": demos}, on_progress=timer)
    wall, cpu = timer.rates(16 * 128)
    return {"sft_tokens_per_s": wall, "sft_tokens_per_cpu_s": cpu}


def bench_reward(model: str, out: str, steps: int) -> dict:
    from training.engine.config import RewardConfig
    from training.engine.reward import run

    rng = random.Random(0)
    rankings = [
        {
            "prompt": text(rng, 60),
            "completions": [text(rng, 60) for _ in range(4)],
            "ranks": rng.sample(range(4), 4),
        }
        for _ in range(8 * 8)
    ]
    cfg = RewardConfig(
        model_path=model,
        output_dir=out,
        batch_size=8,
        max_length=64,
        max_steps=steps + WARMUP_STEPS + 1,
        val_fraction=0.0,
        checkpoint_every=0,
        eval_every=10**9,
        normalize_on_demonstrations=False,
    )
    timer = Timer()
    run(cfg, {"rankings": rankings}, on_progress=timer)
    wall, cpu = timer.rates(8)
    return {
        "reward_rankings_per_s": wall,
        "reward_pairs_per_s": wall * 6,
        "reward_pairs_per_cpu_s": cpu * 6,
    }


def random_copy(model: str, out: str) -> str:
    """The model's architecture and tokenizer with freshly initialised weights (seeded), saved
    under `out`: a policy that almost never samples EOS, so every response is max_new_tokens long
    (the work TRL's reference figure does on its untrained 4-layer, 128-wide GPT-2)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from training.engine.lm import load_tokenizer

    torch.manual_seed(0)
    fresh = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model))
    path = str(Path(out) / "random-policy")
    fresh.save_pretrained(path)
    load_tokenizer(model).save_pretrained(path)
    return path


def reward_model_beside(model: str, out: str) -> str:
    """A reward model with an untrained head on the same trunk: the same work as a trained one."""
    from training.engine.lm import load_tokenizer
    from training.engine.precision import resolve_device
    from training.engine.reward_model import RewardModel

    tokenizer = load_tokenizer(model)
    reward_dir = Path(out) / "reward-model"
    RewardModel.from_causal_lm(model, tokenizer, resolve_device("auto")).save_pretrained(
        reward_dir, tokenizer
    )
    return str(reward_dir)


def online_figures(name: str, timer: Timer, episodes_per_step: int) -> dict:
    """Episodes per second, the time shares of a step and the mean response of an online stage."""
    wall, cpu = timer.rates(episodes_per_step)
    timed = timer.timed_metrics()
    seconds = sum(m["time/generation"] + m["time/scoring"] + m["time/update"] for m in timed)
    split = {
        part: sum(m[f"time/{part}"] for m in timed) / seconds
        for part in ("generation", "scoring", "update")
    }
    return {
        f"{name}_episodes_per_s": wall,
        f"{name}_episodes_per_cpu_s": cpu,
        f"{name}_time_share": split,
        f"{name}_mean_response_length": statistics.mean(m["response/length"] for m in timed),
    }


def bench_ppo(model: str, out: str, steps: int, prompt_tokens: int, full_length: bool) -> dict:
    from training.engine.config import PPOConfig
    from training.engine.ppo import run

    if full_length:
        model = random_copy(model, out)
    rng = random.Random(0)
    prompts = [text(rng, 60) for _ in range(16 * 8)]
    cfg = PPOConfig(
        policy_path=model,
        reward_model_path=reward_model_beside(model, out),
        output_dir=str(Path(out) / "run"),
        total_episodes=16 * (steps + WARMUP_STEPS + 1),
        batch_size=16,
        mini_batch_size=16,
        ppo_epochs=4,
        max_prompt_length=prompt_tokens,
        max_new_tokens=32,
        checkpoint_every=0,
        # Every computation runs (the optimizer steps too), but the policy stays put, so each run
        # samples the same responses and does the same work whatever the reward model says (the
        # value model may learn: PPOConfig refuses value_lr 0, and it changes no sample).
        lr=0.0,
    )
    timer = Timer()
    run(cfg, {"prompts": prompts}, on_progress=timer)
    return online_figures("ppo", timer, 16)


def bench_dpo(model: str, out: str, steps: int, k: int = 4) -> dict:
    """48 pairs per step: 8 rankings of K = 4 (32 sequences), or with k=2 (stage dpo2) 48 rankings
    of K = 2, TRL's own pair-per-row work (96 sequences: nothing shared between pairs)."""
    from training.engine.config import DPOConfig
    from training.engine.dpo import run

    rankings_per_step = 48 // math.comb(k, 2)
    rng = random.Random(0)
    rankings = [
        {
            "prompt": text(rng, 60),
            "completions": [text(rng, 60) for _ in range(k)],
            "ranks": rng.sample(range(k), k),  # no ties: C(k,2) pairs per ranking
        }
        for _ in range(rankings_per_step * 8)
    ]
    cfg = DPOConfig(
        model_path=model,
        output_dir=out,
        batch_size=rankings_per_step,
        max_length=64,  # prompts cut to 32 tokens, completions to the other 32
        max_steps=steps + WARMUP_STEPS + 1,
        val_fraction=0.0,
        checkpoint_every=0,
        eval_every=10**9,
    )
    timer = Timer()
    run(cfg, {"rankings": rankings}, on_progress=timer)
    wall, cpu = timer.rates(48)
    return {"dpo_pairs_per_s": wall, "dpo_pairs_per_cpu_s": cpu}


def bench_critic_free_vs_trl(model: str, out: str, steps: int, estimator: str) -> dict:
    """Our critic-free loop on bench/trl_reference.py's GRPO/RLOO work per step."""
    from training.engine import critic_free
    from training.engine.config import CriticFreeConfig
    from training.engine.lm import load_tokenizer
    from training.engine.precision import resolve_device
    from training.engine.reward_model import RewardModel

    model = random_copy(model, out)  # every response the full 32 tokens, as TRL's random GPT-2
    tokenizer = load_tokenizer(model)
    reward_dir = Path(out) / "reward-model"
    RewardModel.from_causal_lm(model, tokenizer, resolve_device("auto")).save_pretrained(
        reward_dir, tokenizer
    )
    rng = random.Random(0)
    prompts = [text(rng, 60) for _ in range(4 * 8)]
    cfg = CriticFreeConfig(
        policy_path=model,
        reward_model_path=str(reward_dir),
        output_dir=str(Path(out) / "run"),
        estimator=estimator,
        group_size=4,
        batch_size=4,  # prompts per step: 16 responses
        mini_batch_size=16,
        update_epochs=1,  # TRL's num_iterations 1
        total_episodes=4 * (steps + WARMUP_STEPS + 1),
        max_prompt_length=16,
        max_new_tokens=32,
        temperature=1.0,
        kl_coef=0.04,  # > 0: the reference runs, as TRL's beta 0.04
        checkpoint_every=0,
        lr=0.0,  # every computation runs, the samples are the same every run (as PPO's stage)
    )
    timer = Timer()
    critic_free.run(cfg, {"prompts": prompts}, on_progress=timer)
    wall, cpu = timer.rates(16)
    timed = timer.timed_metrics()
    return {
        "episodes_per_s": wall,
        "episodes_per_cpu_s": cpu,
        "mean_response_length": statistics.mean(m.get("response/length", 32) for m in timed),
    }


STAGES = {
    "sft": bench_sft,
    "reward": bench_reward,
    "dpo": bench_dpo,
    "dpo2": lambda model, out, steps: bench_dpo(model, out, steps, k=2),
}


def child(stage: str, model: str, steps: int, threads: int, prompt_tokens: int) -> None:
    import torch
    from transformers.utils import logging

    from training.engine.precision import peak_memory_mb, resolve_device

    logging.disable_progress_bar()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as out:
        if stage in ("ppo", "ppo32"):
            figures = bench_ppo(model, out, steps, prompt_tokens, full_length=stage == "ppo32")
        elif stage in ("grpo", "rloo"):
            figures = bench_critic_free_vs_trl(model, out, steps, stage)
        else:
            figures = STAGES[stage](model, out, steps)
    figures["peak_memory_mb"] = peak_memory_mb(resolve_device("auto"))
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: var/models/tiny-base)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per stage")
    parser.add_argument("--stages", default="sft,reward,ppo,ppo32")
    parser.add_argument("--ppo-prompt-tokens", type=int, default=16, help="PPO prompt length")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    model = args.model or next((str(p) for p in DEFAULT_MODELS if p.is_dir()), None)
    if model is None:
        sys.exit(f"no model: pass --model or create one of {[str(p) for p in DEFAULT_MODELS]}")
    if args.child:
        child(args.child, model, args.steps, args.threads, args.ppo_prompt_tokens)
        return

    import torch

    print(f"model {model}; torch {torch.__version__}; threads {args.threads}; ", end="")
    print(f"device {'cuda' if torch.cuda.is_available() else 'cpu'}; load {os.getloadavg()[0]:.2f}")
    for stage in args.stages.split(","):
        command = [sys.executable, __file__, "--model", model, "--child", stage]
        command += ["--threads", str(args.threads), "--steps", str(args.steps)]
        command += ["--ppo-prompt-tokens", str(args.ppo_prompt_tokens)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"{stage} failed:\n{done.stderr}")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        if stage in ("dpo", "dpo2"):
            print(
                f"{stage.upper():7} {figures['dpo_pairs_per_s']:9,.1f} pairs/s"
                f"  ({figures['dpo_pairs_per_cpu_s']:,.1f} pairs per CPU-s)",
                end="",
            )
        elif stage in ("grpo", "rloo"):
            print(
                f"{stage.upper():7} {figures['episodes_per_s']:9,.1f} episodes/s"
                f"  ({figures['episodes_per_cpu_s']:,.1f} per CPU-s; mean response"
                f" {figures['mean_response_length']:.1f} tokens)",
                end="",
            )
        elif stage == "sft":
            print(
                f"SFT     {figures['sft_tokens_per_s']:9,.0f} tokens/s"
                f"  ({figures['sft_tokens_per_cpu_s']:,.0f} per CPU-s)",
                end="",
            )
        elif stage == "reward":
            print(
                f"reward  {figures['reward_rankings_per_s']:9,.1f} rankings/s"
                f"  {figures['reward_pairs_per_s']:7,.0f} pairs/s"
                f"  ({figures['reward_pairs_per_cpu_s']:,.0f} pairs per CPU-s)",
                end="",
            )
        else:
            name, label = "ppo", stage.upper()
            share = figures[f"{name}_time_share"]
            print(
                f"{label:7} {figures[f'{name}_episodes_per_s']:9,.1f} episodes/s"
                f"  ({figures[f'{name}_episodes_per_cpu_s']:,.1f} per CPU-s; "
                f"generation {share['generation']:.0%}, scoring {share['scoring']:.0%}, "
                f"update {share['update']:.0%}; mean response "
                f"{figures[f'{name}_mean_response_length']:.1f} tokens)",
                end="",
            )
        print(f"  peak memory {figures['peak_memory_mb']:,.0f} MiB")


if __name__ == "__main__":
    main()
