"""Several GPU worker nodes: real Celery workers (subprocesses) that share only PostgreSQL, the
Redis broker and an S3 bucket (moto's server, spoken to over HTTP); each "host" has its own
INSTRUCTLOOP_VAR_DIR (model root, run folders, artifact cache) and, where this machine allows it
(Linux, root), its own network namespace (tests/netns.py): it reaches PostgreSQL, Redis and the
bucket only over its veth link, not through this machine's loopback. Also the settings for long
GPU jobs: a named queue per GPU type, and a soft time limit on an attempt.

What is shown elsewhere and not repeated here: a message delivered twice runs once
(tests/training/jobs/test_runs.py::test_a_redelivered_message_does_not_run_a_job_twice_at_once),
and a killed worker's message that Redis gives back after the visibility timeout is skipped while
the lease holds, then runs once (test_training_jobs.py::
test_a_killed_workers_message_comes_back_after_the_visibility_timeout)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.db import connection
from django.utils import timezone

from labeling.models import ModelVersion
from tests import netns
from tests.factories import PromptFactory, submitted_demonstration, submitted_ranking
from tests.s3 import listed, s3_bucket, s3_endpoint  # noqa: F401 - fixtures
from tests.worker import WorkerProcess, database_url, purge_queues, start_worker, wait_until
from training import launcher, rounds, runs, storage
from training.models import RunMetric, RunStatus, TrainingRun

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FINISHED = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}


def _finished(run_id: int) -> TrainingRun | None:
    run = TrainingRun.objects.get(pk=run_id)
    return run if run.status in FINISHED else None


def _pid_of(run: TrainingRun) -> int:
    """The worker process that took the run's last attempt (`ran_on` is host:pid:task)."""
    return int(run.ran_on.split(":")[1])


@pytest.fixture
def bucket(settings, s3_bucket, s3_endpoint):  # noqa: F811 - fixtures
    settings.ARTIFACTS = f"{s3_bucket}/instructloop"
    settings.ARTIFACTS_ENDPOINT_URL = s3_endpoint
    return settings.ARTIFACTS


@dataclass(frozen=True)
class Host:
    """A worker host: its own var folder (models, runs, cache) and network namespace (where
    there is one); the bucket, database and broker are all it shares with the others."""

    name: str
    var: Path
    env: dict[str, str]
    network: netns.Namespace | None = None

    def start(self, queues: str = "gpu") -> WorkerProcess:
        worker = start_worker(
            env=self.env, log_path=self.var.parent / f"{self.name}.log", queues=queues,
            wrap=self.network.command if self.network else None,
        )  # fmt: skip
        if self.network is not None:  # the worker itself, not only its URLs, is inside
            theirs = os.readlink(f"/proc/{worker.process.pid}/ns/net")
            assert theirs != os.readlink("/proc/self/ns/net"), "the worker is not in its namespace"
        return worker

    def files(self) -> set[str]:
        return {p.relative_to(self.var).as_posix() for p in self.var.rglob("*") if p.is_file()}


NO_NAMESPACES = netns.unavailable()
SERVICES = ("DATABASE_URL", "CELERY_BROKER_URL", "INSTRUCTLOOP_ARTIFACTS_ENDPOINT_URL")


@pytest.fixture
def hosts(transactional_db, bucket, settings, tmp_path) -> Iterator[tuple[Host, Host]]:
    purge_queues("cpu,gpu,gpu-big")
    with ExitStack() as stack:
        yield _hosts(stack, settings, tmp_path)


def _hosts(stack: ExitStack, settings, tmp_path: Path) -> tuple[Host, Host]:
    made = []
    for name in ("host-a", "host-b"):
        var = tmp_path / name / "var"
        var.mkdir(parents=True)
        env = dict(os.environ, DATABASE_URL=database_url(connection.settings_dict))
        env.pop("TEST_DATABASE_NAME", None)
        env.update(
            INSTRUCTLOOP_VAR_DIR=str(var),
            INSTRUCTLOOP_ARTIFACTS=settings.ARTIFACTS,
            INSTRUCTLOOP_ARTIFACTS_ENDPOINT_URL=settings.ARTIFACTS_ENDPOINT_URL,
            INSTRUCTLOOP_TRAINING_LEASE_SECONDS="3",
            INSTRUCTLOOP_REQUEUE_EVERY_SECONDS="1",
            INSTRUCTLOOP_GPU_QUEUES="gpu,gpu-big",
            INSTRUCTLOOP_LAUNCHER="inprocess",
            OMP_NUM_THREADS="1",
        )
        env.pop("INSTRUCTLOOP_ARTIFACT_CACHE", None)
        network = None
        if NO_NAMESPACES is None:  # the services by the link's address, through relays
            network = stack.enter_context(netns.namespace())
            for key in SERVICES:
                if key in env:
                    env[key] = network.url(env[key])
        made.append(Host(name, var, env, network))
    settings.TRAINING_GPU_QUEUES = ["gpu", "gpu-big"]
    # The test process is the web host: its own folders, the same bucket.
    settings.MODEL_ROOT = tmp_path / "web" / "models"
    settings.RUN_ROOT = tmp_path / "web" / "runs"
    settings.ARTIFACT_CACHE = tmp_path / "web" / "cache"
    settings.MODEL_ROOT.mkdir(parents=True)
    return made[0], made[1]


@pytest.mark.worker  # the services a worker host reaches: PostgreSQL and Redis
def test_each_host_reaches_the_services_only_over_its_own_link(hosts):
    """In its namespace a host cannot open this machine's PostgreSQL, Redis or S3 port on the
    loopback; it can at its gateway, where the relay is. (No worker is started.)"""
    if NO_NAMESPACES is not None:
        pytest.skip(f"no network namespaces here: {NO_NAMESPACES}")
    for host in hosts:
        assert host.network is not None
        for key in SERVICES:
            url = urlsplit(host.env[key])
            assert url.hostname == host.network.gateway, (key, host.env[key])
            assert url.port is not None
            assert host.network.reaches(url.hostname, url.port), (host.name, key)
            assert not host.network.reaches("127.0.0.1", url.port), (host.name, key)
    assert hosts[0].network.gateway != hosts[1].network.gateway  # type: ignore[union-attr]


def _published_toy(project, tmp_path, *, kind: str = "base") -> ModelVersion:
    from tests.training.engine.toy_model import build_toy_model

    built = build_toy_model(tmp_path / "import" / "toy")
    published = storage.model_store().publish(built, f"{kind}-toy")
    return ModelVersion.objects.create(
        project=project, name=f"toy-{kind}", kind=kind, path=published.key,
        artifact_uri=published.uri, sha256=published.sha256,
    )  # fmt: skip


def _demonstrations(project, personas, n: int = 8) -> None:
    for i in range(n):
        submitted_demonstration(project, personas.alice, f"Bread and tea {i}.", timezone.now())


@pytest.mark.worker
def test_a_run_that_names_a_gpu_queue_runs_on_a_worker_of_that_queue_only(
    project, personas, hosts, tmp_path
):
    a, b = hosts
    base = _published_toy(project, tmp_path)
    _demonstrations(project, personas)
    small, big = a.start(queues="gpu"), b.start(queues="gpu-big")
    try:
        sft = {"max_steps": 2, "batch_size": 2}
        on_big = runs.run_start(
            project=project, kind="sft", config=sft, created_by=personas.admin,
            base_model=base, queue="gpu-big",
        )  # fmt: skip
        anywhere = runs.run_start(
            project=project, kind="sft", config=sft, created_by=personas.admin, base_model=base
        )
        on_big, anywhere = (
            wait_until(lambda r=r: _finished(r.pk), timeout=180) for r in (on_big, anywhere)
        )
    finally:
        small.stop(), big.stop()
    assert on_big.status == anywhere.status == RunStatus.SUCCEEDED, on_big.error + anywhere.error
    assert _pid_of(on_big) == big.process.pid, "the gpu-big run went to the gpu-big worker"
    assert _pid_of(anywhere) == small.process.pid, "a run naming no queue goes to the default one"
    with pytest.raises(Exception, match="No GPU queue 'tpu'"):
        runs.run_start(
            project=project, kind="sft", config=sft, created_by=personas.admin,
            base_model=base, queue="tpu",
        )  # fmt: skip


@pytest.mark.parametrize("how", ["inprocess", "subprocess"])
def test_an_attempt_past_the_time_limit_fails_with_the_reason_and_is_not_retried(
    project, personas, hosts, settings, tmp_path, how
):
    base = _published_toy(project, tmp_path)
    _demonstrations(project, personas)
    settings.TRAINING_LAUNCHER = how
    settings.TRAINING_TIME_LIMIT_SECONDS = 2
    run = runs.run_start(
        project=project, kind="sft", config={"max_steps": 100_000, "batch_size": 2},
        created_by=personas.admin, base_model=base,
    )  # fmt: skip
    assert launcher.execute(run_id=run.pk, worker="w") == "failed"
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.attempt == 1, "failed at once, not retried"
    assert "ran past the time limit of 2 s (INSTRUCTLOOP_RUN_TIME_LIMIT_SECONDS)" in run.error
    assert run.step < 100_000 and run.model_version is None


def _ranking(project, personas) -> None:
    submitted_ranking(project, personas.alice, timezone.now(), likert=5)


@pytest.mark.worker
def test_a_rounds_reward_model_trains_on_one_host_and_its_ppo_on_another(
    project, personas, hosts, tmp_path
):
    """Host A trains the reward model and is then SIGKILLed (whatever it took next, the PPO run
    perhaps, is lost with it); host B, which never saw A's folder, fetches the policy and A's
    reward model from the bucket and trains the PPO step."""
    a, b = hosts
    sft = _published_toy(project, tmp_path, kind="sft")
    _ranking(project, personas)
    for i in range(4):
        PromptFactory(project=project, text=f"Name a fruit, then the number {i}.")
    first = a.start()
    try:
        round_ = rounds.round_start(
            project=project, policy=sft, created_by=personas.admin,
            config={"reward": {"max_steps": 2, "batch_size": 1},
                    "ppo": {"total_episodes": 4, "batch_size": 2, "mini_batch_size": 2,
                            "max_new_tokens": 4},
                    "max_prompts": 4, "eval_prompts": 1},
        )  # fmt: skip
        reward = wait_until(lambda: _finished(round_.reward_run.pk), timeout=180)
    finally:
        first.process.kill()
        first.process.wait()
    assert reward.status == RunStatus.SUCCEEDED, reward.error + first.log()[-3000:]
    assert _pid_of(reward) == first.process.pid
    round_.refresh_from_db()
    policy = round_.policy_run
    assert policy is not None and policy.reward_model == reward.model_version
    assert not b.files()
    second = b.start()
    try:
        policy = wait_until(lambda: _finished(policy.pk), timeout=240)
    finally:
        second.stop()
    assert policy.status == RunStatus.SUCCEEDED, policy.error + second.log()[-3000:]
    assert _pid_of(policy) == second.process.pid
    cached = {f.split("/")[2] for f in b.files() if f.startswith("cache/artifacts/")}
    assert reward.model_version.sha256 in cached and sft.sha256 in cached, "fetched from the bucket"
    assert policy.model_version.artifact_uri.startswith("s3://")


@pytest.mark.worker
def test_a_worker_killed_mid_run_is_picked_up_by_another_host_from_the_buckets_checkpoint(
    project, personas, hosts, tmp_path
):
    a, b = hosts
    base = _published_toy(project, tmp_path)
    _demonstrations(project, personas, 16)
    first = a.start()
    second = None
    try:
        run = runs.run_start(
            project=project, kind="sft", created_by=personas.admin, base_model=base,
            config={"max_steps": 300, "batch_size": 4, "checkpoint_every": 5},
        )  # fmt: skip
        store = storage._run_store()
        checkpoints = f"{store.root}/{storage.run_key(run)}/checkpoints/step-*/manifest.json"
        wait_until(lambda: listed(store.fs, checkpoints), timeout=180, interval=0.1)
        # B is up and idle before A dies: "a run goes to whichever is free".
        second = b.start()
        wait_until(
            lambda: TrainingRun.objects.get(pk=run.pk).step >= 12, timeout=120, interval=0.05
        )
        first.process.kill()
        first.process.wait()
        in_bucket = max(
            int(p.split("step-")[1].split("/")[0]) for p in listed(store.fs, checkpoints)
        )
        # No beat here (B's own start-up requeue ran while A held the lease): its job, run once
        # the lease lapsed, as beat runs it every INSTRUCTLOOP_REQUEUE_EVERY_SECONDS.
        from training.tasks import requeue_stale_runs

        wait_until(lambda: runs.runs_to_requeue(now=timezone.now()) == [run.pk], timeout=30)
        assert requeue_stale_runs() == [run.pk]
        run = wait_until(lambda: _finished(run.pk), timeout=300)
    finally:
        first.process.kill()
        if second is not None:
            second.stop()
    assert in_bucket < 300, "finished before the kill; make it longer"
    assert run.status == RunStatus.SUCCEEDED, run.error + second.log()[-3000:]
    assert run.attempt == 2 and _pid_of(run) == second.process.pid
    starts = RunMetric.objects.filter(run=run, name="run/started_at_step").order_by("step")
    resumed_from = max(m.value for m in starts)
    # B's folder never held A's checkpoints: it went on from the last one A put in the bucket.
    assert resumed_from == in_bucket >= 5, (in_bucket, resumed_from)
    assert ModelVersion.objects.filter(training_run=run).count() == 1
