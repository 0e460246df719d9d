"""bench/closed_loop.py's training path offline (no database, no HTTP), each stage cached on disk.

    python bench/loop_study.py ppo --out DIR [--reward rm|zero|gold|the] [--tag NAME] [--after TAG]
    python bench/loop_study.py ceiling --out DIR [--rewards gold,rm,the]
    python bench/loop_study.py rm-probe --out DIR VARIANT [VARIANT ...]   # e.g. lr=3e-4,epochs=3

Every mode builds the bench's world: its prompts split as a project splits them, simulated
demonstrations, SFT, --rank-samples SFT samples per train prompt whose first K distinct two
simulated labelers rank, a reward model. Finished stages under --out are reused (give runs a --tag).
  ppo       PPO(-ptx) against the reward model, a zero reward, the gold judge or "starts with 'The'";
            --after TAG is a second round from TAG's policy, its ranking tasks mixed as a round's.
            Prints the gold win rate over SFT on the test prompts (first answer; all --eval-k, with
            the 95% interval), mean gold quality per family, PPO's last metrics and stage times.
  ceiling   PPO with one setting against several rewards: train score, KL, gold quality, the win
            rate over SFT, and the oracle rate (a policy always perfect): what bounds the loop.
  rm-probe  reward-model VARIANTs (lr, epochs, init=sft|base, k, rank_samples, batch) without PPO:
            held-out pair accuracy, and on the SFT policy's test answers the Pearson correlation
            and within-prompt pair accuracy against the gold judge (what PPO uses).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # before bench/, whose training.py would shadow the package

import torch  # noqa: E402
from transformers.utils import logging  # noqa: E402

from bench.common import accuracy_text, django_setup  # noqa: E402

django_setup()  # the platform's split, distinct and mixing rules; no database is opened

from labeling.imports import parse_prompts  # noqa: E402
from labeling.models import Project, Split  # noqa: E402
from labeling.services import split_for  # noqa: E402
from training.demo import suites  # noqa: E402
from training.demo.crowd import gold_win_rate, make_crowd  # noqa: E402
from training.engine import ppo, reward, sample, sft  # noqa: E402
from training.engine.config import PPOConfig, RewardConfig, SampleConfig, SFTConfig  # noqa: E402
from training.engine.data import chunks, collate_sft, encode_demonstrations  # noqa: E402
from training.engine.lm import load_tokenizer  # noqa: E402
from training.engine.precision import autocast, to_device  # noqa: E402
from training.engine.reward_model import RewardModel  # noqa: E402
from training.rounds import ranking_sample_counts  # noqa: E402
from training.runs import ranking_groups  # noqa: E402
from training.selectors import held_out_accuracy_of  # noqa: E402

CPU = torch.device("cpu")
EVAL_TEMPERATURE = 0.7  # the bench's A/B answers
RewardFn = Callable[[list[str], list[str]], list[float]]


def reward_fns(task_suite: suites.Suite) -> dict[str, RewardFn]:
    """PPO's rewards besides the trained reward model ("rm"): what ptx alone does (zero), a
    perfect reward model (the suite's gold judge), and a reward any policy can learn (starts with
    "The")."""
    return {
        "zero": lambda ps, ts: [0.0] * len(ts),
        "gold": lambda ps, ts: [
            task_suite.judge(p, t).quality for p, t in zip(ps, ts, strict=True)
        ],
        "the": lambda ps, ts: [float(t.strip().startswith("The")) for t in ts],
    }


REWARDS = ("rm", "zero", "gold", "the")


@dataclass(frozen=True)
class Sample:
    """A sampled answer as the platform's ranking rules read a Completion."""

    prompt_id: int
    text: str


@dataclass(frozen=True)
class World:
    """The bench's prompts, demonstrations and SFT policy, under `out`."""

    out: Path
    suite: suites.Suite  # the task suite: its prompts, the crowd's judge and the gold judge
    train: list[str]
    test: list[str]
    demos: list[dict]
    sft: Path


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def project_splits(prompts: list[str]) -> list[str]:
    """Each prompt's split as a project with the default percentages assigns it on import."""
    project = Project()  # unsaved: only its default valid and test percentages are read
    lines = "\n".join(json.dumps({"prompt": p}) for p in prompts).encode()
    rows = parse_prompts("prompts.jsonl", lines, max_bytes=len(lines) + 1)
    return [
        split_for(  # keyed by content, as a prompt without an author is
            key=row.content_hash,
            valid_percent=project.valid_percent,
            test_percent=project.test_percent,
        )
        for row in rows
    ]


def build_world(args: argparse.Namespace) -> World:
    """The bench's prompts (the --suite's `sample_prompts(--prompts, --seed)`), the crowd's
    demonstrations of every non-test prompt, and SFT on them."""
    out = Path(args.out)
    task_suite = suites.suite(args.suite)
    prompts = task_suite.sample_prompts(args.prompts, seed=args.seed)
    splits = project_splits(prompts)
    rng = random.Random(args.seed)
    crowd = make_crowd(6, agreement=0.73, seed=args.seed, suite=args.suite)
    demos = [
        {"prompt": messages(p), "completion": crowd[i % 6].write_demonstration(p, rng)}
        for i, p in enumerate(p for p, s in zip(prompts, splits, strict=True) if s != Split.TEST)
    ]
    sft.run(
        SFTConfig(output_dir=str(out / "sft"), model_path=args.model, max_steps=args.sft_steps,
                  batch_size=16, lr=1e-3, checkpoint_every=0),
        {"demonstrations": demos},
    )  # fmt: skip
    return World(
        out=out,
        suite=task_suite,
        train=[p for p, s in zip(prompts, splits, strict=True) if s == Split.TRAIN],
        test=[p for p, s in zip(prompts, splits, strict=True) if s == Split.TEST],
        demos=demos,
        sft=out / "sft" / "model",
    )


def samples_of(model: Path, prompts: list[str], out: Path, k: int, temperature: float) -> list:
    """k samples per prompt (cached in `out`), in (prompt, sample) order: exactly k, repeats
    included (the study draws more than K itself where it wants distinct ones)."""
    cfg = SampleConfig(
        output_dir=str(out), model_path=str(model), k=k, temperature=temperature,
        max_new_tokens=48, checkpoint_every=0, resample_duplicates=0,
    )  # fmt: skip
    return sample.run(cfg, {"prompts": [{"prompt": messages(p)} for p in prompts]})["samples"]


def crowd_rankings(tasks: list, *, seed: int, calibration: list, suite: str) -> list[dict]:
    """Two simulated labelers of `suite` rank each (prompt, answers) task; the crowd is calibrated
    on the first 500 `calibration` tasks (real samples are closer in quality than synthetic ones)."""
    crowd = make_crowd(6, agreement=0.73, seed=seed, rankings=calibration[:500], suite=suite)
    rng = random.Random(seed)
    return [
        {"prompt": messages(p), "completions": group,
         "ranks": [e.rank for e in labeler.rank(p, group, rng)]}
        for p, group in tasks
        for labeler in rng.sample(crowd, 2)
    ]  # fmt: skip


def ranking_data(world: World, k: int, rank_samples: int, seed: int) -> tuple[list, list[dict]]:
    """`rank_samples` SFT samples per train prompt at T=1; the first k distinct of each make a
    task when at least 2 differ, as a sampling run's do (`training.runs.ranking_groups`):
    (tasks, rankings)."""
    out = world.out / f"rank-samples-{rank_samples}"
    samples = [
        Sample(s["prompt_index"], s["completion"])
        for s in samples_of(world.sft, world.train, out, rank_samples, 1.0)
    ]
    groups = ranking_groups(samples, k=k).groups  # reads .prompt_id and .text, as of a Completion
    tasks = [(world.train[g[0].prompt_id], [s.text for s in g]) for g in groups]
    return tasks, crowd_rankings(tasks, seed=seed + 1, calibration=tasks, suite=world.suite.name)


def round_rankings(world: World, policy: Path, k: int, tasks: list, seed: int) -> list[dict]:
    """A platform round's ranking tasks after PPO: `policy` and the SFT policy sample their
    share of K per train prompt at T=1, mixed into tasks as `training.rounds` mixes them."""
    mixed = []
    for model, count in zip((policy, world.sft), ranking_sample_counts(k), strict=True):
        out = policy.parent / f"round-samples-{model.parent.name}-k{count}"
        samples = samples_of(model, world.train, out, count, 1.0)
        mixed += [Sample(s["prompt_index"], s["completion"]) for s in samples]
    groups = ranking_groups(sorted(mixed, key=lambda s: s.prompt_id), k=k).groups
    more = [(world.train[g[0].prompt_id], [s.text for s in g]) for g in groups]
    return crowd_rankings(more, seed=seed + 3, calibration=tasks, suite=world.suite.name)


def heldout_answers(
    world: World, model: Path, folder: Path, name: str, k: int, temperature: float
) -> list[list[str]]:
    """k answers per test prompt, cached in folder/NAME-kK (-tT unless at 0.7).  # (k, prompts)"""
    suffix = "" if temperature == EVAL_TEMPERATURE else f"-t{temperature}"
    rows = [[""] * len(world.test) for _ in range(k)]
    for s in samples_of(model, world.test, folder / f"{name}-k{k}{suffix}", k, temperature):
        rows[s["sample_index"]][s["prompt_index"]] = s["completion"]
    return rows


def train_reward_model(world: World, args: argparse.Namespace) -> tuple[Path, Path]:
    """The reward model on the SFT samples' rankings (and, --after TAG, on a second round's):
    (its model folder, the policy PPO starts from)."""
    tasks, rankings = ranking_data(world, args.k, args.rank_samples, args.seed)
    epochs = "" if args.rm_epochs == 1 else f"-e{args.rm_epochs}"
    rm_dir = world.out / f"rm-k{args.k}-{args.rank_samples}-lr{args.rm_lr}{epochs}"
    start = world.sft
    if args.after:
        start = world.out / args.after / "model"
        more = round_rankings(world, start, args.k, tasks, args.seed)
        print(f"round 2: {len(more) // 2} ranking tasks from {args.after} and SFT", flush=True)
        rankings += more
        rm_dir = world.out / f"rm-after-{args.after}-lr{args.rm_lr}{epochs}"
    result = reward.run(
        RewardConfig(output_dir=str(rm_dir), model_path=str(start), epochs=args.rm_epochs,
                     lr=args.rm_lr, batch_size=8, checkpoint_every=0),
        {"rankings": rankings, "demonstrations": world.demos},
    )  # fmt: skip
    print(f"{len(rankings) // 2} ranking tasks, {len(rankings)} rankings; RM held-out pair accuracy "
          f"{accuracy_text(held_out_accuracy_of(result['metrics']))}", flush=True)  # fmt: skip
    return rm_dir / "model", start


def train_ppo(world: World, args: argparse.Namespace, *, start: Path, rm: Path, reward_name: str,
              tag: str) -> dict:  # fmt: skip
    """PPO(-ptx) from `start` against `reward_name`, in world.out / tag."""
    value_dir = None
    if args.zero_value_head:  # the value head starts at 0 (the trunk from its usual init)
        value_dir = world.out / f"{tag}-value-init"
        tokenizer = load_tokenizer(str(world.sft))
        value = (
            RewardModel.from_pretrained(str(rm), tokenizer, CPU)
            if reward_name == "rm"
            else RewardModel.from_causal_lm(str(start), tokenizer, CPU)
        )
        torch.nn.init.zeros_(value.head.weight)
        value.score_offset = 0.0
        value.save_pretrained(value_dir, tokenizer)
    return ppo.run(
        PPOConfig(output_dir=str(world.out / tag), policy_path=str(start),
                  reward_model_path=str(rm) if reward_name == "rm" else None,
                  value_model_path=str(value_dir) if value_dir else None,
                  total_episodes=args.episodes, lr=args.lr, value_lr=1e-4,
                  batch_size=args.batch_size, kl_coef=args.kl_coef, max_new_tokens=32,
                  ptx_coef=args.ptx, ptx_batch_size=args.ptx_batch_size,
                  temperature=args.temperature, checkpoint_every=0),
        {"prompts": [{"prompt": messages(p)} for p in world.train], "demonstrations": world.demos},
        reward_fn=reward_fns(world.suite).get(reward_name),
    )  # fmt: skip


def mean(values: list[float]) -> float:
    return sum(values) / max(len(values), 1)


def run_ppo(args: argparse.Namespace) -> None:
    t0, times = time.monotonic(), {}
    world = build_world(args)
    times["sft"] = time.monotonic() - t0
    started = time.monotonic()
    rm, start = train_reward_model(world, args)
    times["rankings + reward model"] = time.monotonic() - started
    started, cpu_started = time.monotonic(), time.process_time()
    result = train_ppo(world, args, start=start, rm=rm, reward_name=args.reward, tag=args.tag)
    times["ppo"] = time.monotonic() - started
    times["ppo (CPU)"] = time.process_time() - cpu_started

    started = time.monotonic()
    k, temperature = args.eval_k, args.eval_temperature
    old = heldout_answers(world, world.sft, world.out, "eval-sft", k, temperature)
    policy_dir = world.out / args.tag
    new = heldout_answers(world, policy_dir / "model", policy_dir, "eval", k, temperature)
    times["evaluation"] = time.monotonic() - started
    first = gold_win_rate(world.test, new[:1], old[:1], suite=world.suite.name)
    every = gold_win_rate(world.test, new, old, suite=world.suite.name)
    by_family: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for new_row, old_row in zip(new, old, strict=True):
        for prompt, a, b in zip(world.test, new_row, old_row, strict=True):
            family = by_family[world.suite.family_of(prompt) or "other"]
            family[0] += world.suite.judge(prompt, b).quality
            family[1] += world.suite.judge(prompt, a).quality
            family[2] += 1
    history = result["history"]
    settings = {key: value for key, value in vars(args).items() if key != "run"}
    print(f"\n# bench/loop_study.py ppo {args.tag}: {settings}")
    print(f"gold win rate over SFT, first answer per test prompt: {first.rate:.3f} "
          f"[{first.low:.3f}, {first.high:.3f}] over {first.n} prompts")  # fmt: skip
    print(f"gold win rate over SFT, {k} answers per prompt: {every.rate:.3f} "
          f"[{every.low:.3f}, {every.high:.3f}] (W/T/L {every.wins}/{every.ties}/{every.losses})")  # fmt: skip
    print("mean gold quality SFT -> PPO: " + ", ".join(
        f"{name} {q_old / n:.2f}->{q_new / n:.2f}"
        for name, (q_old, q_new, n) in sorted(by_family.items())
    ))  # fmt: skip
    last = history[-1]
    print(f"PPO: score first/last 8 steps {mean([h['reward/score'] for h in history[:8]]):.3f}"
          f"/{mean([h['reward/score'] for h in history[-8:]]):.3f}, KL {last['kl/k1']:.2f}, "
          f"entropy {last['policy/entropy']:.2f}, ptx loss {last.get('loss/ptx', float('nan')):.3f}")  # fmt: skip
    print("times: " + ", ".join(f"{name} {s:.0f} s" for name, s in times.items())
          + f", total {time.monotonic() - t0:.0f} s")  # fmt: skip


def run_ceiling(args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    wanted = args.rewards.split(",")
    if unknown := set(wanted) - set(REWARDS):
        sys.exit(f"unknown rewards {sorted(unknown)}; choose from {', '.join(REWARDS)}")
    world = build_world(args)
    rm, start = train_reward_model(world, args)
    k, temperature = args.eval_k, args.eval_temperature
    old = heldout_answers(world, world.sft, world.out, "eval-sft", k, temperature)
    rows = []
    for name in wanted:
        started, tag = time.monotonic(), f"{args.tag}-{name}"
        history = train_ppo(world, args, start=start, rm=rm, reward_name=name, tag=tag)["history"]
        policy_dir = world.out / tag
        new = heldout_answers(world, policy_dir / "model", policy_dir, "eval", k, temperature)
        flat = [(p, a) for row in new for p, a in zip(world.test, row, strict=True)]
        rows.append((
            name, mean([h["reward/score"] for h in history[:16]]),
            mean([h["reward/score"] for h in history[-16:]]), history[-1]["kl/k1"],
            mean([world.suite.judge(p, a).quality for p, a in flat]),
            mean([float(a.strip().startswith("The")) for _, a in flat]),
            gold_win_rate(world.test, new, old, suite=world.suite.name),
            time.monotonic() - started,
        ))  # fmt: skip
        print(f"PPO against reward {name!r} done ({rows[-1][-1]:.0f} s)", flush=True)

    sft_quality = [world.suite.judge(p, a).quality for row in old for p, a in zip(world.test, row, strict=True)]  # fmt: skip
    perfect = mean([float(q >= 0.9999) for q in sft_quality])
    print(f"\n# bench/loop_study.py ceiling ({len(world.test)} test prompts x {k} answers, "
          f"T={temperature}, {args.episodes} PPO episodes, batch {args.batch_size}, lr {args.lr}, "
          f"kl {args.kl_coef}, ptx {args.ptx}{', value head from 0' if args.zero_value_head else ''})")  # fmt: skip
    print(f"SFT: mean gold quality {mean(sft_quality):.3f}, perfect on {perfect:.1%}; "
          f"oracle win rate (a policy always perfect) {(1 - perfect) + perfect / 2:.3f}")  # fmt: skip
    print(f"{'PPO reward':<10} {'train score first→last 16 steps':>32} {'KL':>6} {'quality':>8} "
          f"{'starts The':>10}  win rate over SFT [95% CI]  (W/T/L)")  # fmt: skip
    for name, first, last, kl, quality, the, wr, _ in rows:
        print(f"{name:<10} {first:>15.3f} → {last:<14.3f} {kl:>6.2f} {quality:>8.3f} {the:>10.1%}  "
              f"{wr.rate:.3f} [{wr.low:.3f}, {wr.high:.3f}]  ({wr.wins}/{wr.ties}/{wr.losses})")  # fmt: skip
    print(f"total {time.monotonic() - t0:.0f} s")


def pearson(x: list[float], y: list[float]) -> float:
    tx, ty = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    tx, ty = tx - tx.mean(), ty - ty.mean()
    return float((tx * ty).sum() / (tx.norm() * ty.norm()).clamp_min(1e-12))


@torch.inference_mode()
def rm_scores(model_dir: Path, prompts: list[str], texts: list[str]) -> list[float]:
    tokenizer = load_tokenizer(str(model_dir))
    model = RewardModel.from_pretrained(str(model_dir), tokenizer, CPU).eval()
    records = [{"prompt": messages(p), "completion": t} for p, t in zip(prompts, texts, strict=True)]  # fmt: skip
    amp = partial(autocast, CPU, torch.float32)
    out: list[float] = []
    for group in chunks(encode_demonstrations(tokenizer, records, 512), 32):
        batch = to_device(collate_sft(group, tokenizer.pad_token_id), CPU)
        with amp():
            out.extend(model(batch["input_ids"], batch["attention_mask"]).tolist())
    return out


def run_rm_probe(args: argparse.Namespace) -> None:
    world = build_world(args)
    old = heldout_answers(world, world.sft, world.out, "eval-sft", 4, EVAL_TEMPERATURE)
    probe = [(p, a) for row in old for p, a in zip(world.test, row, strict=True)]
    prompts, texts = [p for p, _ in probe], [a for _, a in probe]
    gold = [world.suite.judge(p, t).quality for p, t in probe]
    by_prompt: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        by_prompt[p].append(i)
    rankings_for = cache(lambda k, rank_samples: ranking_data(world, k, rank_samples, args.seed))
    for variant in args.variants:
        settings = dict(item.split("=") for item in variant.split(",") if item)
        _, rankings = rankings_for(
            int(settings.get("k", args.k)), int(settings.get("rank_samples", args.rank_samples))
        )
        name = "probe-" + variant.replace("=", "").replace(",", "-")
        init = world.sft if settings.get("init", "sft") == "sft" else Path(args.model)
        result = reward.run(
            RewardConfig(output_dir=str(world.out / name), model_path=str(init),
                         epochs=int(settings.get("epochs", 1)), lr=float(settings.get("lr", 1e-3)),
                         batch_size=int(settings.get("batch", 8)), checkpoint_every=0),
            {"rankings": rankings, "demonstrations": world.demos},
        )  # fmt: skip
        scores = rm_scores(world.out / name / "model", prompts, texts)
        right = pairs = 0
        for idx in by_prompt.values():
            for a, b in combinations(idx, 2):
                if abs(gold[a] - gold[b]) > 1e-9 and scores[a] != scores[b]:
                    pairs += 1
                    right += (gold[a] > gold[b]) == (scores[a] > scores[b])
        print(f"{variant}: {len(rankings)} rankings, val pair acc "
              f"{accuracy_text(held_out_accuracy_of(result['metrics']))}; on {len(gold)} test answers: "
              f"pearson with gold {pearson(scores, gold):.3f}, within-prompt gold pair acc "
              f"{right / max(pairs, 1):.3f} over {pairs} pairs", flush=True)  # fmt: skip


def add_world_options(mode: argparse.ArgumentParser) -> None:
    mode.add_argument("--out", help="run folder, finished stages reused; None: a new temp one")
    mode.add_argument(
        "--model", default=str(ROOT / "var" / "models" / "tiny-base"), help="base model"
    )
    mode.add_argument("--seed", type=int, default=0, help="prompts and crowd, as the bench's")
    mode.add_argument(
        "--suite", choices=sorted(suites.SUITES), default="demo",
        help="task suite: prompts, crowd and gold judge (use a fresh --out per suite)",
    )  # fmt: skip
    mode.add_argument("--prompts", type=int, default=1500, help="prompts of the project")
    mode.add_argument("--sft-steps", type=int, default=150, help="SFT steps (batch 16)")
    mode.add_argument("--k", type=int, default=4, help="outputs per ranking task")
    mode.add_argument("--rank-samples", type=int, default=8, help="SFT samples per train prompt")


def add_training_options(
    mode: argparse.ArgumentParser, *, episodes: int, batch_size: int, kl_coef: float, ptx: float
) -> None:
    mode.add_argument("--rm-lr", type=float, default=1e-3, help="reward model learning rate")
    mode.add_argument("--rm-epochs", type=int, default=1, help="reward model epochs")
    mode.add_argument("--episodes", type=int, default=episodes, help="PPO episodes")
    mode.add_argument("--batch-size", type=int, default=batch_size, help="rollouts per PPO step")
    mode.add_argument("--lr", type=float, default=1e-4, help="PPO policy learning rate")
    mode.add_argument("--kl-coef", type=float, default=kl_coef, help="PPO's KL penalty beta")
    mode.add_argument("--ptx", type=float, default=ptx, help="PPO-ptx gamma (0 = off)")
    mode.add_argument("--ptx-batch-size", type=int, default=8, help="demonstrations per ptx step")
    mode.add_argument(
        "--temperature", type=float, default=1.0, help="PPO's sampling (and log-prob) temperature"
    )
    mode.add_argument("--zero-value-head", action="store_true", help="value head starts at 0")
    mode.add_argument("--eval-k", type=int, default=4, help="answers per test prompt")
    mode.add_argument(
        "--eval-temperature", type=float, default=EVAL_TEMPERATURE, help="both policies' answers"
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    modes = top.add_subparsers(dest="mode", required=True)
    defaults = argparse.ArgumentDefaultsHelpFormatter
    one = modes.add_parser("ppo", help="one PPO run, its win rate", formatter_class=defaults)
    add_world_options(one)
    add_training_options(one, episodes=16384, batch_size=64, kl_coef=0.2, ptx=1.0)
    one.add_argument("--tag", default="ppo", help="the PPO run's folder name under --out")
    one.add_argument("--reward", default="rm", choices=REWARDS, help="PPO's reward")
    one.add_argument(
        "--after", metavar="TAG",
        help="a second round after the finished PPO run TAG, as a platform round from it: TAG's "
        "policy and SFT sample K/2 answers each per train prompt (T=1), K distinct are ranked, "
        "the reward model trains on all rankings from TAG's policy, PPO starts from TAG's policy",
    )  # fmt: skip
    one.set_defaults(run=run_ppo)
    ceiling = modes.add_parser("ceiling", help="PPO against several rewards", formatter_class=defaults)  # fmt: skip
    add_world_options(ceiling)
    add_training_options(ceiling, episodes=4096, batch_size=16, kl_coef=0.02, ptx=0.0)
    ceiling.add_argument("--tag", default="ceiling", help="PPO folders are TAG-REWARD under --out")
    ceiling.add_argument("--rewards", default="gold,rm,the", help=f"of {', '.join(REWARDS)}")
    ceiling.set_defaults(run=run_ceiling, after=None)
    probe = modes.add_parser("rm-probe", help="reward-model variants, no PPO", formatter_class=defaults)  # fmt: skip
    add_world_options(probe)
    probe.add_argument("variants", nargs="+", metavar="VARIANT", help="e.g. lr=3e-4,epochs=3")
    probe.set_defaults(run=run_rm_probe)
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.disable_progress_bar()
    args.out = args.out or tempfile.mkdtemp(prefix="instructloop-loop-study-")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    print(f"run folder {args.out}", flush=True)
    args.run(args)


if __name__ == "__main__":
    main()
