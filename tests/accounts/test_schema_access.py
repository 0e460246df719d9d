"""/api/schema/ maps the whole API: anyone may read it in development, only signed-in users in
production unless INSTRUCTLOOP_PUBLIC_API_SCHEMA opens it."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.factories import api_key

pytestmark = pytest.mark.django_db

URL = "/api/schema/"


def test_development_serves_it_to_anyone(settings):
    settings.API_SCHEMA_PUBLIC = True  # development's default
    assert APIClient().get(URL, {"format": "json"}).status_code == 200


def test_production_refuses_it_to_an_anonymous_visitor(settings):
    settings.API_SCHEMA_PUBLIC = False  # production's default
    response = APIClient().get(URL, {"format": "json"})
    assert response.status_code == 401
    assert b"/api/v1/" not in response.content


def test_production_serves_it_with_a_token_or_a_session(settings, personas):
    settings.API_SCHEMA_PUBLIC = False
    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION=f"Token {api_key(personas.alice)}")
    assert script.get(URL, {"format": "json"}).status_code == 200
    browser = APIClient()
    browser.force_login(personas.bob)
    assert browser.get(URL, {"format": "json"}).status_code == 200
