"""bench/closed_loop.py's training path offline (no database, no HTTP), each stage cached on disk.

    python bench/loop_offline.py --out DIR [--episodes 16384] [--reward rm|zero|gold] [--tag NAME]
    python bench/loop_offline.py --out DIR --after NAME --tag NAME2   # a second round after NAME

For trying PPO and reward-model settings quickly: the same prompts and test split as the bench
(`families.sample_prompts(--prompts, seed)`, split by content hash as `services.split_for`
does for a project's defaults), simulated demonstrations, SFT, 8 SFT samples per train prompt
with the first K distinct ranked by two simulated labelers each (the crowd calibrated on those
tasks), the reward model, then PPO(-ptx) against the reward model, a zero reward (what ptx alone
does) or the gold judge (a perfect reward model). Both policies then answer the test prompts
--eval-k times at T=0.7; it prints the gold win rate of the first sample per prompt (what the
bench measures) and of all of them (a tighter estimate, clustered by prompt), the mean gold
quality per family, and stage times. Stages whose run directory under --out already finished are
reused, so PPO variants share one SFT and reward model (give each a --tag).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from training.demo import families  # noqa: E402
from training.demo.crowd import gold_win_rate, make_crowd  # noqa: E402
from training.engine import ppo, reward, sample, sft  # noqa: E402
from training.engine.config import PPOConfig, RewardConfig, SampleConfig, SFTConfig  # noqa: E402
from training.engine.lm import load_tokenizer  # noqa: E402
from training.engine.reward_model import RewardModel  # noqa: E402


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _split(text: str) -> str:
    """A project's split with the default 10% valid and 10% test (`services.split_for` keyed by
    the imported prompt's content hash)."""
    canonical = json.dumps(_messages(text), sort_keys=True, separators=(",", ":"))
    content_hash = hashlib.sha256(canonical.encode()).hexdigest()
    bucket = int(hashlib.sha256(content_hash.encode()).hexdigest()[:8], 16) % 100
    return "test" if bucket < 10 else ("valid" if bucket < 20 else "train")


def demo_data(n_prompts: int, seed: int) -> tuple[list[str], list[str], list[dict]]:
    """The bench's train and test prompts (`families.sample_prompts(n, seed)`, split as a
    project does) and the crowd's demonstrations of every non-test prompt: (train, test, demos)."""
    prompts = families.sample_prompts(n_prompts, seed=seed)
    train = [p for p in prompts if _split(p) == "train"]
    test = [p for p in prompts if _split(p) == "test"]
    rng = random.Random(seed)
    crowd = make_crowd(6, agreement=0.73, seed=seed)
    demos = [
        {"prompt": _messages(p), "completion": crowd[i % 6].write_demonstration(p, rng)}
        for i, p in enumerate(p for p in prompts if _split(p) != "test")
    ]
    return train, test, demos


def ranking_data(
    out: Path, sft_model: Path, train: list[str], k: int, rank_samples: int, seed: int
) -> tuple[list[tuple[str, list[str]]], list[dict]]:
    """`rank_samples` SFT samples per train prompt (cached under `out`), the first k distinct of
    each a task, ranked by two simulated labelers each (the crowd calibrated on those tasks):
    (tasks, rankings)."""
    samples = sample.run(
        SampleConfig(output_dir=str(out / f"rank-samples-{rank_samples}"),
                     model_path=str(sft_model), k=rank_samples, temperature=1.0,
                     max_new_tokens=48, checkpoint_every=0),
        {"prompts": [{"prompt": _messages(p)} for p in train]},
    )["samples"]  # fmt: skip
    groups: dict[int, list[str]] = defaultdict(list)
    for s in sorted(samples, key=lambda s: s["sample_index"]):
        group = groups[s["prompt_index"]]
        if s["completion"] not in group and len(group) < k:
            group.append(s["completion"])
    tasks = [(train[i], group) for i, group in groups.items() if len(group) == k]
    rank_crowd = make_crowd(6, agreement=0.73, seed=seed + 1, rankings=tasks[:500])
    rank_rng = random.Random(seed + 1)
    rankings = [
        {"prompt": _messages(p), "completions": group,
         "ranks": [e.rank for e in labeler.rank(p, group, rank_rng)]}
        for p, group in tasks
        for labeler in rank_rng.sample(rank_crowd, 2)
    ]  # fmt: skip
    return tasks, rankings


def round_rankings(
    out: Path, policy: Path, sft_model: Path, train: list[str], tasks: list, seed: int
) -> list[dict]:
    """A platform round's ranking tasks after PPO: `policy` and the SFT policy sample 2 answers
    each per train prompt at T=1 (`labeling.rounds` with rank_sample temperature 1.0), prompts
    with 4 distinct answers become tasks, ranked by two simulated labelers each."""
    groups: dict[int, list[str]] = defaultdict(list)
    for model in (policy, sft_model):
        samples = sample.run(
            SampleConfig(output_dir=str(policy.parent / f"round-samples-{model.parent.name}"),
                         model_path=str(model), k=2, temperature=1.0, max_new_tokens=48,
                         checkpoint_every=0),
            {"prompts": [{"prompt": _messages(p)} for p in train]},
        )["samples"]  # fmt: skip
        for s in sorted(samples, key=lambda s: s["sample_index"]):
            groups[s["prompt_index"]].append(s["completion"])
    more = [(train[i], g) for i, g in sorted(groups.items()) if len(set(g)) == 4]
    crowd = make_crowd(6, agreement=0.73, seed=seed + 3, rankings=tasks[:500])
    rng = random.Random(seed + 3)
    return [
        {"prompt": _messages(p), "completions": group,
         "ranks": [e.rank for e in labeler.rank(p, group, rng)]}
        for p, group in more
        for labeler in rng.sample(crowd, 2)
    ]  # fmt: skip


def _answers(model: Path, prompts: list[str], out: Path, k: int) -> list[list[str]]:
    """k answers per prompt at T=0.7 (the bench's A/B temperature).  # (k, prompts)"""
    cfg = SampleConfig(
        output_dir=str(out), model_path=str(model), k=k, temperature=0.7, max_new_tokens=48,
        checkpoint_every=0,
    )  # fmt: skip
    samples = sample.run(cfg, {"prompts": [{"prompt": _messages(p)} for p in prompts]})["samples"]
    rows = [[""] * len(prompts) for _ in range(k)]
    for s in samples:
        rows[s["sample_index"]][s["prompt_index"]] = s["completion"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", required=True, help="run folder (finished stages are reused)")
    parser.add_argument("--tag", default="ppo", help="the PPO run's folder name under --out")
    parser.add_argument("--model", default=str(ROOT / "var" / "models" / "tiny-base"))
    parser.add_argument("--seed", type=int, default=0, help="prompts and crowd, as the bench's")
    parser.add_argument("--prompts", type=int, default=1500)
    parser.add_argument("--sft-steps", type=int, default=150)
    parser.add_argument("--k", type=int, default=4, help="outputs per ranking")
    parser.add_argument("--rank-samples", type=int, default=8)
    parser.add_argument("--rm-lr", type=float, default=1e-3)
    parser.add_argument("--rm-epochs", type=int, default=1)
    parser.add_argument("--reward", default="rm", choices=("rm", "zero", "gold"))
    parser.add_argument("--episodes", type=int, default=16384)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--kl-coef", type=float, default=0.2)
    parser.add_argument("--ptx", type=float, default=1.0)
    parser.add_argument("--ptx-batch-size", type=int, default=8)
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="PPO's sampling (and log-prob) temperature"
    )
    parser.add_argument("--zero-value-head", action="store_true", help="value head starts at 0")
    parser.add_argument("--eval-k", type=int, default=4, help="answers per test prompt")
    parser.add_argument(
        "--after", metavar="TAG",
        help="a second round after the finished PPO run TAG, as a platform round from it: TAG's "
        "policy and SFT sample 2 answers each per train prompt (T=1), the 4 distinct are ranked, "
        "the reward model trains on all rankings from TAG's policy, PPO starts from TAG's policy",
    )  # fmt: skip
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    times: dict[str, float] = {}

    train, test, demos = demo_data(args.prompts, args.seed)
    started = time.monotonic()
    sft.run(
        SFTConfig(output_dir=str(out / "sft"), model_path=args.model, max_steps=args.sft_steps,
                  batch_size=16, lr=1e-3, checkpoint_every=0),
        {"demonstrations": demos},
    )  # fmt: skip
    sft_model = out / "sft" / "model"
    times["sft"] = time.monotonic() - started

    started = time.monotonic()
    tasks, rankings = ranking_data(out, sft_model, train, args.k, args.rank_samples, args.seed)
    epochs = "" if args.rm_epochs == 1 else f"-e{args.rm_epochs}"
    rm_dir = out / f"rm-k{args.k}-{args.rank_samples}-lr{args.rm_lr}{epochs}"
    start = sft_model
    if args.after:
        start = out / args.after / "model"
        more = round_rankings(out, start, sft_model, train, tasks, args.seed)
        print(f"round 2: {len(more) // 2} ranking tasks from {args.after} and SFT", flush=True)
        rankings, rm_dir = rankings + more, out / f"rm-after-{args.after}-lr{args.rm_lr}{epochs}"
    rm = reward.run(
        RewardConfig(output_dir=str(rm_dir), model_path=str(start), epochs=args.rm_epochs,
                     lr=args.rm_lr,
                     batch_size=8, checkpoint_every=0),
        {"rankings": rankings, "demonstrations": demos},
    )  # fmt: skip
    times["rankings + reward model"] = time.monotonic() - started
    print(f"{len(rankings) // 2} ranking tasks, {len(rankings)} rankings; RM held-out pair accuracy "
          f"{rm['metrics']['val/pair_accuracy']:.3f}", flush=True)  # fmt: skip

    reward_fns = {
        "zero": lambda ps, ts: [0.0] * len(ts),
        "gold": lambda ps, ts: [families.judge(p, t).quality for p, t in zip(ps, ts, strict=True)],
    }
    value_dir = None
    if args.zero_value_head:
        value_dir = out / f"{rm_dir.name}-zero-value-head"
        tokenizer = load_tokenizer(str(sft_model))
        init = str(rm_dir / "model") if args.reward == "rm" else str(start)
        value = (
            RewardModel.from_pretrained(init, tokenizer, torch.device("cpu"))
            if args.reward == "rm"
            else RewardModel.from_causal_lm(init, tokenizer, torch.device("cpu"))
        )
        torch.nn.init.zeros_(value.head.weight)
        torch.nn.init.zeros_(value.head.bias)
        value.save_pretrained(value_dir, tokenizer)
    started, cpu_started = time.monotonic(), time.process_time()
    policy_dir = out / args.tag
    result = ppo.run(
        PPOConfig(output_dir=str(policy_dir), policy_path=str(start),
                  reward_model_path=str(rm_dir / "model") if args.reward == "rm" else None,
                  value_model_path=str(value_dir) if value_dir else None,
                  total_episodes=args.episodes, lr=args.lr, value_lr=1e-4,
                  batch_size=args.batch_size, kl_coef=args.kl_coef, max_new_tokens=32,
                  ptx_coef=args.ptx, ptx_batch_size=args.ptx_batch_size,
                  temperature=args.temperature, checkpoint_every=0),
        {"prompts": [{"prompt": _messages(p)} for p in train], "demonstrations": demos},
        reward_fn=reward_fns.get(args.reward),
    )  # fmt: skip
    times["ppo"] = time.monotonic() - started
    times["ppo (CPU)"] = time.process_time() - cpu_started

    started = time.monotonic()
    old = _answers(sft_model, test, out / f"eval-sft-k{args.eval_k}", args.eval_k)
    new = _answers(policy_dir / "model", test, policy_dir / f"eval-k{args.eval_k}", args.eval_k)
    times["evaluation"] = time.monotonic() - started
    first, every = gold_win_rate(test, new[:1], old[:1]), gold_win_rate(test, new, old)
    by_family: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for new_row, old_row in zip(new, old, strict=True):
        for prompt, a, b in zip(test, new_row, old_row, strict=True):
            family = by_family[families.family_of(prompt) or "other"]
            family[0] += families.judge(prompt, b).quality
            family[1] += families.judge(prompt, a).quality
            family[2] += 1
    history = result["history"]
    print(f"\n# bench/loop_offline.py {args.tag}: {vars(args)}")
    print(f"gold win rate over SFT, first answer per test prompt: {first.rate:.3f} "
          f"[{first.low:.3f}, {first.high:.3f}] over {first.n} prompts")  # fmt: skip
    print(f"gold win rate over SFT, {args.eval_k} answers per prompt: {every.rate:.3f} "
          f"[{every.low:.3f}, {every.high:.3f}] (W/T/L {every.wins}/{every.ties}/{every.losses})")  # fmt: skip
    print("mean gold quality SFT -> PPO: " + ", ".join(
        f"{name} {q_old / n:.2f}->{q_new / n:.2f}"
        for name, (q_old, q_new, n) in sorted(by_family.items())
    ))  # fmt: skip
    last = history[-1]
    first_scores = [h["reward/score"] for h in history[:8]]
    last_scores = [h["reward/score"] for h in history[-8:]]
    print(f"PPO: score first/last 8 steps {sum(first_scores) / len(first_scores):.3f}"
          f"/{sum(last_scores) / len(last_scores):.3f}, KL {last['kl/k1']:.2f}, "
          f"entropy {last['policy/entropy']:.2f}, ptx loss {last.get('loss/ptx', float('nan')):.3f}")  # fmt: skip
    print("times: " + ", ".join(f"{name} {s:.0f} s" for name, s in times.items())
          + f", total {time.monotonic() - t0:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
