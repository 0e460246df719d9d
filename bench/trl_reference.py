"""TRL's own throughput on the work of bench/training.py, on this machine, to compare side by side.

In a separate venv (never install trl into the project's own), the CPU torch wheel first:

    python3 -m venv /tmp/trl-venv && /tmp/trl-venv/bin/pip install torch==2.13.0
    /tmp/trl-venv/bin/pip install trl==1.16.0 'transformers==5.25.*' -c <(echo torch==2.13.0)
    /tmp/trl-venv/bin/python bench/trl_reference.py [--stages sft,reward,dpo,grpo,rloo] [--steps N]

Model: a randomly initialised GPT-2 with var/models/tiny-base's config and tokenizer, fp32. SFT:
batch 16 x 128 tokens (loss on 96). Reward, DPO: 48 pairs per step, each side 32 prompt + 32
completion tokens (DPO: the reference's log-probs precomputed, as ours). GRPO, RLOO: 4 prompts of
16 tokens x 4 generations of 32 new tokens, num_iterations 1, beta 0.04, a GPT-2 sequence
classifier as reward model. PPO (trl 1.12 only: 1.16 dropped trl.experimental.ppo): 16 prompts x
32 new tokens, 4 epochs, one minibatch. TRL gets its fastest honest settings (no gradient
checkpointing, bf16/fp16, accumulation, logging, eval, saving or dataloader workers; data
pre-tokenized at exact lengths where TRL allows). Prints work per step / the median wall time
between `on_step_end` calls after --warmup steps ("per CPU-s": / its process CPU time).
--ppo-skip-gc turns TRL PPO's two hard-coded gc.collect() per step into no-ops (not stock TRL).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import statistics
import sys
import tempfile
import time
import types
import warnings
from itertools import pairwise
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PrinterCallback,
    TrainerCallback,
)

MODEL = Path(__file__).resolve().parent.parent / "var/models/tiny-base"
# Settings shared by every trainer: fp32, no checkpointing, nothing but the training steps.
COMMON = {
    "bf16": False,
    "fp16": False,
    "gradient_checkpointing": False,
    "gradient_accumulation_steps": 1,
    "logging_strategy": "no",
    "save_strategy": "no",
    "eval_strategy": "no",
    "report_to": "none",
    "disable_tqdm": True,
    "dataloader_num_workers": 0,
    "use_cpu": True,
    "seed": 0,
}


class Timer(TrainerCallback):
    """Stamps wall and process CPU time after every optimizer step (PPO: every rollout + update)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def median_step(self, clock: str = "wall") -> float:
        """The median step's seconds after the warm-up; "cpu": its process CPU seconds (as in
        bench/training.py's "per CPU-s", less at the mercy of other processes)."""
        stamps = getattr(self, clock)[self.warmup :]
        return statistics.median(b - a for a, b in pairwise(stamps))


def train(trainer) -> None:
    """Train without printing the logs (PPO logs its metrics every step)."""
    trainer.remove_callback(PrinterCallback)
    with contextlib.redirect_stdout(io.StringIO()):  # and PPO's "===training policy==="
        trainer.train()


def token_ids(tokenizer, n: int, seed: int) -> list[int]:
    """`n` ids of ordinary text (a seeded shuffle of the vocabulary, special tokens left out)."""
    special = set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in special]
    g = torch.Generator().manual_seed(seed)
    return [ids[i] for i in torch.randint(len(ids), (n,), generator=g).tolist()]


def models(model_dir: Path):
    config = AutoConfig.from_pretrained(model_dir)
    config._attn_implementation = "sdpa"  # what our training loads

    def policy():
        return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")

    def scorer():
        cfg = AutoConfig.from_pretrained(model_dir, num_labels=1)
        return AutoModelForSequenceClassification.from_config(cfg, attn_implementation="sdpa")

    return policy, scorer


def bench_sft(model_dir: Path, tokenizer, out: str, steps: int, warmup: int) -> str:
    import datasets
    from trl import SFTConfig, SFTTrainer

    policy, _ = models(model_dir)
    rows = [
        {"input_ids": token_ids(tokenizer, 128, i), "completion_mask": [0] * 32 + [1] * 96}
        for i in range(16 * 8)
    ]
    args = SFTConfig(
        output_dir=out,
        per_device_train_batch_size=16,
        max_length=128,
        max_steps=warmup + steps + 1,
        completion_only_loss=True,
        **COMMON,
    )
    timer = Timer(warmup)
    trainer = SFTTrainer(
        model=policy(),
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[timer],
    )
    train(trainer)
    return (
        f"TRL SFT     {16 * 128 / timer.median_step():9,.0f} tokens/s"
        f"  ({16 * 128 / timer.median_step('cpu'):,.0f} per CPU-s; loss_type {args.loss_type})"
    )


def bench_reward(model_dir: Path, tokenizer, out: str, steps: int, warmup: int) -> str:
    import datasets
    from trl import RewardConfig, RewardTrainer

    _, scorer = models(model_dir)
    rows = []
    for i in range(48 * 8):
        prompt = token_ids(tokenizer, 32, 3 * i)
        rows.append(
            {
                "chosen_ids": prompt + token_ids(tokenizer, 32, 3 * i + 1),
                "rejected_ids": prompt + token_ids(tokenizer, 32, 3 * i + 2),
            }
        )
    args = RewardConfig(
        output_dir=out, per_device_train_batch_size=48, max_steps=warmup + steps + 1, **COMMON
    )
    timer = Timer(warmup)
    model = scorer()
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[timer],
    )
    train(trainer)
    pairs, cpu = 48 / timer.median_step(), 48 / timer.median_step("cpu")
    return f"TRL reward  {pairs / 6:9,.1f} rankings/s  {pairs:7,.0f} pairs/s  ({cpu:,.0f} pairs per CPU-s)"


def bench_ppo(
    model_dir: Path, tokenizer, out: str, steps: int, warmup: int, skip_gc: bool = False
) -> str:
    import datasets
    from trl.experimental.ppo import PPOConfig, PPOTrainer, ppo_trainer

    policy, scorer = models(model_dir)
    generation = []  # (seconds, new tokens) of each rollout's generate()
    batch_generation = ppo_trainer.batch_generation

    def timed_generation(model, queries, *args, **kwargs):
        start = time.perf_counter()
        query_responses, logits = batch_generation(model, queries, *args, **kwargs)
        generation.append(
            (time.perf_counter() - start, query_responses.shape[1] - queries.shape[1])
        )
        return query_responses, logits

    ppo_trainer.batch_generation = timed_generation
    # TRL's PPO loop calls gc.collect() twice per step (hard-coded): --ppo-skip-gc shows its cost.
    ppo_trainer.gc = types.SimpleNamespace(collect=lambda: 0) if skip_gc else gc
    prompts = [{"input_ids": token_ids(tokenizer, 16, i)} for i in range(16 * 8)]
    total = warmup + steps + 1
    args = PPOConfig(
        output_dir=out,
        per_device_train_batch_size=16,
        num_mini_batches=1,
        total_episodes=16 * total,
        num_ppo_epochs=4,
        response_length=32,
        stop_token=None,  # no stop token: all 32 tokens are generated, every episode
        stop_token_id=None,
        temperature=1.0,  # our PPO's sampling temperature
        num_sample_generations=0,
        **COMMON,
    )
    timer = Timer(warmup)
    torch.manual_seed(0)
    trainer = PPOTrainer(
        args=args,
        processing_class=tokenizer,
        model=policy(),
        ref_model=None,  # TRL makes a frozen copy of the policy
        reward_model=scorer(),
        value_model=scorer(),
        train_dataset=datasets.Dataset.from_list(prompts),
        callbacks=[timer],
    )
    train(trainer)
    ppo_trainer.batch_generation, ppo_trainer.gc = batch_generation, gc
    # generate()'s share of the timed steps' wall time; the rest: the reference, value and
    # reward forwards (TRL takes the policy's log-probs from generate's scores), advantages, the 4 PPO epochs, TRL's per-step metrics
    share = sum(s for s, _ in generation[warmup + 1 :]) / (timer.wall[-1] - timer.wall[warmup])
    return (
        f"{'TRL PPO (no gc)' if skip_gc else 'TRL PPO':12}{16 / timer.median_step():9,.1f} episodes/s"
        f"  ({16 / timer.median_step('cpu'):,.1f} per CPU-s; generation {share:.0%},"
        f" rest {1 - share:.0%}; {statistics.mean(n for _, n in generation):.1f} new tokens)"
    )


def random_policy(model_dir: Path, tokenizer, out: str) -> str:
    """A randomly initialised policy saved under `out` (seeded): GRPO and RLOO build their frozen
    reference by loading the policy's path, so both must start from the same saved weights."""
    policy, _ = models(model_dir)
    torch.manual_seed(0)
    path = str(Path(out) / "random-policy")
    policy().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def prompt_text(tokenizer, n: int, seed: int) -> str:
    """Text that the tokenizer encodes as exactly `n` tokens (GRPO and RLOO take prompts as text)."""
    g = torch.Generator().manual_seed(seed)
    words: list[str] = []
    while True:
        length = len(tokenizer(" ".join(words))["input_ids"])
        if length == n:
            return " ".join(words)
        if length > n:
            words = []
        else:
            words.append(WORDS[int(torch.randint(len(WORDS), (1,), generator=g))])


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
    "under",
    "over",
    "near",
    "after",
    "and",
    "but",
    "with",
]


def bench_dpo(model_dir: Path, tokenizer, out: str, steps: int, warmup: int) -> str:
    import datasets
    from trl import DPOConfig, DPOTrainer

    class PreTokenized(DPOTrainer):
        """The rows come tokenized at exact lengths (no EOS appended): only the setup is skipped."""

        def _prepare_dataset(self, dataset, *args, **kwargs):
            return dataset

    policy, _ = models(model_dir)
    # The pairs of bench/training.py's DPO stage: 8 rankings of K = 4 completions per step, each
    # 32 prompt + 32 completion tokens, give C(4,2) = 6 pairs each, 48 pairs per step. TRL takes
    # pairs, so a step is 48 (chosen, rejected) rows of the same shape: 96 sequences of 64 tokens.
    rows = []
    for i in range(8 * 8):
        prompt = token_ids(tokenizer, 32, 5 * i)
        completions = [token_ids(tokenizer, 32, 5 * i + 1 + k) for k in range(4)]
        for better in range(4):
            for worse in range(better + 1, 4):
                rows.append(
                    {
                        "prompt_ids": prompt,
                        "chosen_ids": completions[better],
                        "rejected_ids": completions[worse],
                    }
                )
    args = DPOConfig(
        output_dir=out,
        per_device_train_batch_size=48,
        max_length=64,
        max_steps=warmup + steps + 1,
        # The reference's log-probs once, before training, as our DPO does: a step is one policy
        # forward and backward on both sides of every pair, with no reference forward.
        precompute_ref_log_probs=True,
        precompute_ref_batch_size=48,
        learning_rate=1e-6,  # our DPOConfig's default (TRL's too)
        beta=0.1,
        **COMMON,
    )
    timer = Timer(warmup)
    trainer = PreTokenized(
        model=policy(),
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[timer],
    )
    train(trainer)
    pairs, cpu = 48 / timer.median_step(), 48 / timer.median_step("cpu")
    return f"TRL DPO     {pairs:9,.1f} pairs/s  ({cpu:,.1f} pairs per CPU-s; 96 sequences x 64 tokens/step)"


def bench_critic_free(
    model_dir: Path, tokenizer, out: str, steps: int, warmup: int, estimator: str
) -> str:
    """GRPOTrainer or RLOOTrainer: 4 prompts of 16 tokens x 4 generations = 16 completions of 32
    new tokens per step (one generation and one optimizer step on all 16: num_iterations 1), scored
    by a GPT-2 sequence classifier, KL to a frozen reference (beta > 0, so it runs)."""
    import datasets

    if estimator == "grpo":
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer

    _, scorer = models(model_dir)
    path = random_policy(model_dir, tokenizer, out)
    total = warmup + steps + 1
    prompts = [{"prompt": prompt_text(tokenizer, 16, i)} for i in range(4 * total)]
    args = Config(
        output_dir=str(Path(out) / "run"),
        model_init_kwargs={"dtype": torch.float32, "attn_implementation": "sdpa"},
        per_device_train_batch_size=16,  # completions per optimizer step
        num_generations=4,
        max_completion_length=32,
        temperature=1.0,
        num_iterations=1,
        beta=0.04,  # > 0: the frozen reference's forward runs every step (GRPO's default is 0)
        learning_rate=1e-6,
        max_steps=total,
        log_completions=False,
        **COMMON,
    )
    timer = Timer(warmup)
    generation = []  # seconds of each step's generate()

    trainer = Trainer(
        model=path,
        reward_funcs=scorer(),
        args=args,
        train_dataset=datasets.Dataset.from_list(prompts),
        processing_class=tokenizer,
        reward_processing_classes=tokenizer,
        callbacks=[timer],
    )
    generate = trainer.model.generate

    def timed_generate(*a, **k):
        start = time.perf_counter()
        result = generate(*a, **k)
        generation.append((time.perf_counter() - start, result.shape[1] - k["input_ids"].shape[1]))
        return result

    trainer.model.generate = timed_generate
    train(trainer)
    timed = generation[warmup + 1 :]
    share = sum(s for s, _ in timed) / (timer.wall[-1] - timer.wall[warmup])
    name = "TRL GRPO" if estimator == "grpo" else "TRL RLOO"
    return (
        f"{name:12}{16 / timer.median_step():9,.1f} episodes/s"
        f"  ({16 / timer.median_step('cpu'):,.1f} per CPU-s; generation {share:.0%},"
        f" rest {1 - share:.0%}; {statistics.mean(n for _, n in generation):.1f} new tokens)"
    )


def bench_grpo(model_dir: Path, tokenizer, out: str, steps: int, warmup: int) -> str:
    return bench_critic_free(model_dir, tokenizer, out, steps, warmup, "grpo")


def bench_rloo(model_dir: Path, tokenizer, out: str, steps: int, warmup: int) -> str:
    return bench_critic_free(model_dir, tokenizer, out, steps, warmup, "rloo")


STAGES = {
    "sft": bench_sft,
    "reward": bench_reward,
    "ppo": bench_ppo,
    "dpo": bench_dpo,
    "grpo": bench_grpo,
    "rloo": bench_rloo,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODEL, help="config + tokenizer directory")
    parser.add_argument("--stages", default="sft,reward,dpo,grpo,rloo")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per stage")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per stage")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--ppo-skip-gc",
        action="store_true",
        help="no-op TRL's per-step gc.collect() (not stock TRL)",
    )
    args = parser.parse_args()
    try:
        import datasets
        import trl
    except ImportError as missing:
        sys.exit(
            f"trl or one of its dependencies is missing ({missing}); pip install trl==1.16.0 in a separate venv: python3 -m venv /tmp/trl-venv && "
            "/tmp/trl-venv/bin/pip install torch==2.13.0 && /tmp/trl-venv/bin/pip install trl==1.16.0 "
            "'transformers==5.25.*' -c <(echo torch==2.13.0)  (see this file's docstring)"
        )

    os.environ.setdefault(
        "TRL_EXPERIMENTAL_SILENCE", "1"
    )  # trl 1.12: PPO lives in trl.experimental
    warnings.filterwarnings("ignore", category=FutureWarning)  # gradient_checkpointing's rename
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    print(
        f"trl {trl.__version__}; transformers {transformers.__version__}; torch {torch.__version__};"
        f" threads {torch.get_num_threads()}; model config {args.model}"
    )
    for stage in args.stages.split(","):
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as out:
            extra = {"skip_gc": args.ppo_skip_gc} if stage == "ppo" else {}
            print(
                STAGES[stage](args.model, tokenizer, out, args.steps, args.warmup, **extra),
                flush=True,
            )


if __name__ == "__main__":
    main()
