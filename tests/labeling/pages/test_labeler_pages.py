"""Labeler pages: home, claim, demonstration and ranking forms, skip, heartbeat, draft."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse

from labeling import queue, services
from labeling.models import Demonstration, DemonstrationDraft, Lease, Ranking, Split, Task
from tests.factories import (
    CompletionFactory,
    ModelVersionFactory,
    PromptFactory,
    demonstration_task,
    ranking_task,
)

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _claim(project, user, kind, now):
    return queue.claim_next(user_id=user.pk, project=project, kind=kind, now=now)


def test_home_lists_my_projects_with_waiting_counts(project, personas):
    demonstration_task(project)
    ranking_task(project)
    ranking_task(project)
    response = _client(personas.alice).get("/")
    html = response.content.decode()
    assert response.status_code == 200
    assert project.name in html
    assert "1 waiting" in html and "2 waiting" in html
    assert personas.other_project.name not in html


def test_home_runs_a_constant_number_of_queries(project, personas, django_assert_num_queries, now):
    from tests.factories import ProjectFactory, member

    client = _client(personas.alice)
    for _ in range(3):
        other = ProjectFactory()
        member(other, "alice_labeler")
        demonstration_task(other)
        ranking_task(other)
    # session, user, memberships, held leases, waiting counts, 3 counts for today
    with django_assert_num_queries(8):
        response = client.get("/")
    assert response.status_code == 200


def test_next_claims_and_redirects_to_the_lease(project, personas):
    demonstration_task(project)
    response = _client(personas.alice).post(f"/p/{project.slug}/next/demonstration/")
    lease = Lease.objects.get(user=personas.alice)
    assert response.status_code == 302
    assert response["Location"] == f"/leases/{lease.pk}/"


def test_next_says_nothing_left_when_the_queue_is_empty(project, personas):
    response = _client(personas.alice).get(f"/p/{project.slug}/next/ranking/")
    assert response.status_code == 200
    assert "Nothing left to do" in response.content.decode()


def test_next_with_an_unknown_kind_is_404(project, personas):
    assert _client(personas.alice).get(f"/p/{project.slug}/next/poems/").status_code == 404


def test_someone_elses_lease_page_is_404(project, personas, now):
    demonstration_task(project)
    lease = _claim(project, personas.alice, Task.Kind.DEMONSTRATION, now)
    assert _client(personas.bob).get(f"/leases/{lease.pk}/").status_code == 404
    assert _client(personas.admin).get(f"/leases/{lease.pk}/").status_code == 404


def test_demonstration_submit_stores_it_and_goes_to_the_next_task(project, personas, now):
    demonstration_task(project)
    demonstration_task(project)
    lease = _claim(project, personas.alice, Task.Kind.DEMONSTRATION, now)
    client = _client(personas.alice)
    page = client.get(f"/leases/{lease.pk}/")
    assert "Ctrl+Enter" in page.content.decode()
    response = client.post(
        f"/leases/{lease.pk}/demonstration/",
        {"text": "  A good answer.\n", "time_spent_ms": "4200"},
    )
    # "Submit and next": the next task is claimed in the same POST and opened.
    following = Lease.objects.exclude(pk=lease.pk).get(user=personas.alice)
    assert response.status_code == 302
    assert response["Location"] == f"/leases/{following.pk}/"
    demo = Demonstration.objects.get(lease=lease)
    assert (demo.text, demo.time_spent_ms) == ("A good answer.", 4200)
    # With none left, the submit goes to /next/, which says so.
    last = client.post(f"/leases/{following.pk}/demonstration/", {"text": "Another."})
    assert last["Location"] == f"/p/{project.slug}/next/demonstration/"
    assert "Nothing left to do" in client.get(last["Location"]).content.decode()


def test_a_double_demonstration_submit_makes_one_record_and_both_continue(project, personas, now):
    demonstration_task(project)
    lease = _claim(project, personas.alice, Task.Kind.DEMONSTRATION, now)
    client = _client(personas.alice)
    first = client.post(f"/leases/{lease.pk}/demonstration/", {"text": "One."})
    second = client.post(f"/leases/{lease.pk}/demonstration/", {"text": "One."})
    assert first.status_code == second.status_code == 302
    assert second["Location"] == first["Location"]
    assert Demonstration.objects.filter(lease=lease).count() == 1


def test_an_empty_demonstration_is_400_and_nothing_is_written(project, personas, now):
    demonstration_task(project)
    lease = _claim(project, personas.alice, Task.Kind.DEMONSTRATION, now)
    response = _client(personas.alice).post(f"/leases/{lease.pk}/demonstration/", {"text": "   "})
    assert response.status_code == 400
    assert not Demonstration.objects.exists()


def test_the_draft_autosaves_as_a_fragment_and_comes_back_on_reload(project, personas, now):
    demonstration_task(project)
    lease = _claim(project, personas.alice, Task.Kind.DEMONSTRATION, now)
    client = _client(personas.alice)
    response = client.post(f"/leases/{lease.pk}/draft/", {"text": "half an answer"}, **HTMX)
    assert response.status_code == 200
    assert "<html" not in response.content.decode()
    assert "Draft saved" in response.content.decode()
    assert DemonstrationDraft.objects.get(lease=lease).text == "half an answer"
    assert "half an answer" in client.get(f"/leases/{lease.pk}/").content.decode()


def test_markdown_preview_is_a_fragment_for_htmx_and_a_page_without(personas):
    client = _client(personas.alice)
    fragment = client.post("/preview/", {"text": "**bold**"}, **HTMX).content.decode()
    page = client.post("/preview/", {"text": "**bold**"}).content.decode()
    assert "<strong>bold</strong>" in fragment and "<html" not in fragment
    assert "<strong>bold</strong>" in page and "<html" in page


def test_heartbeat_extends_the_lease_and_answers_409_with_reclaim_once_expired(
    project, personas, now
):
    demonstration_task(project)
    lease = _claim(project, personas.alice, Task.Kind.DEMONSTRATION, now)
    client = _client(personas.alice)
    ok = client.post(f"/leases/{lease.pk}/heartbeat/", **HTMX)
    assert ok.status_code == 200 and 'hx-trigger="every 60s"' in ok.content.decode()
    Lease.objects.filter(pk=lease.pk).update(expires_at=now - timedelta(seconds=1))
    expired = client.post(f"/leases/{lease.pk}/heartbeat/", **HTMX)
    body = expired.content.decode()
    assert expired.status_code == 409
    assert "Your lease expired" in body and f"/leases/{lease.pk}/reclaim/" in body
    assert "<html" not in body
    reclaimed = client.post(f"/leases/{lease.pk}/reclaim/")
    assert reclaimed.status_code == 302
    lease.refresh_from_db()
    assert lease.expires_at > now


def test_an_expired_lease_page_offers_reclaim(project, personas, now):
    demonstration_task(project)
    lease = _claim(project, personas.alice, Task.Kind.DEMONSTRATION, now)
    Lease.objects.filter(pk=lease.pk).update(expires_at=now - timedelta(seconds=1))
    html = _client(personas.alice).get(f"/leases/{lease.pk}/").content.decode()
    assert "Your lease expired" in html and "reclaim" in html


def test_skip_gives_the_task_back_and_goes_to_the_next(project, personas, now):
    demonstration_task(project)
    lease = _claim(project, personas.alice, Task.Kind.DEMONSTRATION, now)
    response = _client(personas.alice).post(
        f"/leases/{lease.pk}/skip/", {"reason": "unclear", "note": "ambiguous"}
    )
    assert response.status_code == 302
    lease.refresh_from_db()
    assert lease.status == Lease.Status.SKIPPED
    assert lease.skip_reason == "The prompt is unclear: ambiguous"


def _ranking_post(lease, ranks, likerts, flags=None, names="ABCD"):
    """The ranking form's fields, each output by its slot letter (or by `names`)."""
    data = {"time_spent_ms": "1234", "notes": ""}
    for i, name in enumerate(names[: len(lease.shown_order)]):
        data[f"rank-{name}"] = str(ranks[i])
        data[f"likert-{name}"] = str(likerts[i])
        if flags and flags[i]:
            data[f"flags-{name}"] = flags[i]
    return data


def test_ranking_page_shows_letters_in_shown_order_and_no_model_names(project, personas, now):
    task = ranking_task(project)
    lease = _claim(project, personas.alice, Task.Kind.RANKING, now)
    html = _client(personas.alice).get(f"/leases/{lease.pk}/").content.decode()
    texts = dict(task.task_completions.values_list("completion_id", "completion__text"))
    positions = [html.index(texts[cid]) for cid in lease.shown_order]
    assert positions == sorted(positions)
    for letter in "ABCD":
        assert f'data-label="{letter}"' in html
        assert f'name="rank-{letter}"' in html and f'name="likert-{letter}"' in html
    for name in task.completions.values_list("model_version__name", flat=True):
        assert name not in html
    # No completion id in the markup (labeling/blinding.py): every per-output field is named by a
    # letter (tests/labeling/test_blinding.py checks every attribute statistically).
    assert "data-cid" not in html
    named = re.findall(r'name="(?:rank|likert|flags)-([^"]*)"', html)
    assert set(named) == set("ABCD")


def test_ranking_page_runs_a_constant_number_of_queries(
    project, personas, now, django_assert_num_queries
):
    ranking_task(project)
    lease = _claim(project, personas.alice, Task.Kind.RANKING, now)
    client = _client(personas.alice)
    # session, user, lease with task/project/prompt, completions
    with django_assert_num_queries(4):
        response = client.get(f"/leases/{lease.pk}/")
    assert response.status_code == 200


def test_ranking_submits_without_javascript_with_ties_likert_and_flags(project, personas, now):
    ranking_task(project)
    lease = _claim(project, personas.alice, Task.Kind.RANKING, now)
    data = _ranking_post(
        lease, [1, 2, 2, 3], [7, 5, 5, 1], [[], ["hallucination"], [], ["harmful_advice"]]
    )
    response = _client(personas.alice).post(f"/leases/{lease.pk}/ranking/", data)
    assert response.status_code == 302
    ranking = Ranking.objects.get(lease=lease)
    got = {e.completion_id: (e.rank, e.likert, e.flags) for e in ranking.entries.all()}
    order = lease.shown_order
    assert got == {
        order[0]: (1, 7, []),
        order[1]: (2, 5, ["hallucination"]),
        order[2]: (2, 5, []),
        order[3]: (3, 1, ["harmful_advice"]),
    }
    assert ranking.shown_order == order and ranking.time_spent_ms == 1234


def test_a_ranking_without_a_likert_is_400_and_nothing_is_written(project, personas, now):
    ranking_task(project)
    lease = _claim(project, personas.alice, Task.Kind.RANKING, now)
    data = _ranking_post(lease, [1, 2, 3, 4], [7, 5, 5, 1])
    data["likert-A"] = ""
    response = _client(personas.alice).post(f"/leases/{lease.pk}/ranking/", data)
    assert response.status_code == 400
    assert not Ranking.objects.exists()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda data, ids: data.update({"rank-E": "1", "likert-E": "4"}), "not in this task (E)"),
        (lambda data, ids: [data.pop(f"{w}-D") for w in ("rank", "likert")], "required"),
        (
            lambda data, ids: data.update(
                {
                    f"{w}-{cid}": data.pop(f"{w}-{slot}")
                    for w in ("rank", "likert")
                    for slot, cid in zip("ABCD", ids, strict=True)
                }
            ),
            "not in this task",
        ),  # fmt: skip
        (lambda data, ids: data.update({"rank-B": ["2", "3"]}), "Sent more than once: rank-B"),
    ],
    ids=["unknown-slot", "missing-slot", "completion-ids-instead-of-slots", "a-slot-twice"],
)
def test_a_ranking_form_naming_outputs_wrongly_is_400_and_nothing_is_written(
    project, personas, now, change, says
):
    ranking_task(project)
    lease = _claim(project, personas.alice, Task.Kind.RANKING, now)
    data = _ranking_post(lease, [1, 2, 3, 4], [7, 5, 4, 1])
    change(data, lease.shown_order)
    client = _client(personas.alice)
    response = client.post(f"/leases/{lease.pk}/ranking/", data)
    assert response.status_code == 400
    assert says in response.content.decode()
    assert not Ranking.objects.exists()
    assert Lease.objects.get(pk=lease.pk).status == Lease.Status.ACTIVE
    fixed = _ranking_post(lease, [1, 2, 3, 4], [7, 5, 4, 1])
    assert client.post(f"/leases/{lease.pk}/ranking/", fixed).status_code == 302


def test_a_flag_the_project_does_not_ask_is_rejected(project, personas, now):
    ranking_task(project)
    lease = _claim(project, personas.alice, Task.Kind.RANKING, now)
    data = _ranking_post(lease, [1, 2, 3, 4], [7, 5, 5, 1], [["violent"], [], [], []])
    response = _client(personas.alice).post(f"/leases/{lease.pk}/ranking/", data)
    assert response.status_code == 400
    assert not Ranking.objects.exists()


def test_a_double_ranking_submit_makes_one_record(project, personas, now):
    ranking_task(project)
    lease = _claim(project, personas.alice, Task.Kind.RANKING, now)
    client = _client(personas.alice)
    data = _ranking_post(lease, [1, 2, 3, 4], [7, 5, 4, 1])
    assert client.post(f"/leases/{lease.pk}/ranking/", data).status_code == 302
    assert client.post(f"/leases/{lease.pk}/ranking/", data).status_code == 302
    assert Ranking.objects.filter(lease=lease).count() == 1


def test_a_submit_after_expiry_is_409_and_offers_reclaim(project, personas, now):
    ranking_task(project)
    lease = _claim(project, personas.alice, Task.Kind.RANKING, now)
    Lease.objects.filter(pk=lease.pk).update(expires_at=now - timedelta(seconds=1))
    data = _ranking_post(lease, [1, 2, 3, 4], [7, 5, 4, 1])
    response = _client(personas.alice).post(f"/leases/{lease.pk}/ranking/", data)
    assert response.status_code == 409
    assert "reclaim" in response.content.decode()
    assert not Ranking.objects.exists()


def test_reverse_names_used_by_templates_exist():
    assert reverse("home") == "/"
    assert reverse("password_reset_confirm", args=["x", "y"]) == "/accounts/reset/x/y/"


def _comparison_task(project) -> Task:
    prompt = PromptFactory(project=project, split=Split.TEST)
    first, second = (
        CompletionFactory(prompt=prompt, model_version=ModelVersionFactory(project=project))
        for _ in range(2)
    )
    return services.comparison_task_create(
        project=project, prompt=prompt, first=first, second=second
    )


MAKE_TASK = {
    Task.Kind.DEMONSTRATION: demonstration_task,
    Task.Kind.RANKING: ranking_task,
    Task.Kind.COMPARISON: _comparison_task,
}


@pytest.mark.parametrize("kind", Task.Kind.values)
def test_a_plain_get_of_next_claims_nothing_and_offers_the_claim_as_a_post(project, personas, kind):
    MAKE_TASK[kind](project)
    client = _client(personas.alice)
    response = client.get(f"/p/{project.slug}/next/{kind}/")
    html = response.content.decode()
    assert response.status_code == 200
    assert not Lease.objects.exists(), f"a GET of /next/{kind}/ claimed a task"
    assert "1 " + kind in html and 'method="post"' in html and 'data-key="Enter"' in html
    claimed = client.post(f"/p/{project.slug}/next/{kind}/")
    lease = Lease.objects.get(user=personas.alice)
    assert claimed["Location"] == f"/leases/{lease.pk}/"


def test_a_get_of_next_opens_the_task_of_that_kind_i_hold(project, personas, now):
    demonstration_task(project)
    ranking_task(project)
    lease = _claim(project, personas.alice, Task.Kind.RANKING, now)
    client = _client(personas.alice)
    response = client.get(f"/p/{project.slug}/next/ranking/")
    assert response["Location"] == f"/leases/{lease.pk}/"
    # A task of another kind held does not count: the demonstration is offered, not claimed.
    assert client.get(f"/p/{project.slug}/next/demonstration/").status_code == 200
    assert Lease.objects.filter(user=personas.alice).count() == 1


def test_home_offers_blind_ab_tasks_with_their_count_and_key(project, personas):
    _comparison_task(project)
    _comparison_task(project)
    html = _client(personas.alice).get("/").content.decode()
    button = re.search(
        r'<form method="post" action="/p/[^"]+/next/comparison/".*?</form>', html, re.S
    )
    assert button, "home has no button for blind A/B tasks"
    assert 'data-row-key="b"' in button.group(0) and "2 waiting" in button.group(0)
    assert "<kbd>b</kbd>" in button.group(0)


def test_the_ranking_page_gives_no_rank_in_advance(project, personas, now):
    ranking_task(project)
    lease = _claim(project, personas.alice, Task.Kind.RANKING, now)
    html = _client(personas.alice).get(f"/leases/{lease.pk}/").content.decode()
    for letter in "ABCD":
        rank = re.search(rf'<select name="rank-{letter}".*?</select>', html, re.S).group(0)
        assert 'value="" selected' in rank, f"rank-{letter} comes pre-filled: {rank}"
    data = _ranking_post(lease, [1, 2, 3, 4], [7, 5, 4, 1])
    del data["rank-C"]
    response = _client(personas.alice).post(f"/leases/{lease.pk}/ranking/", data)
    assert response.status_code == 400
    assert "Give output C a rank." in response.content.decode()
    assert not Ranking.objects.exists()


def test_a_ranking_that_contradicts_its_ratings_is_saved_only_once_confirmed(
    project, personas, now
):
    ranking_task(project)
    lease = _claim(project, personas.alice, Task.Kind.RANKING, now)
    client = _client(personas.alice)
    # The shown order kept as the ranking, with A rated worst: what rate-then-Enter stored.
    data = _ranking_post(lease, [1, 2, 3, 4], [1, 6, 5, 7])
    response = client.post(f"/leases/{lease.pk}/ranking/", data)
    html = response.content.decode()
    assert response.status_code == 400
    assert "contradicts your ratings" in html
    assert "A (rated 1) is ranked below" not in html  # A is ranked first: it is above
    assert "B (rated 6) is ranked below A (rated 1)" in html
    assert not Ranking.objects.exists()
    assert '<input type="hidden" name="confirm_order" value="on">' in html
    confirmed = client.post(f"/leases/{lease.pk}/ranking/", {**data, "confirm_order": "on"})
    assert confirmed.status_code == 302
    assert Ranking.objects.filter(lease=lease).count() == 1


def test_ties_and_equal_ratings_contradict_nothing():
    entries = [
        {"completion": "A", "rank": 1, "likert": 5},
        {"completion": "B", "rank": 1, "likert": 6},
        {"completion": "C", "rank": 2, "likert": 4},
        {"completion": "D", "rank": 3, "likert": 4},
    ]
    assert services.ranking_contradictions(entries) == []
    entries[3]["likert"] = 5
    assert services.ranking_contradictions(entries) == ["D (rated 5) is ranked below C (rated 4)"]


def test_the_skip_form_preselects_no_reason_and_asks_for_one(project, personas, now):
    demonstration_task(project)
    lease = _claim(project, personas.alice, Task.Kind.DEMONSTRATION, now)
    client = _client(personas.alice)
    html = client.get(f"/leases/{lease.pk}/").content.decode()
    reasons = re.findall(r'<input type="radio" name="reason"[^>]*>', html)
    assert len(reasons) == 5 and not any("checked" in r for r in reasons)
    response = client.post(f"/leases/{lease.pk}/skip/", {"note": "no reason"})
    assert response.status_code == 400
    assert "Choose why you skip this task." in response.content.decode()
    assert Lease.objects.get(pk=lease.pk).status == Lease.Status.ACTIVE


def test_text_typed_in_the_browser_is_stored_with_plain_newlines(project, personas, now):
    demonstration_task(project)
    ranking_task(project)
    client = _client(personas.alice)
    lease = _claim(project, personas.alice, Task.Kind.DEMONSTRATION, now)
    client.post(f"/leases/{lease.pk}/draft/", {"text": "Draft\r\nline"}, **HTMX)
    assert DemonstrationDraft.objects.get(lease=lease).text == "Draft\nline"
    client.post(f"/leases/{lease.pk}/demonstration/", {"text": "One\r\ntwo\r\n\r\nthree\rfour"})
    assert Demonstration.objects.get(lease=lease).text == "One\ntwo\n\nthree\nfour"
    ranked = _claim(project, personas.alice, Task.Kind.RANKING, now)
    data = {**_ranking_post(ranked, [1, 2, 3, 4], [7, 5, 4, 1]), "notes": "a\r\nb"}
    client.post(f"/leases/{ranked.pk}/ranking/", data)
    assert Ranking.objects.get(lease=ranked).notes == "a\nb"
    admin = _client(personas.admin)
    admin.post(f"/p/{project.slug}/admin/guidelines/", {"guidelines": "# Rules\r\n\r\nBe kind."})
    project.refresh_from_db()
    assert project.guidelines == "# Rules\n\nBe kind."
