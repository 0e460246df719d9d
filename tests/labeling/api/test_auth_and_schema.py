"""Tokens, CSRF on session-authenticated requests, the OpenAPI schema. (Token lifetimes,
revocation and create_token: tests/accounts/.)"""

from __future__ import annotations

import pytest
from django.middleware.csrf import _get_new_csrf_string
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

from accounts.models import ApiToken
from tests.factories import api_key, demonstration_task

pytestmark = pytest.mark.django_db


def test_a_token_is_given_for_the_right_password_only(personas):
    client = APIClient()
    url = "/api/v1/auth/token/"
    wrong = client.post(url, {"username": "alice_labeler", "password": "nope"}, format="json")
    assert wrong.status_code == 400 and "token" not in wrong.json()
    right = client.post(
        url, {"username": "alice_labeler", "password": "pw-for-tests-123"}, format="json"
    )
    assert right.status_code == 200
    token = ApiToken.objects.get(user=personas.alice)
    assert right.json()["id"] == token.pk
    client.credentials(HTTP_AUTHORIZATION=f"Token {right.json()['token']}")
    assert client.get("/api/v1/projects/").status_code == 200


def test_an_anonymous_or_bad_token_request_is_a_401(project, personas):
    client = APIClient()
    assert client.get("/api/v1/projects/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert client.get("/api/v1/projects/").status_code == 401


def test_a_session_authenticated_post_without_a_csrf_token_is_a_403(project, personas):
    demonstration_task(project)
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(personas.alice)
    url = f"/api/v1/projects/{project.pk}/next/"
    body = {"kind": "demonstration"}
    assert client.get(f"/api/v1/projects/{project.pk}/").status_code == 200
    assert client.post(url, body, format="json").status_code == 403
    csrf = _get_new_csrf_string()
    client.cookies["csrftoken"] = csrf
    wrong = client.post(url, body, format="json", HTTP_X_CSRFTOKEN=_get_new_csrf_string())
    assert wrong.status_code == 403
    assert client.post(url, body, format="json", HTTP_X_CSRFTOKEN=csrf).status_code == 200


def test_a_token_authenticated_post_needs_no_csrf_token(project, personas):
    demonstration_task(project)
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_key(personas.alice)}")
    response = client.post(
        f"/api/v1/projects/{project.pk}/next/", {"kind": "demonstration"}, format="json"
    )
    assert response.status_code == 200


def test_the_schema_endpoint_serves_valid_openapi_documenting_every_api_path():
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    validate_schema(schema)
    paths = schema["paths"]
    for path, method in [
        ("/api/v1/auth/token/", "post"),
        ("/api/v1/auth/tokens/", "get"),
        ("/api/v1/auth/tokens/{token_id}/", "delete"),
        ("/api/v1/projects/", "get"),
        ("/api/v1/projects/", "post"),
        ("/api/v1/projects/{project_id}/", "patch"),
        ("/api/v1/projects/{project_id}/next/", "post"),
        ("/api/v1/leases/{lease_id}/heartbeat/", "post"),
        ("/api/v1/leases/{lease_id}/reclaim/", "post"),
        ("/api/v1/leases/{lease_id}/skip/", "post"),
        ("/api/v1/leases/{lease_id}/demonstration/", "post"),
        ("/api/v1/leases/{lease_id}/ranking/", "post"),
        ("/api/v1/projects/{project_id}/prompts/import/", "post"),
        ("/api/v1/projects/{project_id}/ranking-tasks/import/", "post"),
        ("/api/v1/projects/{project_id}/members/", "post"),
        ("/api/v1/projects/{project_id}/members/{user_id}/", "delete"),
        ("/api/v1/projects/{project_id}/export/sft/", "get"),
        ("/api/v1/projects/{project_id}/export/preferences/", "get"),
        ("/api/v1/projects/{project_id}/export/rankings/", "get"),
        ("/api/v1/projects/{project_id}/progress/", "get"),
        ("/api/v1/projects/{project_id}/agreement/", "get"),
        ("/api/v1/projects/{project_id}/labelers/", "get"),
        ("/api/v1/projects/{project_id}/evaluation/", "get"),
        ("/api/v1/projects/{project_id}/runs/", "get"),
        ("/api/v1/projects/{project_id}/runs/", "post"),
        ("/api/v1/projects/{project_id}/models/{version_id}/", "get"),
        ("/api/v1/projects/{project_id}/runs/{run_id}/", "get"),
        ("/api/v1/projects/{project_id}/runs/{run_id}/cancel/", "post"),
        ("/api/v1/projects/{project_id}/rounds/", "get"),
        ("/api/v1/projects/{project_id}/rounds/", "post"),
        ("/api/v1/projects/{project_id}/rounds/{number}/", "get"),
        ("/api/v1/projects/{project_id}/rounds/{number}/cancel/", "post"),
        ("/api/v1/projects/{project_id}/demonstrations/", "get"),
        ("/api/v1/projects/{project_id}/rankings/", "get"),
        ("/api/v1/projects/{project_id}/comparisons/", "get"),
        ("/api/v1/projects/{project_id}/runs/{run_id}/resume/", "post"),
        ("/api/v1/projects/{project_id}/evaluation-tasks/", "post"),
        ("/api/v1/projects/{project_id}/models/", "get"),
        ("/api/v1/projects/{project_id}/models/{version_id}/completions/", "get"),
        ("/api/v1/projects/{project_id}/model-registrations/", "post"),
    ]:
        assert method in paths[path], (path, method)
    next_op = paths["/api/v1/projects/{project_id}/next/"]["post"]
    assert set(next_op["responses"]) >= {"200", "204", "403", "404"}
    lease_task = schema["components"]["schemas"]["LeaseTask"]["properties"]
    assert {"lease_id", "expires_at", "kind", "task_id", "prompt", "completions", "flags", "k"} <= (
        set(lease_task)
    )
    shown = schema["components"]["schemas"]["ShownCompletion"]["properties"]
    assert set(shown) == {"id", "text"}  # never the model
    ranking_in = schema["components"]["schemas"]["RankingSubmit"]["properties"]
    assert {"entries", "none_acceptable", "notes", "time_spent_ms"} == set(ranking_in)
