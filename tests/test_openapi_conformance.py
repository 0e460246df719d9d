"""Every operation of the OpenAPI schema answers as documented (issue 16), checked by schemathesis.

The schema is the one /api/schema/ serves, loaded through the Django WSGI app in-process; one test
per operation is generated from it, so an endpoint added later is covered without touching this
file. Each test seeds a project with real objects (members, a lease of each kind, model versions,
runs, rounds, a registration, a spare token), points the operation's path parameters at them so
that the calls reach 2xx answers rather than 404s, and sends a handful of derandomized cases
authenticated as the project's admin with a real token:

- generated valid input (positive mode): no 5xx, the status code is documented, so is the
  content type, and the body conforms to the documented schema; where a generated body would
  hardly ever be accepted (real names, a ranking of the lease's outputs), a known-good one is sent
  once instead (World.good_body), so every operation meets its success answer too;
- generated malformed input (negative mode: wrong types, missing required fields, values out
  of the documented range, malformed ids in the path): a documented 4xx;
- a method the path does not document: 405 with Allow.

A new path parameter needs a real object in World.path_parameters (the test says so).

A failure prints the request (as a curl command) and what did not conform.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from accounts.services import api_token_issue
from labeling import queue, services
from labeling.models import Role, Split, Task
from tests.factories import (
    CompletionFactory,
    ModelVersionFactory,
    ProjectFactory,
    PromptFactory,
    api_key,
    demonstration_task,
    member,
    ranking_task,
    submitted_demonstration,
)
from training.models import ModelRegistration, Round, RoundStatus, RunStatus, TrainingRun

pytestmark = pytest.mark.django_db

# Cases per operation and mode: enough to meet each documented answer, small enough that the
# whole file stays under a minute.
MAX_EXAMPLES = 8

app = WSGIHandler()
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", app)
schema.config.generation.update(
    max_examples=MAX_EXAMPLES,
    deterministic=True,
    modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
    # A query parameter the schema does not name is ignored, as HTTP servers do: not malformed.
    allow_extra_parameters=False,
)

POSITIVE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    unsupported_method,
]
NEGATIVE_CHECKS = [*POSITIVE_CHECKS, negative_data_rejection]


@pytest.fixture
def in_process_app() -> Iterator[WSGIHandler]:
    """Django's WSGI app on the test's own connection: a request's start and end must not close
    it (it holds the test's transaction), as Django's test client arranges for itself."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield app
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


class World:
    """A project with something behind every path parameter, and its admin's token."""

    def __init__(self, operation: str, model_root: Path) -> None:
        now = timezone.now()
        self.project = ProjectFactory(k=4, overlap=1)
        self.admin = member(self.project, "ada_admin", Role.ADMIN)
        self.labeler = member(self.project, "alice_labeler")
        self.leaving = member(self.project, "lou_leaving")
        self.key = api_key(self.admin)
        self.spare_token = self._spare_token(now)
        models = {}
        for name, kind, parent in [
            ("tiny-base", "base", None),
            ("sft-1", "sft", "tiny-base"),
            ("ppo-1", "policy", "sft-1"),
            ("rm-1", "reward", "sft-1"),
        ]:
            (model_root / name).mkdir(parents=True)
            models[name] = ModelVersionFactory(
                project=self.project, name=name, kind=kind, path=name, parent=models.get(parent)
            )
        base, sft, policy = models["tiny-base"], models["sft-1"], models["ppo-1"]
        # Work done, and work in the queue: a lease of each kind held by the admin.
        submitted_demonstration(self.project, self.labeler, "A good answer.", now)
        demonstration_task(self.project)
        demonstration_task(self.project)
        ranking_task(self.project)
        prompt = PromptFactory(project=self.project, split=Split.TEST)
        first = CompletionFactory(prompt=prompt, model_version=sft)
        second = CompletionFactory(prompt=prompt, model_version=policy)
        services.comparison_task_create(
            project=self.project, prompt=prompt, first=first, second=second
        )
        # The labeler's ranking, so that rounds and reward models have data to train on.
        ranking_task(self.project)
        ranked = queue.claim_next(
            user_id=self.labeler.pk, project=self.project, kind=Task.Kind.RANKING, now=now
        )
        services.ranking_submit(
            lease_id=ranked.pk,
            user_id=self.labeler.pk,
            entries=[
                {"completion": slot, "rank": rank, "likert": 4, "flags": []}
                for slot, rank in zip("ABCD", range(1, 5), strict=True)
            ],
            now=now,
        )
        self.leases = {
            kind: queue.claim_next(user_id=self.admin.pk, project=self.project, kind=kind, now=now)
            for kind in (Task.Kind.DEMONSTRATION, Task.Kind.RANKING, Task.Kind.COMPARISON)
        }
        # Runs and rounds: a finished one with metrics, a queued one to cancel.
        self.finished_run = TrainingRun.objects.create(
            project=self.project, kind="sft", base_model=base, status=RunStatus.SUCCEEDED,
            model_version=sft, finished_at=now,
        )  # fmt: skip
        self.queued_run = TrainingRun.objects.create(
            project=self.project, kind="sft", base_model=base
        )
        self.failed_run = TrainingRun.objects.create(
            project=self.project, kind="sft", base_model=base, status=RunStatus.FAILED,
            error="Out of memory.", finished_at=now,
        )  # fmt: skip
        self.judged_round = Round.objects.create(
            project=self.project, number=1, policy=sft, new_policy=policy,
            status=RoundStatus.SUCCEEDED, finished_at=now,
        )  # fmt: skip
        # A running round blocks starting one: there is one only where it is to be cancelled.
        self.running_round = None
        if "/rounds/{number}/cancel/" in operation:
            self.running_round = Round.objects.create(
                project=self.project, number=2, policy=policy, status=RoundStatus.RUNNING
            )
        self.registration = ModelRegistration.objects.create(
            project=self.project, name="their-model", source_kind="hub", source="org/model"
        )
        self.models = {"base": base, "sft": sft, "policy": policy}
        self._good_body_sent = False

    def _spare_token(self, now: datetime) -> int:
        """A second token of the admin's, for the revoke operation (not the one in use)."""
        return api_token_issue(user_id=self.admin.pk, name="spare", now=now, lifetime=None).token.pk

    def path_parameters(self, path: str) -> dict[str, int]:
        """Real ids for the operation at `path`: the lease a lease action acts on is of the kind
        it takes, a cancel or a resume names a run or round it can act on."""
        lease = self.leases[Task.Kind.DEMONSTRATION]
        if path.endswith("/ranking/"):
            lease = self.leases[Task.Kind.RANKING]
        elif path.endswith("/comparison/"):
            lease = self.leases[Task.Kind.COMPARISON]
        run = self.finished_run
        if path.endswith("/cancel/"):
            run = self.queued_run
        elif path.endswith("/resume/"):
            run = self.failed_run
        return {
            "project_id": self.project.pk,
            "lease_id": lease.pk,
            "user_id": self.leaving.pk,
            "token_id": self.spare_token,
            "version_id": self.models["policy"].pk,
            "run_id": run.pk,
            "number": (self.running_round or self.judged_round).number,
            "registration_id": self.registration.pk,
        }

    def good_body(self, method: str, path: str) -> dict[str, Any] | None:
        """A body the operation accepts, where generated ones would hardly ever be (names of
        real users and models, a ranking of the lease's outputs): sent once, in place of the
        first generated valid body, so that the check meets the operation's 2xx answer."""
        if self._good_body_sent:
            return None
        k = self.project.k
        bodies = {
            "POST /api/v1/auth/token/": {"username": "ada_admin", "password": "pw-for-tests-123"},
            "POST /api/v1/leases/{lease_id}/ranking/": {
                "entries": [
                    {"completion": slot, "rank": rank, "likert": 4, "flags": []}
                    for slot, rank in zip("ABCDEFGHI", range(1, k + 1), strict=False)
                ]
            },
            "POST /api/v1/projects/{project_id}/members/": {
                "username": "alice_labeler",
                "role": Role.REVIEWER,
            },
            "POST /api/v1/projects/{project_id}/prompts/import/": {
                "records": [{"prompt": "Name three primary colours."}]
            },
            "POST /api/v1/projects/{project_id}/ranking-tasks/import/": {
                "records": [
                    {
                        "prompt": "Name a colour.",
                        "completions": [
                            {"text": f"Colour {i}.", "model": "their-model"} for i in range(k)
                        ],
                    }
                ]
            },
            "POST /api/v1/projects/{project_id}/model-registrations/": {
                "name": "smol",
                "source_kind": "hub",
                "source": "org/smol",
            },  # fmt: skip
            "POST /api/v1/projects/{project_id}/runs/": {"kind": "sft", "base_model": "tiny-base"},
            "POST /api/v1/projects/{project_id}/evaluation-tasks/": {
                "model_a": "sft-1",
                "model_b": "ppo-1",
            },  # fmt: skip
            "POST /api/v1/projects/{project_id}/rounds/": {
                "policy": "ppo-1",
                "recipe": "iterated_dpo",
            },  # fmt: skip
        }
        body = bodies.get(f"{method} {path}")
        self._good_body_sent = body is not None
        return body


@pytest.fixture
def world(request, db, settings, tmp_path) -> World:
    settings.MODEL_ROOT = tmp_path / "models"
    settings.MODEL_IMPORT_ROOT = tmp_path / "import"
    return World(operation=request.node.name, model_root=settings.MODEL_ROOT)


@schema.parametrize()
# The world is built once per operation: its cases share it, as a client's calls share a server.
@hypothesis.settings(
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture], database=None
)
def test_the_operation_answers_as_documented(case, world, in_process_app):
    components = case.meta.components if case.meta is not None else {}
    path = components.get(ParameterLocation.PATH)
    if case.path_parameters and (path is None or path.mode.is_positive):
        # Valid ids are replaced by real ones; malformed ones stay, to be refused.
        known = world.path_parameters(case.path)
        unknown = set(case.path_parameters) - set(known)
        assert not unknown, f"World has nothing behind {sorted(unknown)}: seed it, or only 404s"
        case.path_parameters = {name: known[name] for name in case.path_parameters}
    case.headers = {**(case.headers or {}), "Authorization": f"Token {world.key}"}
    negative = any(component.mode.is_negative for component in components.values())
    good = None if negative else world.good_body(case.method, case.path)
    if good is not None:
        case.body, case.media_type = good, "application/json"
    checks = NEGATIVE_CHECKS if negative else POSITIVE_CHECKS
    case.call_and_validate(app=in_process_app, checks=checks)


def test_every_operation_documents_the_answers_of_the_stack_it_runs_on():
    """The answers no generated case meets here (labeling/api/openapi.py adds them): 503 while
    the database is unreachable, 401 without a valid token, 413 and 415 for a body too large or
    of a type not read."""
    missing = []
    for path, operations in schema.raw_schema["paths"].items():
        for method, operation in operations.items():
            expected = {"503"}
            if path != "/api/v1/auth/token/":
                expected.add("401")
            if method in ("post", "put", "patch"):
                expected |= {"413", "415"}
            if "{" in path:
                expected.add("404")
            lacking = expected - set(operation["responses"])
            if lacking:
                missing.append(f"{method.upper()} {path}: {sorted(lacking)}")
    assert not missing, missing
