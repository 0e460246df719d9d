"""How long a second GPU node takes to pick up a run whose worker was SIGKILLed (issue 17): from
the kill to the other node's first step after its resume.

Two real Celery workers, "hosts" A and B, each with its own INSTRUCTLOOP_VAR_DIR (run folders,
artifact cache), and celery beat share one PostgreSQL database, Redis and an S3 bucket (moto's
S3 server on this host: a real bucket's latency comes on top). A runs an SFT of the tiny model
that checkpoints every --checkpoint-every steps; once a checkpoint is in the bucket, B is started
and idles; A is SIGKILLed mid-step. Printed for each repeat, from the kill:
- lapsed: the run's lease ran out (at most --lease s after A's last heartbeat);
- claimed: B took the run (beat's requeue_stale_runs, every --requeue-every s, re-sent it);
- first step: B fetched the base model and the last checkpoint from the bucket, loaded them and
  reported its first step after the resume.
The production defaults are a 90 s lease and a 30 s beat period: expect about 100 s plus the load.

    OMP_NUM_THREADS=1 python -m bench.nodes [--lease 10] [--requeue-every 5] [--repeat 3]

Server: BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/), database il_bench_nodes
(dropped and re-created); the broker is CELERY_BROKER_URL (a redis:// URL; its gpu and cpu
queues are purged).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, django_setup, reset_database  # noqa: E402

SERVER = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/")


def _celery(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "instructloop", *args],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _worker(env: dict[str, str], var: Path) -> subprocess.Popen:
    """A GPU worker as compose starts one (solo, prefetch 1) that also takes the cpu queue's
    requeue jobs; returns once it is ready."""
    log = var.parent / "worker.log"
    process = _celery(
        ["worker", "-Q", "gpu,cpu", "--pool=solo", "--concurrency=1", "--prefetch-multiplier=1",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO",
         "-n", f"bench-{uuid.uuid4().hex[:6]}@%h"],
        dict(env, INSTRUCTLOOP_VAR_DIR=str(var)), log,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while b" ready." not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"the worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return process


def _until(predicate, *, timeout: float = 600, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(interval)
    return value


def one_pickup(env: dict[str, str], scratch: Path, base, admin, checkpoint_every: int) -> dict:
    from django.utils import timezone

    from training import runs, storage
    from training.models import RunMetric, TrainingRun

    hosts = [scratch / f"{name}-{uuid.uuid4().hex[:6]}" / "var" for name in ("a", "b")]
    for var in hosts:
        var.mkdir(parents=True)
    a = _worker(env, hosts[0])
    b = None
    try:
        run = runs.run_start(
            project=base.project, kind="sft", created_by=admin, base_model=base,
            config={"max_steps": 100_000, "batch_size": 4, "checkpoint_every": checkpoint_every},
        )  # fmt: skip
        store = storage._run_store()
        checkpoints = f"{store.root}/{storage.run_key(run)}/checkpoints/step-*/manifest.json"
        _until(lambda: store.fs.glob(checkpoints), interval=0.2)
        b = _worker(env, hosts[1])
        step = TrainingRun.objects.get(pk=run.pk).step
        _until(lambda: TrainingRun.objects.get(pk=run.pk).step > step + 1)  # mid-run, not at start
        a.kill()
        killed = time.monotonic()
        a.wait()
        lapsed = _until(
            lambda: (
                (TrainingRun.objects.get(pk=run.pk).lease_expires_at or timezone.now())
                <= timezone.now()
                and time.monotonic()
            )
        )
        claimed = _until(
            lambda: str(b.pid) in TrainingRun.objects.get(pk=run.pk).ran_on and time.monotonic()
        )
        resumed_from = _until(
            lambda: (
                RunMetric.objects.filter(run=run, name="run/started_at_step", value__gt=0)
                .values_list("value", flat=True)
                .first()
            )
        )
        first_step = _until(
            lambda: TrainingRun.objects.get(pk=run.pk).step > resumed_from and time.monotonic()
        )
        TrainingRun.objects.filter(pk=run.pk).update(cancel_requested=True)
        _until(lambda: TrainingRun.objects.get(pk=run.pk).status == "cancelled", interval=0.2)
    finally:
        a.kill()
        if b is not None:
            b.kill()
            b.wait()
    return {
        "lapsed": lapsed - killed,
        "claimed": claimed - killed,
        "first_step": first_step - killed,
        "resumed_from": int(resumed_from),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lease", type=int, default=10, help="INSTRUCTLOOP_TRAINING_LEASE_SECONDS")
    parser.add_argument("--requeue-every", type=int, default=5, help="beat's requeue period, s")
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not broker.startswith("redis"):
        raise SystemExit("CELERY_BROKER_URL must name a Redis database for the bench")

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint, bucket = f"http://{host}:{port}", f"bench-nodes-{uuid.uuid4().hex[:8]}"
    scratch = Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    db_url = SERVER.rstrip("/") + "/il_bench_nodes"
    env = dict(
        os.environ,
        DATABASE_URL=db_url,
        INSTRUCTLOOP_ARTIFACTS=f"s3://{bucket}/instructloop",
        INSTRUCTLOOP_ARTIFACTS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret",
        AWS_DEFAULT_REGION="us-east-1",
        INSTRUCTLOOP_TRAINING_LEASE_SECONDS=str(args.lease),
        INSTRUCTLOOP_REQUEUE_EVERY_SECONDS=str(args.requeue_every),
        INSTRUCTLOOP_LAUNCHER="inprocess",
        INSTRUCTLOOP_VAR_DIR=str(scratch / "web" / "var"),
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
    )  # fmt: skip
    for name in ("INSTRUCTLOOP_ARTIFACT_CACHE", "TEST_DATABASE_NAME", "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    beat = None
    try:
        reset_database(db_url)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=env,
            check=True,
        )  # fmt: skip
        os.environ.update(env)
        django_setup()
        import s3fs

        s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}).mkdir(bucket)
        base, admin = _world(scratch)
        from tests.worker import purge_queues

        purge_queues("gpu,cpu")
        beat = _celery(
            ["beat", "-s", str(scratch / "beat-schedule"), "--loglevel=INFO"],
            env, scratch / "beat.log",
        )  # fmt: skip
        print(
            f"lease {args.lease} s, beat every {args.requeue_every} s, checkpoint every "
            f"{args.checkpoint_every} steps, tiny model, moto S3 on this host"
        )
        results = []
        for i in range(args.repeat):
            found = one_pickup(env, scratch, base, admin, args.checkpoint_every)
            results.append(found)
            print(
                f"  {i + 1}: kill -> lease lapsed {found['lapsed']:5.1f} s, B claimed "
                f"{found['claimed']:5.1f} s, B's first step after resume {found['first_step']:5.1f}"
                f" s (resumed from step {found['resumed_from']})"
            )
        for key in ("lapsed", "claimed", "first_step"):
            print(f"median {key}: {statistics.median(r[key] for r in results):.1f} s")
    finally:
        if beat is not None:
            beat.kill()
            beat.wait()
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def _world(scratch: Path):
    """A project with demonstrations, an admin, and the tiny base model published to the bucket."""
    from django.utils import timezone

    from labeling.models import ModelVersion
    from tests.factories import ProjectFactory, member, submitted_demonstration
    from training import storage

    source = ROOT / "var" / "models" / "tiny-base"
    if not source.is_dir():
        raise SystemExit(
            f"{source} is missing: `python -m training.demo.base_model --out {source}`"
        )
    copy = scratch / "tiny-base"
    shutil.copytree(source, copy)
    published = storage.model_store().publish(copy, "base-tiny")
    project = ProjectFactory(k=4, overlap=1)
    admin = member(project, "ada_admin", "admin")
    alice = member(project, "alice_labeler")
    for i in range(16):
        submitted_demonstration(
            project, alice, f"A small bird eats some bread {i}.", timezone.now()
        )
    base = ModelVersion.objects.create(
        project=project, name="tiny-base", kind="base", path=published.key,
        artifact_uri=published.uri, sha256=published.sha256,
    )  # fmt: skip
    return base, admin


if __name__ == "__main__":
    main()
