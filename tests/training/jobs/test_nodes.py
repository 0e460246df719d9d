"""Several GPU worker nodes: real Celery workers (subprocesses) that share only PostgreSQL, the
Redis broker and an S3 bucket (moto's server, spoken to over HTTP); each "host" has its own
INSTRUCTLOOP_VAR_DIR (model root, run folders, artifact cache). Also the settings for long GPU
jobs: a named queue per GPU type, and a soft time limit on an attempt.

What is shown elsewhere and not repeated here: a message delivered twice runs once
(tests/training/jobs/test_runs.py::test_a_redelivered_message_does_not_run_a_job_twice_at_once),
and a killed worker's message that Redis gives back after the visibility timeout is skipped while
the lease holds, then runs once (test_training_jobs.py::
test_a_killed_workers_message_comes_back_after_the_visibility_timeout)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from labeling.models import ModelVersion
from tests.factories import submitted_demonstration
from tests.s3 import s3_bucket, s3_endpoint  # noqa: F401 - fixtures
from tests.worker import WorkerProcess, database_url, purge_queues, start_worker, wait_until
from training import launcher, runs, storage
from training.models import RunStatus, TrainingRun

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
    """A worker host: its own var folder (models, runs, cache); the bucket, database and broker
    are all it shares with the others."""

    name: str
    var: Path
    env: dict[str, str]

    def start(self, queues: str = "gpu") -> WorkerProcess:
        return start_worker(
            env=self.env, log_path=self.var.parent / f"{self.name}.log", queues=queues
        )

    def files(self) -> set[str]:
        return {p.relative_to(self.var).as_posix() for p in self.var.rglob("*") if p.is_file()}


@pytest.fixture
def hosts(transactional_db, bucket, settings, tmp_path) -> tuple[Host, Host]:
    purge_queues("cpu,gpu,gpu-big")
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
        made.append(Host(name, var, env))
    settings.TRAINING_GPU_QUEUES = ["gpu", "gpu-big"]
    # The test process is the web host: its own folders, the same bucket.
    settings.MODEL_ROOT = tmp_path / "web" / "models"
    settings.RUN_ROOT = tmp_path / "web" / "runs"
    settings.ARTIFACT_CACHE = tmp_path / "web" / "cache"
    settings.MODEL_ROOT.mkdir(parents=True)
    return made[0], made[1]


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
