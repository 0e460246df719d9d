"""Bad input on the pages answers 400 or 404, never 500."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from labeling import queue
from labeling.models import DemonstrationDraft, Prompt, Task
from tests.factories import demonstration_task

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def _browser(user) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def test_a_draft_autosave_with_a_nul_character_is_a_400_fragment_and_saves_nothing(
    project, personas, now
):
    """The page posts the textarea as it is (no form field filters it): before, a 500."""
    demonstration_task(project)
    lease = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind=Task.Kind.DEMONSTRATION, now=now
    )
    response = _browser(personas.alice).post(
        f"/leases/{lease.pk}/draft/", {"text": "half\x00an answer"}, **HTMX
    )
    assert response.status_code == 400
    assert "Not saved: The draft contains a NUL character." in response.content.decode()
    assert not DemonstrationDraft.objects.exists()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/leases/{big}/"),
        ("post", "/leases/{big}/ranking/"),
        ("post", "/leases/{big}/draft/"),
        ("post", "/leases/{big}/reclaim/"),
        ("post", "/p/{slug}/admin/members/{big}/remove/"),
    ],
)
def test_an_id_beyond_bigint_in_a_page_url_is_a_404(project, personas, method, path):
    url = path.format(big=2**64, slug=project.slug)
    response = getattr(_browser(personas.admin), method)(url)
    assert response.status_code == 404


def test_a_csv_cell_over_the_field_limit_is_a_400_page_naming_its_line(project, personas):
    data = b"prompt\nGood.\n" + b"x" * 131_073 + b"\n"
    response = _browser(personas.admin).post(
        f"/p/{project.slug}/admin/import/prompts/",
        {"file": SimpleUploadedFile("p.csv", data)},
    )
    assert response.status_code == 400
    assert "field larger than field limit" in response.content.decode()
    assert not Prompt.objects.filter(project=project).exists()
