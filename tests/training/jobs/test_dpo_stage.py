"""The stage registry's seam, shown by the kind added after it: DPO from labelers' rankings.

A record in training/stages.py, the engine module training/engine/dpo.py and a choices migration
were all it took; this goes through the same path as every kind: run_start (config checked and
stored resolved, rankings snapshotted) → the launcher builds the job from the database → the
engine trains → one policy version is registered, with its lineage.
"""

from __future__ import annotations

import shutil

import pytest

from labeling import queue, services
from labeling.models import ModelVersion, Split
from tests.factories import ModelVersionFactory, PromptFactory, ranking_task
from tests.training.engine.toy_model import build_toy_model
from training import launcher, runs, stages, storage
from training.models import RunStatus, TrainingRun

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def toy_base(project, settings, tmp_path):
    settings.MODEL_ROOT = tmp_path / "models"
    settings.RUN_ROOT = tmp_path / "runs"
    build_toy_model(settings.MODEL_ROOT / "toy")
    yield ModelVersionFactory(project=project, name="toy", kind="base", path="toy")
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_a_dpo_run_goes_through_the_platform_like_every_kind_and_registers_a_policy(
    project, personas, toy_base, now
):
    for i in range(10):
        prompt = PromptFactory(project=project, split=Split.TRAIN)
        texts = ["the cat eats a banana.", "the king sees a banana.", f"my friend hides tea {i}.",
                 f"a dog finds the moon {i}."]  # fmt: skip
        ranking_task(project, prompt=prompt, texts=texts)
        lease = queue.claim_next(
            user_id=personas.alice.pk, project=project, kind="ranking", now=now
        )
        by_id = {c.pk: c.text for c in lease.task.completions.all()}
        entries = [  # the labeler names each output by its slot letter (A, B, ...)
            {
                "completion": chr(ord("A") + slot),
                "rank": 1 if "banana" in by_id[cid] else 2,
                "likert": 4,
                "flags": [],
            }
            for slot, cid in enumerate(lease.shown_order)
        ]
        services.ranking_submit(
            lease_id=lease.pk, user_id=personas.alice.pk, entries=entries, now=now
        )

    run = runs.run_start(
        project=project,
        kind="dpo",
        config={"max_steps": 3, "batch_size": 4, "lr": 1e-3, "beta": 0.5},
        created_by=personas.admin,
        base_model=toy_base,
    )
    assert len(run.dataset["rankings"]) == 10
    assert run.config == {
        **stages.stage("dpo").resolve({}), "max_steps": 3, "batch_size": 4, "lr": 1e-3, "beta": 0.5
    }  # fmt: skip

    assert launcher.execute(run_id=run.pk, worker="test-worker") == "succeeded"
    run = TrainingRun.objects.get(pk=run.pk)
    assert run.status == RunStatus.SUCCEEDED and run.step == run.total_steps == 3
    version = ModelVersion.objects.get(training_run=run)
    assert (version.kind, version.parent_id) == ("policy", toy_base.pk)
    assert (storage.model_root() / version.path / "model.safetensors").is_file()
    assert set(run.metric_points.values_list("name", flat=True)) >= {
        "train/loss", "train/pair_accuracy", "train/margin"
    }  # fmt: skip
