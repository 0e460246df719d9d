"""The API tokens page (/account/tokens/): your tokens, a new one's key shown once, revoke; the
full page for a plain request, the #tokens fragment for htmx."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts.models import ApiToken
from tests.factories import api_key

pytestmark = pytest.mark.django_db

URL = "/account/tokens/"
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def alice(personas):
    client = Client()
    client.force_login(personas.alice)
    return client


def test_it_requires_a_logged_in_user():
    response = Client().get(URL)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_it_lists_only_my_tokens_as_a_page_or_a_fragment(alice, personas):
    api_key(personas.alice)
    api_key(personas.bob)
    page = alice.get(URL)
    assert page.status_code == 200 and b"<html" in page.content
    assert page.content.count(b"<tr data-row>") == 1
    fragment = alice.get(URL, **HTMX)
    assert b"<html" not in fragment.content and b'id="tokens"' in fragment.content
    assert fragment.content.count(b"<tr data-row>") == 1


def test_a_new_tokens_key_is_shown_once_and_works(alice, personas):
    response = alice.post(URL, {"name": "labeling script", "expires_in_days": "30"}, **HTMX)
    assert response.status_code == 200
    token = ApiToken.objects.get(user=personas.alice)
    key = re.search(r'value="(il_[^"]+)" data-select-on-focus', response.content.decode())[1]
    assert key.startswith(token.prefix) and len(key) > 40
    api = Client(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/v1/projects/").status_code == 200
    assert key.encode() not in alice.get(URL).content  # never again


def test_a_bad_form_is_a_400_fragment_and_issues_nothing(alice):
    response = alice.post(URL, {"name": "", "expires_in_days": "-1"}, **HTMX)
    assert response.status_code == 400 and b"Check the form" in response.content
    assert not ApiToken.objects.exists()


def test_revoking_my_token_stops_it_and_someone_elses_is_a_404(alice, personas):
    mine = api_key(personas.alice)
    bobs = api_key(personas.bob)
    my_token = ApiToken.objects.get(user=personas.alice)
    bobs_token = ApiToken.objects.get(user=personas.bob)
    assert alice.post(f"/account/tokens/{bobs_token.pk}/revoke/", **HTMX).status_code == 404
    response = alice.post(f"/account/tokens/{my_token.pk}/revoke/", **HTMX)
    assert response.status_code == 200 and b"Token revoked" in response.content
    assert Client(HTTP_AUTHORIZATION=f"Token {mine}").get("/api/v1/projects/").status_code == 401
    assert Client(HTTP_AUTHORIZATION=f"Token {bobs}").get("/api/v1/projects/").status_code == 200


def test_revoke_and_issue_need_the_csrf_token(personas):
    client = Client(enforce_csrf_checks=True)
    client.force_login(personas.alice)
    api_key(personas.alice)
    token = ApiToken.objects.get()
    assert client.post(f"/account/tokens/{token.pk}/revoke/").status_code == 403
    assert client.post(URL, {"name": "x", "expires_in_days": "1"}).status_code == 403
    assert ApiToken.objects.count() == 1


def test_every_page_links_to_it_with_a_key(alice):
    home = alice.get("/").content.decode()
    assert f'href="{URL}" data-key="T"' in home
