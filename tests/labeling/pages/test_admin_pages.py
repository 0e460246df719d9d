"""Admin pages: create a project, guidelines, members and invitations, imports, progress."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from labeling.models import Membership, Project, Prompt, Role, Task
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_project_admin_creates_a_project_and_becomes_its_admin(personas):
    response = _client(personas.admin).post(
        "/projects/new/",
        {
            "name": "Summaries",
            "slug": "summaries",
            "k": "5",
            "overlap": "2",
            "demo_overlap": "1",
            "flags": ["hallucination", "opinion"],
            "guidelines": "# Be brief",
        },
    )
    assert response.status_code == 302
    project = Project.objects.get(slug="summaries")
    assert (project.k, project.overlap, project.flags) == (5, 2, ["hallucination", "opinion"])
    assert Membership.objects.get(project=project, user=personas.admin).role == Role.ADMIN


def test_a_plain_labeler_cannot_create_projects(personas):
    assert _client(personas.alice).get("/projects/new/").status_code == 403


def test_a_bad_k_is_a_form_error(personas):
    response = _client(personas.admin).post(
        "/projects/new/", {"name": "x", "slug": "x", "k": "12", "overlap": "1", "demo_overlap": "1"}
    )
    assert response.status_code == 400 and not Project.objects.filter(slug="x").exists()


def test_guidelines_save_and_preview_as_a_fragment(project, personas):
    client = _client(personas.admin)
    url = f"/p/{project.slug}/admin/guidelines/"
    fragment = client.post(url, {"guidelines": "*new*", "preview": "1"}, **HTMX)
    assert "<em>new</em>" in fragment.content.decode()
    assert "<html" not in fragment.content.decode()
    project.refresh_from_db()
    assert project.guidelines != "*new*"
    assert client.post(url, {"guidelines": "*new*"}).status_code == 302
    project.refresh_from_db()
    assert project.guidelines == "*new*"


def test_adding_an_existing_user_by_username_answers_the_members_fragment(project, personas):
    UserFactory(username="newbie")
    client = _client(personas.admin)
    url = f"/p/{project.slug}/admin/members/"
    fragment = client.post(url, {"username": "newbie", "role": "reviewer"}, **HTMX)
    page = client.get(url)
    assert fragment.status_code == 200 and "<html" not in fragment.content.decode()
    assert 'id="members"' in fragment.content.decode()
    assert "<html" in page.content.decode()
    assert Membership.objects.get(project=project, user__username="newbie").role == "reviewer"


def test_adding_an_unknown_username_is_400_with_a_message(project, personas):
    response = _client(personas.admin).post(
        f"/p/{project.slug}/admin/members/", {"username": "ghost", "role": "labeler"}, **HTMX
    )
    assert response.status_code == 400 and "invite them instead" in response.content.decode()


def test_inviting_creates_the_user_and_a_working_set_password_link(project, personas):
    response = _client(personas.admin).post(
        f"/p/{project.slug}/admin/members/invite/", {"username": "nina", "role": "labeler"}
    )
    html = response.content.decode()
    assert response.status_code == 200
    start = html.index("http://testserver/accounts/reset/")
    link = html[start : html.index('"', start)].replace("http://testserver", "")
    nina = Membership.objects.get(project=project, user__username="nina").user
    assert not nina.has_usable_password()
    anonymous = Client()
    set_form = anonymous.get(link, follow=True)
    assert set_form.status_code == 200 and "new_password1" in set_form.content.decode()
    done = anonymous.post(
        set_form.redirect_chain[-1][0],
        {"new_password1": "a-long-new-pass-42", "new_password2": "a-long-new-pass-42"},
    )
    assert done.status_code == 302
    nina.refresh_from_db()
    assert nina.check_password("a-long-new-pass-42")


def test_changing_a_role_and_removing_a_member(project, personas):
    client = _client(personas.admin)
    base = f"/p/{project.slug}/admin/members/{personas.bob.pk}"
    assert client.post(f"{base}/role/", {"role": "reviewer"}, **HTMX).status_code == 200
    assert Membership.objects.get(project=project, user=personas.bob).role == "reviewer"
    assert client.post(f"{base}/remove/", **HTMX).status_code == 200
    assert not Membership.objects.filter(project=project, user=personas.bob).exists()


def test_the_last_admin_cannot_demote_themself(project, personas):
    response = _client(personas.admin).post(
        f"/p/{project.slug}/admin/members/{personas.admin.pk}/role/", {"role": "labeler"}
    )
    assert response.status_code == 400
    assert Membership.objects.get(project=project, user=personas.admin).role == Role.ADMIN


def test_a_prompt_import_with_bad_lines_lists_each_line_and_imports_nothing(project, personas):
    lines = [
        json.dumps({"prompt": "Fine prompt"}),
        json.dumps({"prompt": ""}),
        "{not json",
        json.dumps({"prompt": "Fine prompt"}),
    ]
    upload = SimpleUploadedFile("p.jsonl", "\n".join(lines).encode())
    response = _client(personas.admin).post(
        f"/p/{project.slug}/admin/import/prompts/", {"file": upload}
    )
    html = response.content.decode()
    assert response.status_code == 400
    for line in ("<td>2</td>", "<td>3</td>", "<td>4</td>"):
        assert line in html
    assert not Prompt.objects.filter(project=project).exists()


def test_a_good_prompt_import_creates_demonstration_tasks(project, personas):
    upload = SimpleUploadedFile("p.csv", b"prompt\nOne\nTwo\n")
    response = _client(personas.admin).post(
        f"/p/{project.slug}/admin/import/prompts/", {"file": upload}
    )
    assert response.status_code == 200 and "Imported 2 new prompt(s)" in response.content.decode()
    assert Prompt.objects.filter(project=project).count() == 2


def test_the_import_page_says_which_prompts_went_to_the_test_split_without_a_task(
    project, personas
):
    project.valid_percent, project.test_percent = 0, 100
    project.save()
    upload = SimpleUploadedFile("p.csv", b"prompt,author\nOne,ann\nTwo,ann\n")
    response = _client(personas.admin).post(
        f"/p/{project.slug}/admin/import/prompts/", {"file": upload}
    )
    html = response.content.decode()
    assert "created 0 task(s). 2 prompts went to the test split" in html
    assert "no demonstration task for them" in html


def test_a_ranking_task_import_creates_tasks(project, personas):
    row = {
        "prompt": "Say hi",
        "completions": [{"text": f"hi {i}", "model": "m1"} for i in range(project.k)],
    }
    upload = SimpleUploadedFile("r.jsonl", json.dumps(row).encode())
    response = _client(personas.admin).post(
        f"/p/{project.slug}/admin/import/rankings/", {"file": upload}
    )
    assert response.status_code == 200
    assert Task.objects.filter(project=project, kind=Task.Kind.RANKING).count() == 1


def test_an_unknown_import_kind_is_404(project, personas):
    upload = SimpleUploadedFile("r.jsonl", b"{}")
    response = _client(personas.admin).post(
        f"/p/{project.slug}/admin/import/models/", {"file": upload}
    )
    assert response.status_code == 404


def test_progress_page_shows_each_task_kind(project, personas):
    html = _client(personas.admin).get(f"/p/{project.slug}/admin/").content.decode()
    assert "Demonstration" in html and "Ranking" in html
