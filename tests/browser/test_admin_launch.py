"""An admin launches a training run in real headless Chromium, by keyboard: n focuses the launch
form (its defaults filled in: SFT from the project's base model), Ctrl+Enter submits it, the form
asks to confirm a run on few demonstrations, and on the run's page c cancels it and the Cancel
button goes with the run."""

from __future__ import annotations

import os

import pytest

from labeling.models import Role
from tests.factories import ModelVersionFactory, ProjectFactory, member, submitted_demonstration
from training.models import RunStatus, TrainingRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SCREENSHOTS = os.environ.get("INSTRUCTLOOP_SCREENSHOTS", "/tmp")


def _log_in(page, url, username):
    page.goto(f"{url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw-for-tests-123")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{url}/")


def test_an_admin_launches_a_run_by_keyboard_confirms_little_data_and_cancels_it_with_c(
    live_server, browser_page, settings, tmp_path, now, _close_server_connections
):
    settings.MODEL_ROOT = tmp_path / "models"
    (settings.MODEL_ROOT / "tiny-base").mkdir(parents=True)
    page = browser_page
    project = ProjectFactory(name="Launching")
    admin = member(project, "ada_admin", Role.ADMIN)
    labeler = member(project, "lee_labeler", Role.LABELER)
    base = ModelVersionFactory(project=project, name="tiny-base", kind="base", path="tiny-base")
    ModelVersionFactory(project=project, name="demo-canned", kind="external", path="")
    for i in range(3):
        submitted_demonstration(project, labeler, f"An answer {i}.", now)
    _log_in(page, live_server.url, admin.username)

    page.goto(f"{live_server.url}/p/{project.slug}/admin/")
    page.keyboard.press("u")  # the admin nav reaches the runs
    page.wait_for_url(f"{live_server.url}/p/{project.slug}/runs/")
    assert page.locator("#id_base_model option:checked").inner_text() == "tiny-base"
    assert page.locator("#id_base_model >> text=demo-canned").count() == 0
    page.keyboard.press("n")
    assert page.evaluate("document.activeElement.id") == "id_kind"
    page.keyboard.press("Control+Enter")
    page.locator("text=Only 3 demonstrations so far").wait_for()
    assert not TrainingRun.objects.exists()
    page.focus("#id_confirm")
    page.keyboard.press("Space")
    page.screenshot(path=f"{SCREENSHOTS}/instructloop-launch-confirm.png", full_page=True)
    page.keyboard.press("Control+Enter")
    page.wait_for_url(f"{live_server.url}/p/{project.slug}/runs/*/")
    run = TrainingRun.objects.get()
    assert run.base_model == base and run.kind == "sft"

    page.keyboard.press("c")  # a data-key, not an accesskey: a plain c does it
    page.locator("#run-live .status-cancelled").wait_for()
    assert TrainingRun.objects.get().status == RunStatus.CANCELLED
    assert page.locator("text=Cancel run").count() == 0
