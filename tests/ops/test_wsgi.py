"""The WSGI application gunicorn serves (instructloop.wsgi): pages get the full middleware stack,
/api/v1/ the lean API_MIDDLEWARE one, and the API stays as safe as it is under the full stack.

Django's test client runs settings.MIDDLEWARE, never wsgi.py, so these tests call the real
application with WSGI environs (real requests through Django's handlers, real database).
"""

from __future__ import annotations

import json

import pytest
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client, RequestFactory

from instructloop.wsgi import application

from ..factories import api_key, demonstration_task

pytestmark = pytest.mark.django_db(transaction=True)


def _call(method: str, path: str, body: dict | None = None, **headers: str):
    factory = RequestFactory()
    data = json.dumps(body) if body is not None else ""
    request = factory.generic(method, path, data, content_type="application/json", **headers)
    captured = {}

    def start_response(status, response_headers, exc_info=None):
        captured["status"] = int(status.split()[0])
        captured["headers"] = {k.lower(): v for k, v in response_headers}

    content = b"".join(application(request.environ, start_response))
    return captured["status"], captured["headers"], content


def test_the_api_is_served_without_the_page_only_middleware(project, personas):
    demonstration_task(project)
    token = api_key(personas.alice)
    status, headers, content = _call(
        "POST",
        f"/api/v1/projects/{project.pk}/next/",
        {"kind": "demonstration"},
        HTTP_AUTHORIZATION=f"Token {token}",
    )
    assert status == 200 and json.loads(content)["kind"] == "demonstration"
    assert headers["x-content-type-options"] == "nosniff"  # SecurityMiddleware stays
    assert "x-frame-options" not in headers  # XFrameOptionsMiddleware is for pages
    assert "content-security-policy" not in headers  # so is the CSP


def test_pages_keep_the_full_middleware_stack():
    status, headers, _ = _call("GET", "/accounts/login/")
    assert status == 200
    assert headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_a_session_authenticated_api_write_still_needs_the_csrf_token(project, personas):
    demonstration_task(project)
    browser = Client()
    browser.force_login(personas.alice)
    session = browser.cookies["sessionid"].value
    url, body = f"/api/v1/projects/{project.pk}/next/", {"kind": "demonstration"}

    status, _, content = _call("POST", url, body, HTTP_COOKIE=f"sessionid={session}")
    assert status == 403 and b"CSRF" in content
    csrf = _get_new_csrf_string()
    cookie = f"sessionid={session}; csrftoken={csrf}"
    status, _, _ = _call(
        "POST", url, body, HTTP_COOKIE=cookie, HTTP_X_CSRFTOKEN=_get_new_csrf_string()
    )
    assert status == 403
    status, _, content = _call("POST", url, body, HTTP_COOKIE=cookie, HTTP_X_CSRFTOKEN=csrf)
    assert status == 200 and json.loads(content)["kind"] == "demonstration"


def test_an_anonymous_api_call_is_a_401_through_the_lean_stack(project):
    status, _, _ = _call("GET", "/api/v1/projects/")
    assert status == 401
