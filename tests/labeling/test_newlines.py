"""Text typed in a browser arrives with `\r\n` line breaks; the services store `\n` only."""

from __future__ import annotations

import pytest

from labeling import services
from labeling.text import newlines_normalise

pytestmark = pytest.mark.django_db


def test_crlf_and_lone_cr_become_lf_and_nothing_else_changes():
    assert newlines_normalise("a\r\nb\rc\n\n d \t") == "a\nb\nc\n\n d \t"


def test_guidelines_are_stored_with_plain_newlines_however_they_are_saved(personas):
    project = services.project_create(
        name="Typed", slug="typed", creator=personas.admin, guidelines="# One\r\n\r\nText"
    )
    assert project.guidelines == "# One\n\nText"
    services.project_update(project=project, changes={"guidelines": "# Two\r\nMore"})
    project.refresh_from_db()
    assert project.guidelines == "# Two\nMore"
    services.project_update_guidelines(project=project, guidelines="# Three\r\n")
    project.refresh_from_db()
    assert project.guidelines == "# Three\n"
