from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from labeling import queue
from labeling.blinding import SLOTS
from labeling.models import Task
from tests.factories import api_key, demonstration_task, ranking_task


@pytest.fixture
def client_for(db):
    """An API client that authenticates as `user` with a real token (anonymous for None)."""

    def make(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Token {api_key(user)}")
        return client

    return make


@pytest.fixture
def alice_leases(project, personas, now):
    """Alice holds one demonstration lease and one ranking lease in the project."""
    demonstration_task(project)
    ranking_task(project)

    class L:
        demonstration = queue.claim_next(
            user_id=personas.alice.pk, project=project, kind=Task.Kind.DEMONSTRATION, now=now
        )
        ranking = queue.claim_next(
            user_id=personas.alice.pk, project=project, kind=Task.Kind.RANKING, now=now
        )

    return L


def entries_for(lease, ranks, likert=4, flags=()):
    """Ranking entries in the lease's shown order, each output by its slot letter, with the
    given ranks."""
    return [
        {"completion": slot, "rank": r, "likert": likert, "flags": list(flags)}
        for slot, r in zip(SLOTS, ranks, strict=False)
    ]


def jsonl(response) -> list:
    body = b"".join(response.streaming_content)
    # Lines end at "\n" only (str.splitlines would also split at a U+2028 inside a text).
    return [json.loads(line) for line in body.split(b"\n") if line]
