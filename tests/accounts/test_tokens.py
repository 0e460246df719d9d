"""API tokens: expiry, revocation, listing your own (never anyone else's), keys never stored, the
create_token command, and DRF tokens made by older code. Each test says what it tried."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts import services
from accounts.models import ApiToken
from tests.factories import api_key

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-tests-123"


def with_key(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def works(key: str) -> bool:
    status = with_key(key).get("/api/v1/projects/").status_code
    assert status in {200, 401}
    return status == 200


def get_token(username: str, **options) -> dict:
    response = APIClient().post(
        "/api/v1/auth/token/",
        {"username": username, "password": PASSWORD, **options},
        format="json",
    )
    assert response.status_code == 200, response.content
    return response.json()


def test_each_login_issues_a_new_token_and_stores_only_its_digest(personas):
    first, second = get_token("alice_labeler"), get_token("alice_labeler", name="my script")
    assert first["token"] != second["token"] and works(first["token"]) and works(second["token"])
    assert second["name"] == "my script" and first["token"].startswith(first["prefix"])
    stored = ApiToken.objects.get(pk=first["id"])
    assert stored.digest == services.token_digest(first["token"])
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_apitoken")
        assert not any(first["token"] in str(value) for row in cursor.fetchall() for value in row)


def test_a_token_expires_after_the_default_lifetime_unless_asked_otherwise(personas, settings):
    settings.API_TOKEN_DAYS = 90
    default = get_token("alice_labeler")
    week = get_token("alice_labeler", expires_in_days=7)
    never = get_token("alice_labeler", expires_in_days=0)
    created = ApiToken.objects.get(pk=default["id"]).created_at
    assert ApiToken.objects.get(pk=default["id"]).expires_at == created + timedelta(days=90)
    assert ApiToken.objects.get(pk=week["id"]).expires_at - timedelta(days=7) <= timezone.now()
    assert never["expires_at"] is None


@pytest.mark.parametrize("days", [-1, 3651, "soon"])
def test_a_lifetime_out_of_range_is_a_400(personas, days):
    response = APIClient().post(
        "/api/v1/auth/token/",
        {"username": "alice_labeler", "password": PASSWORD, "expires_in_days": days},
        format="json",
    )
    assert response.status_code == 400 and "expires_in_days" in response.json()
    assert not ApiToken.objects.exists()


def test_an_expired_token_is_a_401(personas):
    key = api_key(personas.alice, lifetime=timedelta(days=1))
    assert works(key)
    ApiToken.objects.update(
        created_at=timezone.now() - timedelta(days=2), expires_at=timezone.now() - timedelta(days=1)
    )
    response = with_key(key).get("/api/v1/projects/")
    assert response.status_code == 401 and response.json()["detail"] == "Token expired."


def test_a_revoked_token_is_a_401_at_once(personas):
    issued = get_token("alice_labeler")
    alice = with_key(issued["token"])
    assert alice.delete(f"/api/v1/auth/tokens/{issued['id']}/").status_code == 204
    assert alice.get("/api/v1/projects/").status_code == 401
    assert not ApiToken.objects.filter(pk=issued["id"]).exists()


def test_a_user_lists_only_their_own_tokens_never_a_key(personas):
    mine = [get_token("alice_labeler", name=f"alice {i}") for i in range(2)]
    get_token("bob_labeler", name="bob's")
    listing = with_key(mine[0]["token"]).get("/api/v1/auth/tokens/").json()
    assert [t["name"] for t in listing["results"]] == ["alice 1", "alice 0"]
    assert all("token" not in t and "digest" not in t for t in listing["results"])


def test_a_user_cannot_revoke_another_users_token(personas):
    bobs = get_token("bob_labeler")
    alice = with_key(api_key(personas.alice))
    assert alice.delete(f"/api/v1/auth/tokens/{bobs['id']}/").status_code == 404
    assert alice.delete("/api/v1/auth/tokens/999999/").status_code == 404
    assert works(bobs["token"])


def test_the_token_list_and_revoke_need_a_signed_in_user(personas):
    issued = get_token("alice_labeler")
    anonymous = APIClient()
    assert anonymous.get("/api/v1/auth/tokens/").status_code == 401
    assert anonymous.delete(f"/api/v1/auth/tokens/{issued['id']}/").status_code == 401
    assert works(issued["token"])


def test_a_token_cannot_mint_another_token(personas):
    alice = with_key(api_key(personas.alice, lifetime=timedelta(days=1)))
    assert alice.post("/api/v1/auth/tokens/", {"name": "forever"}, format="json").status_code == 405
    assert alice.post("/api/v1/auth/token/", {}, format="json").status_code == 400
    assert ApiToken.objects.count() == 1


def test_an_inactive_users_token_is_a_401(personas):
    key = api_key(personas.alice)
    personas.alice.is_active = False
    personas.alice.save()
    assert not works(key)


def test_last_use_is_noted_about_once_an_hour_not_on_every_call(personas):
    key = api_key(personas.alice)
    alice = with_key(key)
    alice.get("/api/v1/projects/")
    first = ApiToken.objects.get().last_used_at
    assert first is not None
    with CaptureQueriesContext(connection) as queries:
        alice.get("/api/v1/projects/")
    assert not any("accounts_apitoken" in q["sql"] and "UPDATE" in q["sql"] for q in queries)
    ApiToken.objects.update(last_used_at=first - services.LAST_USED_PRECISION)
    alice.get("/api/v1/projects/")
    assert ApiToken.objects.get().last_used_at > first


def test_create_token_prints_a_working_key_with_an_expiry_and_rotates_on_request(personas):
    out = io.StringIO()
    call_command("create_token", "alice_labeler", "--expires-in-days", "7", stdout=out)
    first = out.getvalue().strip()
    assert works(first)
    token = ApiToken.objects.get(user=personas.alice)
    assert token.expires_at - token.created_at == timedelta(days=7)
    out = io.StringIO()
    call_command("create_token", "alice_labeler", "--rotate", "--expires-in-days", "0", stdout=out)
    second = out.getvalue().strip()
    assert works(second) and not works(first)
    assert ApiToken.objects.get(user=personas.alice).expires_at is None
    with pytest.raises(CommandError):
        call_command("create_token", "nobody")
    with pytest.raises(CommandError):
        call_command("create_token", "alice_labeler", "--expires-in-days", "-3")


def test_a_key_in_drfs_old_token_table_does_not_authenticate(personas):
    """Only issued tokens (digests at rest) authenticate: a row written into DRF's table, whose
    keys are stored in plain text, is no way in."""
    token = Token.objects.create(user=personas.alice)
    assert not works(token.key)
