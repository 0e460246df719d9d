"""A labeler's day in real headless Chromium: log in, write a demonstration, rank by keyboard.

Chromium is the system one (/usr/bin/chromium); Playwright downloads nothing.
"""

from __future__ import annotations

import os

import pytest
from django.contrib.auth import get_user_model

from accounts.models import ApiToken
from labeling import services
from labeling.models import Comparison, Demonstration, Lease, Ranking, Role
from tests.factories import (
    CompletionFactory,
    ModelVersionFactory,
    ProjectFactory,
    PromptFactory,
    demonstration_task,
    member,
    ranking_task,
)

# Playwright's sync API runs an event loop in this thread; the ORM calls around it are plain
# synchronous code, so Django's async-safety guard would refuse them without this.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "1")

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SCREENSHOTS = os.environ.get("INSTRUCTLOOP_SCREENSHOTS", "/tmp")


def test_a_labeler_writes_a_demonstration_and_ranks_four_outputs_by_keyboard(
    _close_server_connections, live_server, browser_page
):
    page = browser_page
    project = ProjectFactory(
        name="Browser <script>alert(1)</script>",
        k=4,
        overlap=1,
        guidelines="# Rules\n\nPrefer **honest** answers. <script>alert('g')</script>",
    )
    labeler = member(project, "lena_labeler", Role.LABELER)
    demonstration_task(project)
    task = ranking_task(
        project,
        texts=[
            "Paris is the capital of France.",
            "I think it is Lyon.",
            "<img src=x onerror=alert(1)> Paris.",
            "The capital of France is Paris, a city on the Seine. " * 12,
        ],
    )

    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "lena_labeler")
    page.fill("#id_password", "pw-for-tests-123")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/")

    # Demonstration: d on the home page claims one; Ctrl+Enter submits it.
    page.keyboard.press("d")
    page.wait_for_url("**/leases/*/")
    page.locator("#id_text").click()
    page.keyboard.type("A careful, **honest** answer.")
    page.locator("#preview strong").wait_for()  # live preview via htmx
    page.wait_for_timeout(300)
    page.screenshot(path=f"{SCREENSHOTS}/instructloop-demonstration.png", full_page=True)
    page.keyboard.press("Control+Enter")
    page.wait_for_url("**/next/demonstration/")
    assert "Nothing left to do" in page.content()

    # Ranking, keyboard only.
    page.keyboard.press("h")
    page.wait_for_url(f"{live_server.url}/")
    page.keyboard.press("r")
    page.wait_for_url("**/leases/*/")
    lease = Lease.objects.get(user=labeler, task=task)
    letter_to_cid = dict(zip("ABCD", lease.shown_order, strict=True))
    # The page names outputs by slot letter only: no completion id in a field or on a card.
    names = page.eval_on_selector_all(
        "#task-form [name*='-']", "els => els.map(e => e.name.split('-').slice(1).join('-'))"
    )
    assert set(names) == set("ABCD")
    assert page.locator("[data-cid]").count() == 0

    # Cards start A, B, C, D, in the order shown, with no place yet; A has the focus.
    assert page.evaluate("() => document.activeElement.dataset.label") == "A"
    assert page.locator(".rank-card .place").all_inner_texts() == ["", "", "", ""]
    # "Show all" only on the long output, not on the short ones (the order shown is shuffled).
    shown = [
        (card.locator(".completion-text").inner_text().startswith("The capital of France is"),
         card.locator(".expand").is_visible())
        for card in page.locator(".rank-card").all()
    ]  # fmt: skip
    assert sorted(shown) == [(False, False)] * 3 + [(True, True)], shown

    # Enter before rating: our message, focus on the unrated card, never in a dropdown.
    page.keyboard.press("Enter")
    message = page.locator("#rank-message")
    message.wait_for()
    assert message.inner_text() == "Rate output A from 1 to 7 before submitting."
    assert page.evaluate("() => document.activeElement.dataset.label") == "A"
    # A card's rating dropdown does not swallow the keys: ? shows the help, k goes to A.
    page.evaluate("() => document.querySelector('[name=likert-B]').focus()")
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator("#help").is_visible()
    page.keyboard.press("k")
    assert page.evaluate("() => document.activeElement.dataset.label") == "A"

    # f 1 flags A; each rating moves on to the next unrated output; once all four are rated the
    # order follows the ratings, B and C (both 6) tied.
    for key in ["f", "1", "3", "6", "6", "2"]:
        page.keyboard.press(key)
    order = page.eval_on_selector_all(".rank-card", "cards => cards.map(c => c.dataset.label)")
    assert order == ["B", "C", "A", "D"]
    assert page.locator(".rank-card .place").all_inner_texts() == [
        "tied 1st",
        "tied 1st",
        "2nd",
        "3rd",
    ]
    assert page.evaluate("() => document.activeElement.dataset.label") == "D"
    page.keyboard.press("f")
    page.keyboard.press("2")  # second asked flag on D
    page.keyboard.press("Shift+ArrowUp")  # D (rated 2) above A (rated 3): against the ratings
    order = page.eval_on_selector_all(".rank-card", "cards => cards.map(c => c.dataset.label)")
    assert order == ["B", "C", "D", "A"]
    page.screenshot(path=f"{SCREENSHOTS}/instructloop-ranking.png", full_page=True)
    page.keyboard.press("Enter")  # told, not saved
    page.get_by_text("Your order contradicts your ratings").wait_for()
    assert "A (rated 3) is below D (rated 2)" in message.inner_text()
    assert not Ranking.objects.exists()
    page.keyboard.press("Enter")  # again: kept as it is
    page.wait_for_url("**/next/ranking/")

    demonstration = Demonstration.objects.get(labeler=labeler)
    assert demonstration.text == "A careful, **honest** answer."
    assert demonstration.time_spent_ms > 0
    ranking = Ranking.objects.get(labeler=labeler)
    assert ranking.shown_order == lease.shown_order
    assert ranking.time_spent_ms > 0
    flags = project.flags
    got = {e.completion_id: (e.rank, e.likert, e.flags) for e in ranking.entries.all()}
    assert got == {
        letter_to_cid["B"]: (1, 6, []),
        letter_to_cid["C"]: (1, 6, []),
        letter_to_cid["D"]: (2, 2, [flags[1]]),
        letter_to_cid["A"]: (3, 3, [flags[0]]),
    }


def _log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw-for-tests-123")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/")


def test_the_pages_run_under_the_content_security_policy(
    _close_server_connections, live_server, browser_page
):
    """The header is on, and every page's scripts still run: the A/B keys, the tokens page's
    htmx form and row keys, the members page, the dashboard's baseline, the runs page's n."""
    page = browser_page
    project = ProjectFactory(k=2, overlap=1)
    member(project, "lena_labeler", Role.ADMIN)
    sft = ModelVersionFactory(project=project, name="sft-1", kind="sft")
    ppo = ModelVersionFactory(project=project, name="ppo-1", kind="policy")
    prompt = PromptFactory(project=project, split="test")
    for model in (sft, ppo):
        CompletionFactory(prompt=prompt, model_version=model, text=f"{model.name} answers")
    services.evaluation_tasks_create(project=project, model_a=sft, model_b=ppo)

    response = page.goto(f"{live_server.url}/accounts/login/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    # The control: an inline script is refused, and the refusal is seen.
    page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.ran = 1'; document.body.append(s); }"
    )
    assert page.evaluate("() => window.ran") is None
    page.wait_for_timeout(200)
    assert any("script-src" in v for v in page.csp_violations)
    page.csp_violations.clear()
    _log_in(page, live_server, "lena_labeler")

    # A/B judgement by keyboard (static/js/comparison.js): a GET of /next/ offers the task,
    # Enter takes it, 2 picks B, Enter submits.
    page.goto(f"{live_server.url}/p/{project.slug}/next/comparison/")
    page.keyboard.press("Enter")
    page.wait_for_url("**/leases/*/")
    page.evaluate("() => document.activeElement.blur()")
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    page.wait_for_url("**/next/comparison/")
    assert Comparison.objects.get().winner == "b"

    # API tokens: T opens the page, n names a token, htmx makes it, j + x revoke it.
    page.keyboard.press("T")
    page.wait_for_url("**/account/tokens/")
    page.keyboard.press("n")
    page.keyboard.type("browser script")
    page.keyboard.press("Enter")
    page.locator("[data-select-on-focus]").wait_for()
    assert ApiToken.objects.get().name == "browser script"
    page.evaluate("() => document.activeElement.blur()")
    page.on("dialog", lambda dialog: dialog.accept())
    page.keyboard.press("j")
    page.keyboard.press("x")
    page.get_by_text("Token revoked").wait_for()
    assert not ApiToken.objects.exists()

    # The other pages that had inline code: their scripts still run.
    page.goto(f"{live_server.url}/p/{project.slug}/admin/members/")
    page.goto(f"{live_server.url}/p/{project.slug}/review/dashboard/")
    page.goto(f"{live_server.url}/p/{project.slug}/runs/")
    page.evaluate("() => document.activeElement.blur()")
    page.keyboard.press("n")
    assert page.evaluate("() => document.activeElement.closest('#launch-form') !== null")

    # Django's admin, for staff, runs under the same policy.
    User = get_user_model()  # noqa: N806
    User.objects.filter(username="lena_labeler").update(is_staff=True, is_superuser=True)
    page.goto(f"{live_server.url}/django-admin/")
    page.goto(f"{live_server.url}/django-admin/accounts/apitoken/")
    page.goto(f"{live_server.url}/django-admin/auth/user/")
    page.locator("#changelist").wait_for()
