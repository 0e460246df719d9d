"""The labeler's screens in real headless Chromium: the ranking page at 1280x800 and the blind A/B
path from home, by keyboard (issue 18)."""

from __future__ import annotations

import os

import pytest

from labeling import services
from labeling.models import Comparison, Lease, Role, Split
from tests.factories import (
    CompletionFactory,
    ModelVersionFactory,
    ProjectFactory,
    PromptFactory,
    member,
    ranking_task,
)

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "1")

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SCREENSHOTS = os.environ.get("INSTRUCTLOOP_SCREENSHOTS", "/tmp")
THREE_LINES = (
    "Paris is the capital of France and its largest city.\n"
    "It has been the capital for most of the last thousand years.\n"
    "About two million people live in the city proper."
)


def _log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw-for-tests-123")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/")


def test_a_k4_ranking_of_three_line_outputs_fits_1280x800_without_clutter(
    _close_server_connections, live_server, browser_page
):
    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 800})
    project = ProjectFactory(k=4, overlap=1, guidelines="# Rules\n\nPrefer honest answers.")
    member(project, "lena_labeler", Role.LABELER)
    ranking_task(project, texts=[THREE_LINES, "Paris.", "It is Paris.\nOn the Seine.", "Lyon."])
    _log_in(page, live_server, "lena_labeler")
    page.keyboard.press("r")
    page.wait_for_url("**/leases/*/")
    page.locator(".rank-card:focus").wait_for()
    page.screenshot(path=f"{SCREENSHOTS}/instructloop-ranking-1280x800.png")
    height = page.evaluate("() => document.documentElement.scrollHeight")
    submit = page.locator("#submit").bounding_box()
    assert height <= 800, f"the ranking page is {height} px tall at 1280x800"
    assert submit["y"] + submit["height"] <= 800
    # No output is cut: three lines show whole, and no "Show all" is offered.
    assert not any(b.is_visible() for b in page.locator(".rank-card .expand").all())
    # Flags are one collapsed line per card until asked for; no skip reason is chosen for me.
    assert not any(box.is_visible() for box in page.locator(".flags input").all())
    page.keyboard.press("f")
    assert page.locator(".rank-card:focus .flags input").first.is_visible()
    page.keyboard.press("Escape")
    assert page.locator("input[name=reason]:checked").count() == 0


def test_a_labeler_finds_blind_ab_tasks_at_home_and_judges_one_by_keyboard(
    _close_server_connections, live_server, browser_page
):
    page = browser_page
    project = ProjectFactory(k=2, overlap=1)
    labeler = member(project, "lena_labeler", Role.LABELER)
    sft = ModelVersionFactory(project=project, name="sft-1", kind="sft")
    ppo = ModelVersionFactory(project=project, name="ppo-1", kind="policy")
    prompt = PromptFactory(project=project, split=Split.TEST)
    for model in (sft, ppo):
        CompletionFactory(prompt=prompt, model_version=model, text=f"{model.name} answers")
    assert services.evaluation_tasks_create(project=project, model_a=sft, model_b=ppo) == 1

    _log_in(page, live_server, "lena_labeler")
    ab = page.locator("[data-row-key=b]")
    assert "1 waiting" in ab.inner_text()
    assert not Lease.objects.exists()  # home and its counts claim nothing
    page.keyboard.press("b")
    page.wait_for_url("**/leases/*/")
    lease = Lease.objects.get(user=labeler)
    # Enter before choosing: our message, nothing sent.
    page.evaluate("() => document.activeElement.blur()")
    page.keyboard.press("Enter")
    page.locator("#verdict-message").wait_for()
    assert "Choose a verdict first" in page.locator("#verdict-message").inner_text()
    assert not Comparison.objects.exists()
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    page.wait_for_url("**/next/comparison/")
    assert "Nothing left to do" in page.content()
    comparison = Comparison.objects.get()
    assert comparison.lease_id == lease.pk and comparison.winner == "b"
