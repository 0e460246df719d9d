"""A labeler's day in real headless Chromium: log in, write a demonstration, rank by keyboard.

Chromium is the system one (/usr/bin/chromium); Playwright downloads nothing.
"""

from __future__ import annotations

import os

import pytest

from labeling.models import Demonstration, Lease, Ranking, Role
from tests.factories import ProjectFactory, demonstration_task, member, ranking_task

# Playwright's sync API runs an event loop in this thread; the ORM calls around it are plain
# synchronous code, so Django's async-safety guard would refuse them without this.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = os.environ.get("INSTRUCTLOOP_SCREENSHOTS", "/tmp")


@pytest.fixture(autouse=True)
def _close_server_connections():
    # The live server thread keeps its Postgres connection open (CONN_MAX_AGE) and the test
    # database could not be dropped; close connections at the end of every request instead.
    from django.db import connections

    connections.settings["default"]["CONN_MAX_AGE"] = 0


@pytest.fixture
def browser_page():
    if not os.path.exists(CHROMIUM):
        pytest.skip("no Chromium at /usr/bin/chromium")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(10_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield page
        browser.close()
        assert errors == [], f"JavaScript errors: {errors}"


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

    # Cards start A, B, C, D. j focuses the first card, then moves down.
    page.keyboard.press("j")  # A
    page.keyboard.press("3")
    page.keyboard.press("f")
    page.keyboard.press("1")  # first asked flag on A
    page.keyboard.press("j")  # B
    page.keyboard.press("7")
    page.keyboard.press("j")  # C
    page.keyboard.press("6")
    page.keyboard.press("t")  # C ties with B
    page.keyboard.press("j")  # D
    page.keyboard.press("2")
    page.keyboard.press("f")
    page.keyboard.press("2")  # second asked flag on D
    for _ in range(3):
        page.keyboard.press("k")  # back up to A
    page.keyboard.press("Shift+ArrowDown")  # A jumps below the B=C group
    page.keyboard.press("j")  # D
    page.keyboard.press("Alt+ArrowUp")  # D above A
    order = page.eval_on_selector_all(".rank-card", "cards => cards.map(c => c.dataset.label)")
    assert order == ["B", "C", "D", "A"]
    page.screenshot(path=f"{SCREENSHOTS}/instructloop-ranking.png", full_page=True)
    page.keyboard.press("Enter")
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
        letter_to_cid["B"]: (1, 7, []),
        letter_to_cid["C"]: (1, 6, []),
        letter_to_cid["D"]: (2, 2, [flags[1]]),
        letter_to_cid["A"]: (3, 3, [flags[0]]),
    }
