"""Hostile text renders inert; guidelines Markdown is sanitised; htmx POSTs need CSRF."""

from __future__ import annotations

import pytest
from django.test import Client

from labeling import queue
from labeling.markdown import render_markdown
from labeling.models import DemonstrationDraft, Task
from tests.factories import PromptFactory, UserFactory, demonstration_task, member, ranking_task

pytestmark = pytest.mark.django_db

HOSTILE = (
    '<script>alert(1)</script><img src=x onerror="alert(2)">'
    '<a href="javascript:alert(3)">x</a><div hx-get="/evil" hx-on:click="alert(4)">{{ 7*7 }}</div>'
)


def _assert_inert(html: str) -> None:
    assert "<script>alert(1)" not in html
    assert "<img src=x" not in html and 'onerror="alert' not in html
    assert 'href="javascript:' not in html
    assert 'hx-get="/evil"' not in html and 'hx-on:click="' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown as text
    assert "{{ 7*7 }}" in html  # not evaluated by the template engine


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_guidelines_markdown_drops_raw_html_handlers_and_javascript_links():
    html = render_markdown(
        "# Title\n\n" + HOSTILE + "\n\n[click](javascript:alert(5)) [ok](https://example.org)"
    )
    assert "<script" not in html and "onerror" not in html and "javascript:" not in html
    assert "hx-get" not in html and "hx-on" not in html
    assert '<a href="https://example.org"' in html and "<h1>Title</h1>" in html


def test_hostile_prompt_completions_project_name_and_username_render_as_text(project, now):
    project.name = '<script>alert(1)</script><img src=x onerror="alert(2)">{{ 7*7 }}'
    project.guidelines = HOSTILE
    project.save()
    user = member(project, "mallory")
    prompt = PromptFactory(project=project, text=HOSTILE)
    ranking_task(project, prompt=prompt, texts=[HOSTILE + str(i) for i in range(project.k)])
    lease = queue.claim_next(user_id=user.pk, project=project, kind=Task.Kind.RANKING, now=now)
    client = _client(user)
    _assert_inert(client.get(f"/leases/{lease.pk}/").content.decode())
    _assert_inert(client.get("/").content.decode())


def test_a_hostile_draft_and_username_render_as_text_on_review_and_task_pages(
    project, personas, now
):
    hostile_user = UserFactory(username="x<script>alert(1)</script>")
    member(project, hostile_user.username)
    demonstration_task(project, prompt=PromptFactory(project=project, text=HOSTILE))
    lease = queue.claim_next(
        user_id=hostile_user.pk, project=project, kind=Task.Kind.DEMONSTRATION, now=now
    )
    DemonstrationDraft.objects.create(lease=lease, text=HOSTILE, updated_at=now)
    _assert_inert(_client(hostile_user).get(f"/leases/{lease.pk}/").content.decode())
    review = _client(personas.reviewer).get(f"/p/{project.slug}/review/").content.decode()
    assert "x&lt;script&gt;alert(1)&lt;/script&gt;" in review and "<script>alert(1)" not in review


def test_markdown_preview_of_hostile_text_is_sanitised(personas):
    client = _client(personas.alice)
    html = client.post("/preview/", {"text": HOSTILE}, HTTP_HX_REQUEST="true").content.decode()
    assert "<script" not in html and "onerror" not in html and "javascript:" not in html
    assert "hx-get" not in html and "hx-on" not in html


def test_body_carries_the_csrf_header_for_htmx(personas):
    html = _client(personas.alice).get("/").content.decode()
    assert 'hx-headers=\'{"X-CSRFToken": "' in html


def test_an_htmx_post_without_the_csrf_token_is_403_and_with_it_passes(project, personas, now):
    demonstration_task(project)
    lease = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind=Task.Kind.DEMONSTRATION, now=now
    )
    client = Client(enforce_csrf_checks=True)
    client.force_login(personas.alice)
    client.get(f"/leases/{lease.pk}/")  # sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    url = f"/leases/{lease.pk}/draft/"
    missing = client.post(url, {"text": "draft"}, HTTP_HX_REQUEST="true")
    wrong = client.post(url, {"text": "draft"}, HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN="x" * 32)
    assert missing.status_code == wrong.status_code == 403
    assert not DemonstrationDraft.objects.exists()
    ok = client.post(url, {"text": "draft"}, HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=token)
    assert ok.status_code == 200
    assert DemonstrationDraft.objects.get(lease=lease).text == "draft"


def test_heartbeat_and_plain_submit_without_csrf_are_403(project, personas, now):
    demonstration_task(project)
    lease = queue.claim_next(
        user_id=personas.alice.pk, project=project, kind=Task.Kind.DEMONSTRATION, now=now
    )
    client = Client(enforce_csrf_checks=True)
    client.force_login(personas.alice)
    hb = client.post(f"/leases/{lease.pk}/heartbeat/", HTTP_HX_REQUEST="true")
    submit = client.post(f"/leases/{lease.pk}/demonstration/", {"text": "x"})
    assert hb.status_code == submit.status_code == 403
