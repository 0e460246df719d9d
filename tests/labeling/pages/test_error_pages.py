"""A 403 is a page of ours with a way back, logged once and without a traceback (issue 18)."""

from __future__ import annotations

import logging

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_403_is_our_page_saying_why_with_a_way_back(project, personas):
    response = _client(personas.alice).get(
        f"/p/{project.slug}/runs/", HTTP_REFERER=f"/p/{project.slug}/next/ranking/"
    )
    html = response.content.decode()
    assert response.status_code == 403
    assert '<link rel="stylesheet"' in html and "This needs the reviewer role" in html
    assert 'href="/" data-key="h"' in html
    assert f'href="/p/{project.slug}/next/ranking/">Back where you were' in html


def test_a_403_is_logged_once_without_a_traceback(project, personas, caplog):
    caplog.set_level(logging.WARNING, logger="django.request")
    assert _client(personas.alice).get(f"/p/{project.slug}/runs/").status_code == 403
    records = [r for r in caplog.records if r.getMessage().startswith("Forbidden")]
    assert len(records) == 1 and records[0].exc_info is None, records
    # Django's default config gives "django" a console handler of its own besides the root's:
    # with DEBUG on, each record was printed twice. Only the root prints now.
    assert logging.getLogger("django").handlers == []


def test_the_403_pages_way_back_is_never_another_sites_or_a_script(project, personas):
    for referer in ("https://evil.example/", "javascript:alert(1)"):
        html = (
            _client(personas.alice)
            .get(f"/p/{project.slug}/runs/", HTTP_REFERER=referer)
            .content.decode()
        )
        assert "Back where you were" not in html and "evil.example" not in html
