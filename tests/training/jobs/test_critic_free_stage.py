"""A critic-free run goes through the platform like every kind: run_start (config checked and
stored resolved, prompts snapshotted) → the launcher builds the job with the base and reward
models' paths → training/engine/critic_free.py trains → one policy version is registered, and
the metrics the round's gate reads are recorded."""

from __future__ import annotations

import shutil

import pytest

from labeling.models import ModelVersion, Split
from tests.factories import ModelVersionFactory, PromptFactory
from tests.training.engine.toy_model import build_toy_model
from training import launcher, runs, stages, storage
from training.models import RunStatus, TrainingRun

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def toy_models(project, settings, tmp_path):
    """A toy base model and a reward model on its trunk (an untrained head does the same work)."""
    import torch

    from training.engine.lm import load_tokenizer
    from training.engine.reward_model import RewardModel

    settings.MODEL_ROOT = tmp_path / "models"
    settings.RUN_ROOT = tmp_path / "runs"
    toy = build_toy_model(settings.MODEL_ROOT / "toy")
    tokenizer = load_tokenizer(toy)
    RewardModel.from_causal_lm(toy, tokenizer, torch.device("cpu")).save_pretrained(
        settings.MODEL_ROOT / "rm", tokenizer
    )
    base = ModelVersionFactory(project=project, name="toy", kind="base", path="toy")
    reward = ModelVersionFactory(project=project, name="rm", kind="reward", path="rm")
    yield base, reward
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_a_critic_free_run_trains_on_the_worker_and_registers_a_policy(
    project, personas, toy_models
):
    base, reward = toy_models
    for _ in range(4):
        PromptFactory(project=project, split=Split.TRAIN)
    settings = {"estimator": "rloo", "total_episodes": 4, "batch_size": 2, "group_size": 2,
                "mini_batch_size": 4, "max_new_tokens": 4}  # fmt: skip
    run = runs.run_start(
        project=project,
        kind="critic_free",
        config=settings,
        created_by=personas.admin,
        base_model=base,
        reward_model=reward,
    )
    assert len(run.dataset["prompts"]) == 4
    assert run.config == {**stages.stage("critic_free").resolve({}), **settings}

    assert launcher.execute(run_id=run.pk, worker="test-worker") == "succeeded"
    run = TrainingRun.objects.get(pk=run.pk)
    assert run.status == RunStatus.SUCCEEDED and run.step == run.total_steps == 2
    version = ModelVersion.objects.get(training_run=run)
    assert (version.kind, version.parent_id) == ("policy", base.pk)
    assert (storage.model_root() / version.path / "model.safetensors").is_file()
    assert set(run.metric_points.values_list("name", flat=True)) >= {
        "response/eos_rate", "kl/k1", "response/length", "reward/score"
    }  # fmt: skip
