"""Model versions in an S3-compatible bucket, against a real S3-protocol server (moto's, started
by the test, spoken to over HTTP by s3fs as a worker would speak to S3 or MinIO).

Two worker "nodes" share only the database and the bucket: each has its own model root, run
folder and artifact cache (settings switched between them). What one trains, the other loads from
an empty cache; a corrupt or missing object fails the run that needs it with the reason, and
nothing is registered."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.utils import timezone

from labeling.models import ModelVersion
from tests.factories import submitted_demonstration
from tests.s3 import listed, s3_bucket, s3_endpoint  # noqa: F401 - fixtures
from training import launcher, runs, storage
from training.models import RunMetric, TrainingRun

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SFT = {"max_steps": 2, "batch_size": 2}


@dataclass(frozen=True)
class Node:
    root: Path

    def enter(self, settings) -> None:
        """Act as this node: its own folders, the shared bucket."""
        settings.MODEL_ROOT = self.root / "models"
        settings.RUN_ROOT = self.root / "runs"
        settings.ARTIFACT_CACHE = self.root / "cache"
        settings.MODEL_ROOT.mkdir(parents=True, exist_ok=True)

    def files(self) -> set[str]:
        return {p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()}


@pytest.fixture
def bucket(settings, s3_bucket, s3_endpoint):  # noqa: F811 - fixtures
    settings.ARTIFACTS = f"{s3_bucket}/instructloop"
    settings.ARTIFACTS_ENDPOINT_URL = s3_endpoint
    return settings.ARTIFACTS


@pytest.fixture
def nodes(tmp_path) -> tuple[Node, Node]:
    return Node(tmp_path / "node-a"), Node(tmp_path / "node-b")


@pytest.fixture
def base(project, personas, bucket, nodes, settings, tmp_path):
    """The toy base model, published to the bucket as a registration would publish it; and
    demonstrations to train on."""
    from tests.training.engine.toy_model import build_toy_model

    nodes[0].enter(settings)
    built = build_toy_model(tmp_path / "import" / "toy")
    published = storage.model_store().publish(built, "base-toy")
    for i in range(4):
        submitted_demonstration(project, personas.alice, f"Bread and tea {i}.", timezone.now())
    return ModelVersion.objects.create(
        project=project, name="toy", kind="base", path=published.key,
        artifact_uri=published.uri, sha256=published.sha256,
    )  # fmt: skip


def _train(project, personas, base_model: ModelVersion) -> TrainingRun:
    run = runs.run_start(
        project=project, kind="sft", config=SFT, created_by=personas.admin, base_model=base_model
    )
    launcher.execute(run_id=run.pk, worker="w")
    run.refresh_from_db()
    return run


def test_a_model_trained_on_one_node_is_published_to_the_bucket_and_loads_on_another(
    project, personas, base, nodes, settings, bucket
):
    a, b = nodes
    first = _train(project, personas, base)
    assert first.status == "succeeded", first.error
    version = first.model_version
    assert version.artifact_uri == f"{bucket}/models/{storage.run_key(first)}"
    store = storage.model_store()
    assert store.fs.exists(f"{store.root}/{version.path}/manifest.json")
    assert store.fs.exists(f"{store.root}/{version.path}/model.safetensors")
    # The node that trained it keeps it in its cache under its content hash; its model root
    # holds nothing (the bucket is the only shared place).
    assert f"cache/{version.sha256}/model.safetensors" in a.files()
    assert not any((a.root / "models").iterdir())

    b.enter(settings)
    assert not b.files()
    second = _train(project, personas, version)
    assert second.status == "succeeded", second.error
    fetched = {f for f in b.files() if f.startswith(f"cache/{version.sha256}/")}
    expected = {f"cache/{version.sha256}/{name}" for name in store_files(store, version.path)}
    assert fetched == expected, "node B fetched every published file of A's model, and only those"
    assert second.model_version.parent == version


def store_files(store, key: str) -> set[str]:
    prefix = f"{store.root}/{key}/"
    return {p[len(prefix) :] for p in store.fs.find(prefix)}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("corrupt", r"/model.safetensors is corrupt: sha256 [0-9a-f]{64}, its manifest says"),
        ("missing", r"/config.json is missing from the store"),
    ],
)
def test_a_corrupt_or_missing_object_fails_the_run_that_loads_it_and_registers_nothing(
    project, personas, base, nodes, settings, damage, message
):
    store = storage.model_store()
    if damage == "corrupt":
        store.fs.pipe_file(f"{store.root}/{base.path}/model.safetensors", b"\0" * 64)
    else:
        store.fs.rm_file(f"{store.root}/{base.path}/config.json")
    nodes[1].enter(settings)
    versions_before = ModelVersion.objects.count()

    run = _train(project, personas, base)

    assert run.status == "failed" and run.attempt == 1, "refused at once, not retried"
    assert run.error.startswith(f"Model files: {base.artifact_uri}")
    assert re.search(message, run.error), run.error
    assert run.model_version is None and ModelVersion.objects.count() == versions_before
    assert not (nodes[1].root / "cache" / base.sha256).exists(), "nothing half-fetched is trusted"


def _engine_children() -> list[int]:
    """The `python -m training.engine` processes this test process started."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"training.engine" in cmdline:
            found.append(int(stat.parent.name))
    return found


def test_a_run_whose_engine_was_killed_resumes_on_another_node_from_the_bucket(
    project, personas, base, nodes, settings
):
    """Node A's engine is SIGKILLed (as the OOM killer would) once a checkpoint is in the
    bucket; node B, which shares no folder with A, resumes the run from that checkpoint."""
    a, b = nodes
    settings.TRAINING_LAUNCHER = "subprocess"
    run = runs.run_start(
        project=project, kind="sft", config={**SFT, "max_steps": 100, "checkpoint_every": 2},
        created_by=personas.admin, base_model=base,
    )  # fmt: skip
    store = storage._run_store()
    prefix = f"{store.root}/{storage.run_key(run)}/checkpoints"
    killed: list[int] = []

    def kill_after_the_first_checkpoint_upload() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if listed(store.fs, f"{prefix}/step-*/manifest.json"):
                for pid in _engine_children():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_the_first_checkpoint_upload)
    killer.start()
    assert launcher.execute(run_id=run.pk, worker="node-a") == "failed"
    killer.join()
    run.refresh_from_db()
    assert killed and run.status == "queued", run.error
    assert "Killed by SIGKILL" in run.error
    in_bucket = sorted(int(p.rsplit("step-", 1)[1].split("/")[0]) for p in listed(
        store.fs, f"{prefix}/step-*/manifest.json"
    ))  # fmt: skip
    assert in_bucket and in_bucket[-1] < 100

    b.enter(settings)
    settings.TRAINING_LAUNCHER = "inprocess"
    assert not b.files()
    assert launcher.execute(run_id=run.pk, worker="node-b") == "succeeded"
    run.refresh_from_db()
    starts = RunMetric.objects.filter(run=run, name="run/started_at_step").order_by("step")
    assert [m.value for m in starts] == [0.0, float(in_bucket[-1])], "B went on from A's last"
    assert run.model_version is not None and run.model_version.artifact_uri.startswith("s3://")


def test_versions_from_before_the_store_are_published_by_the_command_and_load_elsewhere(
    project, personas, bucket, nodes, settings
):
    from django.core.management import call_command

    from tests.training.engine.toy_model import build_toy_model

    a, b = nodes
    a.enter(settings)
    build_toy_model(settings.MODEL_ROOT / "old-base")
    old = ModelVersion.objects.create(project=project, name="old", kind="base", path="old-base")
    hub = ModelVersion.objects.create(project=project, name="hub", kind="base", path="org/model")
    out = io.StringIO()
    call_command("artifacts_publish", stdout=out)
    old.refresh_from_db()
    assert old.artifact_uri == f"{bucket}/models/old-base" and len(old.sha256) == 64
    assert "left as it is: hub" in out.getvalue()
    assert ModelVersion.objects.get(pk=hub.pk).sha256 == ""

    b.enter(settings)
    for i in range(4):
        submitted_demonstration(project, personas.alice, f"Bread and tea {i}.", timezone.now())
    run = _train(project, personas, old)
    assert run.status == "succeeded", run.error
    assert (b.root / "cache" / old.sha256 / "model.safetensors").is_file()


def test_a_sampling_run_killed_on_one_node_goes_on_from_its_samples_in_the_bucket(
    project, personas, base, nodes, settings
):
    """The samples file is a sampling run's resume point: B samples only the batches A had not."""
    from tests.factories import PromptFactory

    a, b = nodes
    settings.TRAINING_LAUNCHER = "subprocess"
    settings.SAMPLES_MIRROR_SECONDS = 0
    # Enough prompts that A is still sampling when its first upload appears (40 could all be
    # sampled before the killer saw that upload, on a fast or an unloaded core).
    for i in range(200):
        PromptFactory(project=project, text=f"Name a colour, then the number {i}.")
    run = runs.run_start(
        project=project, kind="sample", base_model=base, created_by=personas.admin,
        config={"batch_size": 2, "k": 2, "max_new_tokens": 4, "resample_duplicates": 0},
    )  # fmt: skip
    store = storage._run_store()
    pattern = f"{store.root}/{storage.run_key(run)}/samples/lines-*/manifest.json"
    local = storage.run_dir(run) / storage.SAMPLES
    killed: list[int] = []

    def kill_after_the_first_upload() -> None:
        """Hold A's engine still (SIGSTOP) once it has written two batches, so it cannot finish
        while its worker is still uploading what it reported (the engine reports a batch after
        writing it: the first is reported); kill it once that upload is in the bucket."""
        deadline = time.monotonic() + 120
        stopped: list[int] = []
        try:
            while time.monotonic() < deadline and not killed:
                if not stopped and local.is_file() and local.read_bytes().count(b"\n") >= 4:
                    for pid in _engine_children():
                        os.kill(pid, signal.SIGSTOP)
                        stopped.append(pid)
                if stopped and listed(store.fs, pattern):
                    for pid in stopped:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                time.sleep(0.01)
        finally:  # never leave an engine stopped: the run would wait for it until the timeout
            for pid in set(stopped) - set(killed):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_after_the_first_upload)
    killer.start()
    assert launcher.execute(run_id=run.pk, worker="node-a") == "failed"
    killer.join()
    run.refresh_from_db()
    assert killed and run.status == "queued", run.error
    uploaded = max(int(p.split("lines-")[1].split("/")[0]) for p in listed(store.fs, pattern))
    lines = 2 * len(run.dataset["prompts"])  # K = 2 per prompt, 2 samples a batch
    assert 0 < uploaded < lines

    b.enter(settings)
    settings.TRAINING_LAUNCHER = "inprocess"
    # B mirrors its samples at the default pace: only A's uploads are under test, and an upload
    # after every batch of an in-process run held up its sampling (15 s of B's 16 here).
    del settings.SAMPLES_MIRROR_SECONDS
    assert launcher.execute(run_id=run.pk, worker="node-b") == "succeeded"
    run.refresh_from_db()
    starts = RunMetric.objects.filter(run=run, name="run/started_at_step").order_by("step")
    assert [m.value for m in starts] == [0.0, uploaded / 2], "B sampled after A's last batch"
    assert run.samples.count() == lines, "every prompt's 2 samples, none twice"
