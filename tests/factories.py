"""factory_boy factories and named personas for the tests."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from accounts.services import api_token_issue
from labeling.imports import messages_hash
from labeling.models import (
    Completion,
    Membership,
    ModelVersion,
    Project,
    Prompt,
    Role,
    Task,
    TaskCompletion,
)

User = get_user_model()


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-for-tests-123")


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"Project {n}")
    slug = factory.Sequence(lambda n: f"project-{n}")
    guidelines = "Be helpful, honest and harmless."
    k = 4
    overlap = 1


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.LABELER


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    project = factory.SubFactory(ProjectFactory)
    text = factory.Sequence(lambda n: f"Write a sentence about the number {n}.")
    messages = factory.LazyAttribute(lambda o: [{"role": "user", "content": o.text}])
    content_hash = factory.LazyAttribute(lambda o: messages_hash(o.messages))
    source = "factory"


class ModelVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelVersion

    project = factory.SubFactory(ProjectFactory)
    name = factory.Sequence(lambda n: f"model-{n}")
    kind = ModelVersion.Kind.EXTERNAL


class CompletionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Completion

    prompt = factory.SubFactory(PromptFactory)
    model_version = factory.SubFactory(
        ModelVersionFactory, project=factory.SelfAttribute("..prompt.project")
    )
    text = factory.Sequence(lambda n: f"Completion number {n}.")
    temperature = 0.7
    top_p = 1.0
    max_tokens = 64
    seed = factory.Sequence(int)


def demonstration_task(project: Project, prompt: Prompt | None = None, **kw) -> Task:
    prompt = prompt or PromptFactory(project=project)
    return Task.objects.create(
        project=project,
        kind=Task.Kind.DEMONSTRATION,
        prompt=prompt,
        overlap=project.demo_overlap,
        **kw,
    )


def ranking_task(
    project: Project, prompt: Prompt | None = None, texts: list[str] | None = None
) -> Task:
    """A ranking task over K completions from two model versions."""
    prompt = prompt or PromptFactory(project=project)
    models = [ModelVersionFactory(project=project), ModelVersionFactory(project=project)]
    texts = texts or [f"Answer {i} to {prompt.text}" for i in range(project.k)]
    task = Task.objects.create(
        project=project, kind=Task.Kind.RANKING, prompt=prompt, overlap=project.overlap
    )
    for i, text in enumerate(texts):
        c = CompletionFactory(prompt=prompt, model_version=models[i % 2], text=text)
        TaskCompletion.objects.create(task=task, completion=c, position=i)
    return task


def member(project: Project, username: str, role: str = Role.LABELER):
    user = UserFactory(username=username)
    Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    return user


def submitted_demonstration(
    project: Project, labeler, text: str, now, prompt: Prompt | None = None
):
    """A demonstration as if the labeler had claimed and submitted it."""
    from labeling.models import Demonstration, Lease

    task = demonstration_task(project, prompt)
    lease = Lease.objects.create(task=task, user=labeler, status="submitted", created_at=now,
                                 expires_at=now, heartbeat_at=now, submitted_at=now)  # fmt: skip
    return Demonstration.objects.create(task=task, prompt=task.prompt, labeler=labeler, lease=lease,
                                        text=text, created_at=now)  # fmt: skip


def submitted_ranking(project: Project, labeler, now, *, likert: int = 4, flags=()):
    """A new ranking task, and a ranking the labeler claims (the next ranking task in the queue)
    and submits through the queue: every output ranked in the order shown, each rated `likert`
    and flagged `flags`."""
    from labeling import queue, services
    from labeling.blinding import SLOTS

    ranking_task(project)
    lease = queue.claim_next(user_id=labeler.pk, project=project, kind="ranking", now=now)
    entries = [
        {"completion": slot, "rank": i + 1, "likert": likert, "flags": list(flags)}
        for i, slot in enumerate(SLOTS[: len(lease.shown_order)])
    ]
    ranking, _ = services.ranking_submit(
        lease_id=lease.pk, user_id=labeler.pk, entries=entries, now=now
    )
    return ranking


def api_key(user, *, lifetime=None) -> str:
    """The key of a new API token of `user` (never expiring unless `lifetime` says otherwise)."""
    return api_token_issue(user_id=user.pk, name="test", now=timezone.now(), lifetime=lifetime).key


def api_client(user):
    """A DRF test client that sends a new API token of `user`, as a script would."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_key(user)}")
    return client
