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
import threading
import time
from pathlib import Path

import pytest
from django.utils import timezone

from labeling import queue, services
from labeling.blinding import SLOTS
from labeling.models import Role, Split, Task
from tests.factories import (
    CompletionFactory,
    ModelVersionFactory,
    ProjectFactory,
    PromptFactory,
    member,
    ranking_task,
)
from tests.training.jobs.test_rounds import GOOD, _samples, _succeed
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
    ranking_task(project)
    lease = queue.claim_next(user_id=alice.pk, project=project, kind="ranking", now=now)
    entries = [
        {"completion": c, "rank": i + 1, "likert": 5, "flags": []}
        for i, c in enumerate(SLOTS[: len(lease.shown_order)])
    ]
    services.ranking_submit(lease_id=lease.pk, user_id=alice.pk, entries=entries, now=now)
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
        "PROJECT": "readme", "POLICY": "sft-0", "PROMPTS": str(prompts), "ROUND_SETTINGS": {},
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
