"""README's scripting example, the very code block, run against a live server.

The block imports prompts, starts a round, waits for it and prints win rates. Its round runs here
without a worker: the test closes each of the round's runs as it is queued, through the loop's own
claim and success path with made-up metrics and samples (tests/training/jobs/test_rounds.py's
`_succeed`), so the script's HTTP calls, its polling and the round's real progression through
the server are what is tested, in seconds. (A real round on the tiny model needs rankings that
train a reward model or DPO past the gate, which is not made reliable on CI's shared cores.)
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import pytest
from django.utils import timezone

from labeling import queue, services
from labeling.blinding import SLOTS
from labeling.models import Completion, Role, Split, Task
from tests.factories import (
    CompletionFactory,
    ModelVersionFactory,
    ProjectFactory,
    PromptFactory,
    member,
    ranking_task,
    submitted_ranking,
)
from tests.training.jobs.test_rounds import GOOD, _samples, _succeed
from training import storage
from training.models import Round, RoundStatus, TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)

README = Path(__file__).resolve().parents[2] / "README.md"
PASSWORD = "pw-for-tests-123"  # tests/factories.py's UserFactory


def readme_script() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    found = [b for b in blocks if b.startswith("from instructloop.client import Client")]
    assert len(found) == 1, "README's Scripting section has one client script"
    return found[0]


def test_the_readme_script_is_15_lines_at_most():
    assert len(readme_script().strip().splitlines()) <= 15


@pytest.fixture
def judged_project(transactional_db, settings, tmp_path):
    """A project with a policy (sft-0), one submitted ranking, train and test prompts, and two
    blind A/B judgements between sft-0 and an older model, sft-old."""
    settings.MODEL_ROOT = tmp_path / "models"
    settings.RUN_ROOT = tmp_path / "runs"
    (settings.MODEL_ROOT / "sft").mkdir(parents=True)
    now = timezone.now()
    project = ProjectFactory(slug="readme", k=4, overlap=1)
    member(project, "ada_admin", Role.ADMIN)
    alice = member(project, "alice_labeler")
    sft = ModelVersionFactory(project=project, name="sft-0", kind="sft", path="sft")
    old = ModelVersionFactory(project=project, name="sft-old", kind="sft", path="sft")
    submitted_ranking(project, alice, now, likert=5)
    PromptFactory.create_batch(3, project=project, split=Split.TRAIN)
    for prompt in PromptFactory.create_batch(2, project=project, split=Split.TEST):
        for model in (sft, old):
            CompletionFactory(prompt=prompt, model_version=model)
    assert services.evaluation_tasks_create(project=project, model_a=sft, model_b=old) == 2
    for winner in ("a", "b"):
        lease = queue.claim_next(user_id=alice.pk, project=project, kind="comparison", now=now)
        services.comparison_submit(lease_id=lease.pk, user_id=alice.pk, winner=winner, now=now)
    return project


def _close_queued_runs(project, settings) -> None:
    """What a worker would do with each queued run of the round: claim it and succeed."""
    for run in TrainingRun.objects.filter(project=project, status="queued").order_by("pk"):
        now = timezone.now()
        if run.kind == "sample":
            _succeed(run, now, settings, samples=_samples(run))
        elif run.kind in ("ppo", "critic_free", "dpo"):
            _succeed(run, now, settings, metrics=GOOD)
        else:
            _succeed(run, now, settings)


def test_the_readme_script_imports_prompts_runs_a_round_and_prints_win_rates(
    live_server, judged_project, settings, tmp_path
):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Name a colour."}\n{"prompt": "Name a fruit."}\n')
    printed: list[str] = []
    failure: list[BaseException] = []
    names = {
        "URL": live_server.url, "USERNAME": "ada_admin", "PASSWORD": PASSWORD,
        "PROJECT": "readme", "POLICY": "sft-0", "PROMPTS": str(prompts), "RECIPE": "instructgpt",
        "ROUND_SETTINGS": {},
        "print": lambda *args: printed.append(" ".join(map(str, args))),
    }  # fmt: skip

    def script() -> None:
        try:
            exec(compile(readme_script(), "README.md", "exec"), names)  # noqa: S102 - our README
        except BaseException as exc:  # reported by the test below
            failure.append(exc)

    thread = threading.Thread(target=script)
    thread.start()
    deadline = time.monotonic() + 60
    while thread.is_alive() and time.monotonic() < deadline:
        _close_queued_runs(judged_project, settings)
        time.sleep(0.2)
    thread.join(timeout=5)

    assert not failure, failure
    assert not thread.is_alive(), f"the script did not finish; it printed {printed}"
    round_ = Round.objects.get(project=judged_project)
    assert round_.status == RoundStatus.SUCCEEDED
    assert Task.objects.filter(project=judged_project, kind="comparison").count() > 2  # the round's
    assert printed[0].startswith("ImportResult(created=2,")
    assert printed[1] == f"round {round_.number} made {round_.new_policy.name}"
    assert len(printed) == 3, printed
    assert re.fullmatch(r"sft-old over sft-0: \d\.\d\d \[\d\.\d\d, \d\.\d\d\] \(n=2\)", printed[2])


GOOD_ANSWER, BAD_ANSWER = "Sure, here is a short and clear answer.", "no no no no no no no no"


@pytest.fixture
def dpo_project(transactional_db, settings):
    """A project whose policy is the tiny base model (var/models/tiny-base), with 12 rankings on
    train prompts that always prefer the same good answer to the same bad one (a pattern DPO
    learns in a few steps, so its held-out pair accuracy passes the gate), and two blind A/B
    judgements between the policy and an older model."""
    if not (settings.MODEL_ROOT / "tiny-base" / "config.json").exists():
        pytest.fail(f"no tiny base model under {settings.MODEL_ROOT}: ./dev builds it")
    now = timezone.now()
    project = ProjectFactory(slug="readme-dpo", k=2, overlap=1)
    member(project, "ada_admin", Role.ADMIN)
    alice = member(project, "alice_labeler")
    policy = ModelVersionFactory(project=project, name="tiny-base", kind="base", path="tiny-base")
    old = ModelVersionFactory(project=project, name="sft-old", kind="sft", path="tiny-base")
    for prompt in PromptFactory.create_batch(12, project=project, split=Split.TRAIN):
        ranking_task(project, prompt, texts=[GOOD_ANSWER, BAD_ANSWER])
        lease = queue.claim_next(user_id=alice.pk, project=project, kind="ranking", now=now)
        texts = dict(Completion.objects.filter(pk__in=lease.shown_order).values_list("pk", "text"))
        entries = [
            {"completion": slot, "rank": 1 if texts[cid] == GOOD_ANSWER else 2, "likert": 4}
            for slot, cid in zip(SLOTS, lease.shown_order, strict=False)
        ]
        services.ranking_submit(lease_id=lease.pk, user_id=alice.pk, entries=entries, now=now)
    for prompt in PromptFactory.create_batch(2, project=project, split=Split.TEST):
        for model in (policy, old):
            CompletionFactory(prompt=prompt, model_version=model)
    assert services.evaluation_tasks_create(project=project, model_a=policy, model_b=old) == 2
    for winner in ("a", "tie"):
        lease = queue.claim_next(user_id=alice.pk, project=project, kind="comparison", now=now)
        services.comparison_submit(lease_id=lease.pk, user_id=alice.pk, winner=winner, now=now)
    yield project
    # What the round's runs wrote (var/runs/run-*, var/models/run-*), and nothing else.
    for run in TrainingRun.objects.filter(project=project):
        key = storage.run_key(run)
        for folder in (settings.RUN_ROOT / key, settings.MODEL_ROOT / key):
            shutil.rmtree(folder, ignore_errors=True)


# An iterated-DPO round on the tiny model in seconds: a few DPO steps, no baseline SFT, two
# prompts sampled for ranking and two for the blind A/B tasks, 8 new tokens each.
TINY_ROUND = {
    "dpo": {"max_steps": 6, "batch_size": 4, "lr": 1e-3, "val_fraction": 0.25, "eval_every": 6},
    "baseline": False,
    "sample": {"max_new_tokens": 8},
    "max_prompts": 2,
    "eval_prompts": 2,
    "gate": {"min_pair_accuracy": 0.5},
}


@pytest.mark.worker
@pytest.mark.slow
def test_the_readme_script_runs_a_real_round_on_the_tiny_model_with_a_worker(
    live_server, dpo_project, celery_worker, tmp_path
):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Name a colour."}\n{"prompt": "Name a fruit."}\n')
    printed: list[str] = []
    names = {
        "URL": live_server.url, "USERNAME": "ada_admin", "PASSWORD": PASSWORD,
        "PROJECT": "readme-dpo", "POLICY": "tiny-base", "PROMPTS": str(prompts),
        "RECIPE": "iterated_dpo", "ROUND_SETTINGS": TINY_ROUND,
        "print": lambda *args: printed.append(" ".join(map(str, args))),
    }  # fmt: skip

    started = time.monotonic()
    exec(compile(readme_script(), "README.md", "exec"), names)  # noqa: S102 - our README
    took = time.monotonic() - started

    round_ = Round.objects.get(project=dpo_project)
    assert round_.status == RoundStatus.SUCCEEDED, (round_.error, celery_worker.log()[-3000:])
    assert round_.gate["passed"], round_.gate
    assert printed[1] == f"round {round_.number} made {round_.new_policy.name}"
    assert re.fullmatch(
        r"sft-old over tiny-base: \d\.\d\d \[\d\.\d\d, \d\.\d\d\] \(n=2\)", printed[2]
    )
    assert Task.objects.filter(project=dpo_project, kind="comparison").count() > 2
    print(f"the README's round took {took:.1f} s; gate {round_.gate}")
