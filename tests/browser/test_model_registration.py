"""An admin registers their own model in real headless Chromium, by keyboard: n focuses the form,
Ctrl+Enter submits it, and the registration's row follows the worker's checks by htmx until the
model's facts show."""

from __future__ import annotations

import os

import pytest

from labeling.models import Role
from tests.factories import ProjectFactory, member
from tests.training.engine.toy_model import build_toy_model
from training import registry
from training.models import ModelRegistration

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SCREENSHOTS = os.environ.get("INSTRUCTLOOP_SCREENSHOTS", "/tmp")

TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant: "


@pytest.fixture(autouse=True)
def _roots(settings, tmp_path, _close_server_connections):
    settings.MODEL_IMPORT_ROOT = tmp_path / "import"
    settings.MODEL_ROOT = tmp_path / "models"
    settings.MODEL_ROOT.mkdir()
    build_toy_model(settings.MODEL_IMPORT_ROOT / "mine", dropout=0.0)
    (settings.MODEL_IMPORT_ROOT / "mine" / "chat_template.jinja").write_text(TEMPLATE)


def test_an_admin_registers_a_model_by_keyboard_and_watches_it_pass(live_server, browser_page):
    page = browser_page
    project = ProjectFactory(name="Own model")
    member(project, "ada_admin", Role.ADMIN)
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "ada_admin")
    page.fill("#id_password", "pw-for-tests-123")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/")

    page.goto(f"{live_server.url}/p/{project.slug}/models/")
    page.keyboard.press("n")  # focuses the form's first field
    assert page.evaluate("document.activeElement.id") == "id_name"
    page.keyboard.type("my-model")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")  # the source kind keeps its default: a directory
    page.keyboard.type("mine")
    page.keyboard.press("Control+Enter")
    page.locator("#registrations >> text=Waiting for a worker").wait_for()

    registration = ModelRegistration.objects.get(project=project)
    registry.registration_execute(registration_id=registration.pk)  # the worker's part

    page.locator("#registrations >> text=GPT2LMHeadModel").wait_for(timeout=15_000)  # htmx poll
    row = page.locator("#registrations tbody tr").first.inner_text()
    assert "Registered" in row and "float32" in row
    assert page.locator("#versions >> text=my-model").count() == 0  # the list below: on reload
    page.reload()
    assert page.locator("#versions >> text=my-model").count() == 1
    page.screenshot(path=f"{SCREENSHOTS}/instructloop-register-model.png", full_page=True)
