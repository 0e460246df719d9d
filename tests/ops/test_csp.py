"""The pages' Content-Security-Policy: scripts and styles from our own origin only. The header is
checked here; tests/browser/ checks that the pages really run under it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def policy(response) -> dict[str, list[str]]:
    directives = response["Content-Security-Policy"].split(";")
    return {d.split()[0]: d.split()[1:] for d in (d.strip() for d in directives) if d}


def test_pages_send_a_policy_that_runs_only_our_own_scripts_and_styles(personas):
    client = Client()
    client.force_login(personas.alice)
    for url in ("/accounts/login/", "/", "/account/tokens/"):
        csp = policy(client.get(url))
        assert csp["script-src"] == ["'self'"], url
        assert csp["style-src"] == ["'self'"], url
        assert csp["default-src"] == ["'self'"] and csp["frame-ancestors"] == ["'none'"]
        assert csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"]


def test_no_template_has_an_inline_script_or_event_handler():
    """The policy would block them: every script lives in static/js/."""
    inline_script = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
    handler = re.compile(r"\son[a-z]+\s*=", re.I)
    style_attribute = re.compile(r"\sstyle\s*=", re.I)
    offenders = [
        f"{path.relative_to(TEMPLATES)}: {pattern.pattern}"
        for path in TEMPLATES.rglob("*.html")
        for pattern in (inline_script, handler, style_attribute)
        if pattern.search(path.read_text())
    ]
    assert offenders == []
