"""Let a crowd of simulated labelers work a project through the HTTP API of a running server.

    manage.py simulate_labelers --project demo --labelers 5 --url http://127.0.0.1:8000 [--suite demo]

Creates (once) the users sim-labeler-1..N as labelers of the project, issues each an API token
(a day's, revoking the last run's), then runs
training.demo.http_crowd.run_crowd against --url until the queue is empty for the kinds asked, or
--max-tasks / --seconds run out, and prints what was submitted. --suite names the task suite
(training.demo.suites) whose gold judge the labelers use and whose answers they write. The users and tokens are made
here with the ORM (the command runs on the server); all labeling goes over HTTP.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiToken
from accounts.services import api_token_issue
from labeling.models import Membership, Project, Role, Task
from training.demo.crowd import make_crowd
from training.demo.http_crowd import KINDS, run_crowd
from training.demo.suites import SUITES

TOKEN_NAME = "simulate_labelers"  # noqa: S105 - a token's label, not a secret
# Enough to calibrate the noise on the project's own outputs; more adds time, not accuracy.
CALIBRATION_TASKS = 300


def _kinds(value: str) -> list[str]:
    kinds = [k.strip() for k in value.split(",") if k.strip()]
    unknown = set(kinds) - set(KINDS)
    if not kinds or unknown:
        raise CommandError(f"--kinds takes a comma list of {', '.join(KINDS)}")
    return kinds


def simulated_tokens(*, project: Project, n: int) -> list[str]:
    """Fresh API tokens of sim-labeler-1..n, made labelers of `project` (users and roles made
    once; each run revokes the keys the last one issued)."""
    users = get_user_model().objects
    tokens = []
    with transaction.atomic():
        for i in range(1, n + 1):
            user, created = users.get_or_create(username=f"sim-labeler-{i}")
            if created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
            Membership.objects.get_or_create(
                project=project, user=user, defaults={"role": Role.LABELER}
            )
            # A fresh key each run (only digests are stored); the last run's keys are revoked.
            ApiToken.objects.filter(user=user, name=TOKEN_NAME).delete()
            issued = api_token_issue(
                user_id=user.pk, name=TOKEN_NAME, now=timezone.now(), lifetime=timedelta(days=1)
            )
            tokens.append(issued.key)
    return tokens


def calibration_rankings(*, project: Project) -> list[tuple[str, list[str]]]:
    """(prompt, completion texts) of the project's ranking tasks, to calibrate the noise on."""
    tasks = (
        Task.objects.filter(project=project, kind=Task.Kind.RANKING)
        .select_related("prompt")
        .prefetch_related("task_completions__completion")
        .order_by("-pk")[:CALIBRATION_TASKS]
    )
    return [
        (task.prompt.text, [tc.completion.text for tc in task.task_completions.all()])
        for task in tasks
    ]


class Command(BaseCommand):
    help = "Run simulated labelers against a server's HTTP API until the project's queue is empty."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--url", default="http://127.0.0.1:8000", help="The server to label on."
        )
        parser.add_argument("--project", required=True, help="The project's slug.")
        parser.add_argument("--labelers", type=int, default=5, help="How many simulated labelers.")
        parser.add_argument(
            "--kinds",
            type=_kinds,
            default=list(KINDS),
            help="Comma list of task kinds to work (default: all).",
        )
        parser.add_argument("--max-tasks", type=int, default=None, help="Stop after this many.")
        parser.add_argument("--seconds", type=float, default=None, help="Stop after this long.")
        parser.add_argument(
            "--agreement",
            type=float,
            default=0.73,
            help="Target pairwise agreement on ranking pairs (InstructGPT: 0.726).",
        )
        parser.add_argument(
            "--suite",
            choices=sorted(SUITES),
            default="demo",
            help="The task suite whose judge the labelers use (default: demo).",
        )
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"No project with slug {options['project']!r}.")
        if options["labelers"] < 1:
            raise CommandError("--labelers must be at least 1.")
        if not 0.5 < options["agreement"] < 1:
            raise CommandError("--agreement must be between 0.5 and 1.")
        tokens = simulated_tokens(project=project, n=options["labelers"])
        crowd = make_crowd(
            len(tokens),
            agreement=options["agreement"],
            seed=options["seed"],
            rankings=calibration_rankings(project=project) or None,
            suite=options["suite"],
        )
        for labeler in crowd:
            self.stdout.write(
                f"{labeler.name}: noise {labeler.noise:.3f}, skill {labeler.skill:.2f}, "
                f"skips {labeler.skip_rate:.1%}"
            )
        summary = run_crowd(
            options["url"],
            tokens,
            project.pk,
            kinds=options["kinds"],
            crowd=crowd,
            seed=options["seed"],
            max_tasks=options["max_tasks"],
            seconds=options["seconds"],
        )
        self.stdout.write("\n".join(summary.lines()))
