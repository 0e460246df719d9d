"""`manage.py simulate_labelers` against a live server: the crowd drains a mixed queue over HTTP."""

from __future__ import annotations

import io
import random
import re
from dataclasses import replace

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from accounts.models import ApiToken
from labeling import selectors, services
from labeling.models import (
    Comparison,
    Completion,
    Demonstration,
    Lease,
    Membership,
    Ranking,
    RankingEntry,
    Role,
    Task,
)
from tests.factories import (
    ModelVersionFactory,
    ProjectFactory,
    PromptFactory,
    demonstration_task,
    member,
)
from training.demo.crowd import make_crowd, synthetic_completions
from training.demo.families import gold_response, sample_prompts
from training.demo.http_crowd import KINDS, run_crowd
from training.management.commands.simulate_labelers import simulated_tokens

pytestmark = pytest.mark.django_db(transaction=True)

DEMOS, RANKINGS, COMPARISONS = 8, 48, 8


@pytest.fixture(autouse=True)
def _close_server_connections():
    # The live server thread keeps its Postgres connection open (CONN_MAX_AGE) and the test
    # database could not be dropped; close connections at the end of every request instead.
    from django.db import connections

    connections.settings["default"]["CONN_MAX_AGE"] = 0


@pytest.fixture
def mixed_project():
    """Demonstration, ranking (K=4) and A/B tasks over demo prompts, each wanted by 2-3 people."""
    project = ProjectFactory(slug="sim-mixed", k=4, overlap=3, demo_overlap=2)
    member(project, "ada_admin", Role.ADMIN)
    prompts = iter(sample_prompts(DEMOS + RANKINGS + COMPARISONS, seed=5))
    rng = random.Random(5)
    policy, sft = (ModelVersionFactory(project=project, name=n) for n in ("policy", "sft"))
    for _ in range(DEMOS):
        demonstration_task(project, PromptFactory(project=project, text=next(prompts)))
    for _ in range(RANKINGS):
        prompt = PromptFactory(project=project, text=next(prompts))
        completions = [
            Completion.objects.create(prompt=prompt, model_version=policy, text=text)
            for text in synthetic_completions(prompt.text, 4, rng)
        ]
        services.ranking_task_create(project=project, prompt=prompt, completions=completions)
    for _ in range(COMPARISONS):
        prompt = PromptFactory(project=project, text=next(prompts))
        first, second = (
            Completion.objects.create(prompt=prompt, model_version=version, text=text)
            for version, text in (
                (policy, gold_response(prompt.text)),
                (sft, synthetic_completions(prompt.text, 4, rng)[-1]),
            )
        )
        services.comparison_task_create(project=project, prompt=prompt, first=first, second=second)
    return project


def _simulate(live_server, *args: str) -> str:
    out = io.StringIO()
    call_command(
        "simulate_labelers", "--url", live_server.url, "--project", "sim-mixed", *args, stdout=out
    )
    return out.getvalue()


def _reported(output: str, what: str) -> int:
    return int(re.search(rf"^\s*{what}: (\d+)", output, re.MULTILINE).group(1))


@pytest.mark.slow
def test_a_crowd_drains_a_mixed_queue_with_overlap_respected_and_agreement_near_target(
    mixed_project, live_server
):
    output = _simulate(live_server, "--labelers", "6", "--seed", "3", "--agreement", "0.73")

    # Every task got exactly its overlap of submissions, one per labeler, nothing more.
    assert Demonstration.objects.count() == DEMOS * 2
    assert Ranking.objects.count() == RANKINGS * 3
    assert RankingEntry.objects.count() == RANKINGS * 3 * 4
    assert Comparison.objects.count() == COMPARISONS * 3
    assert not Task.objects.filter(project=mixed_project, done=False).exists()
    for task in Task.objects.filter(project=mixed_project):
        submitted = task.leases.filter(status=Lease.Status.SUBMITTED)
        assert submitted.count() == task.overlap
        assert len(set(submitted.values_list("user_id", flat=True))) == task.overlap
    # ... all by the simulated labelers, and the summary says what the database holds.
    sim_users = set(
        get_user_model()
        .objects.filter(username__startswith="sim-labeler-")
        .values_list("pk", flat=True)
    )
    assert len(sim_users) == 6
    assert set(Ranking.objects.values_list("labeler_id", flat=True)) <= sim_users
    assert _reported(output, "demonstration") == DEMOS * 2
    assert _reported(output, "ranking") == RANKINGS * 3
    assert _reported(output, "comparison") == COMPARISONS * 3
    assert _reported(output, "skips") == Lease.objects.filter(status=Lease.Status.SKIPPED).count()
    assert _reported(output, "errors") == 0

    agreement = selectors.labeler_agreement(project=mixed_project)
    assert agreement["comparisons"] > 700  # 48 tasks x 3 labeler pairs x 6 output pairs, less ties
    assert agreement["overall"] == pytest.approx(0.73, abs=0.07)

    # Running it again makes no new users, swaps each one's token for a fresh one (only digests
    # are kept, so a key cannot be read back), and finds nothing left to do.
    tokens = set(ApiToken.objects.values_list("digest", flat=True))
    again = _simulate(live_server, "--labelers", "6", "--seed", "4")
    assert ApiToken.objects.count() == len(tokens) == 6
    assert not tokens & set(ApiToken.objects.values_list("digest", flat=True))
    assert Membership.objects.filter(project=mixed_project, role=Role.LABELER).count() == 6
    assert sum(_reported(again, kind) for kind in KINDS) == 0


def test_the_crowd_stops_at_max_tasks_and_works_only_the_kinds_asked(mixed_project, live_server):
    output = _simulate(
        live_server, "--labelers", "3", "--kinds", "ranking,comparison", "--max-tasks", "7"
    )

    handled = Lease.objects.exclude(status=Lease.Status.ACTIVE).count()
    assert handled == 7
    assert Demonstration.objects.count() == 0
    assert "demonstration" not in output
    assert (
        _reported(output, "ranking") + _reported(output, "comparison") + _reported(output, "skips")
        == 7
    )


def test_an_unknown_project_or_kind_is_refused(mixed_project, live_server):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="No project"):
        call_command("simulate_labelers", "--project", "nope", "--url", live_server.url)
    with pytest.raises(CommandError, match="--kinds"):
        _simulate(live_server, "--kinds", "ranking,essays")


def test_tasks_a_labeler_skips_go_to_the_others_until_the_queue_is_empty(live_server):
    project = ProjectFactory(slug="sim-skips", k=4, overlap=2, demo_overlap=2)
    for text in sample_prompts(12, seed=8):
        demonstration_task(project, PromptFactory(project=project, text=text))
    tokens = simulated_tokens(project=project, n=3)
    quitter, *workers = make_crowd(3, seed=1)
    crowd = [replace(quitter, skip_rate=1.0), *(replace(w, skip_rate=0.0) for w in workers)]

    summary = run_crowd(
        live_server.url, tokens, project.pk, kinds=["demonstration"], crowd=crowd, seed=1
    )

    assert summary.submitted == {"demonstration": 24}
    assert summary.errors == 0
    assert Demonstration.objects.filter(labeler__username="sim-labeler-1").count() == 0
    skipped = Lease.objects.filter(status=Lease.Status.SKIPPED)
    assert summary.skips == skipped.count() > 0
    assert set(skipped.values_list("user__username", flat=True)) == {"sim-labeler-1"}


def test_the_crowd_stops_when_its_time_is_up(mixed_project, live_server):
    output = _simulate(live_server, "--labelers", "2", "--seconds", "0")

    assert sum(_reported(output, kind) for kind in KINDS) == 0
    assert not Lease.objects.exists()


def test_with_suite_errands_the_crowd_writes_that_suites_answers(live_server):
    from training.demo import errands

    project = ProjectFactory(slug="sim-errands", k=4, overlap=2, demo_overlap=1)
    prompts = errands.sample_prompts(10, seed=2)
    for text in prompts:
        demonstration_task(project, PromptFactory(project=project, text=text))
    out = io.StringIO()
    call_command(
        "simulate_labelers", "--url", live_server.url, "--project", "sim-errands",
        "--labelers", "2", "--kinds", "demonstration", "--suite", "errands", stdout=out,
    )  # fmt: skip

    demos = Demonstration.objects.select_related("task__prompt")
    assert _reported(out.getvalue(), "demonstration") == demos.count() == 10
    golds = [d for d in demos if d.text == errands.gold_response(d.task.prompt.text)]
    assert len(golds) >= 5  # skill is 0.6 to 0.95; the demo suite has no answer to these prompts


def test_an_unknown_suite_is_refused(mixed_project, live_server):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="--suite"):
        _simulate(live_server, "--suite", "nope")
