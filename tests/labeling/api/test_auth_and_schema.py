"""Tokens, CSRF on session-authenticated requests, the create_token command, the OpenAPI schema."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.middleware.csrf import _get_new_csrf_string
from drf_spectacular.validation import validate_schema
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import demonstration_task

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
    assert right.json()["token"] == Token.objects.get(user=personas.alice).key


def test_an_anonymous_or_bad_token_request_is_a_401(project, personas):
    client = APIClient()
    assert client.get("/api/v1/projects/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert client.get("/api/v1/projects/").status_code == 401


def test_a_session_authenticated_post_without_a_csrf_token_is_a_403(project, personas):
    demonstration_task(project)
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="alice_labeler", password="pw-for-tests-123")
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
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=personas.alice).key}")
    response = client.post(
        f"/api/v1/projects/{project.pk}/next/", {"kind": "demonstration"}, format="json"
    )
    assert response.status_code == 200


def test_create_token_prints_the_users_token_and_rotates_it_on_request(personas):
    out = io.StringIO()
    call_command("create_token", "alice_labeler", stdout=out)
    first = out.getvalue().strip()
    assert first == Token.objects.get(user=personas.alice).key
    out = io.StringIO()
    call_command("create_token", "alice_labeler", "--rotate", stdout=out)
    assert out.getvalue().strip() == Token.objects.get(user=personas.alice).key != first
    with pytest.raises(CommandError):
        call_command("create_token", "nobody")


def test_the_schema_endpoint_serves_valid_openapi_documenting_every_api_path():
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    validate_schema(schema)
    paths = schema["paths"]
    for path, method in [
        ("/api/v1/auth/token/", "post"),
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
        ("/api/v1/projects/{project_id}/demonstrations/", "get"),
        ("/api/v1/projects/{project_id}/rankings/", "get"),
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
