"""Real headless Chromium for the browser tests (the system one, /usr/bin/chromium; Playwright
downloads nothing), watching for JavaScript errors and Content-Security-Policy violations."""

from __future__ import annotations

import os

import pytest

# Playwright's sync API runs an event loop in this thread; the ORM calls around it are plain
# synchronous code, so Django's async-safety guard would refuse them without this.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"


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
        # Chromium reports every script, style or fetch the Content-Security-Policy blocked on
        # the console ("Refused to ... because it violates the following Content Security
        # Policy directive"); a page that needs something the policy forbids shows up here.
        page.csp_violations = []
        page.on(
            "console",
            lambda msg: (
                "Content Security Policy" in msg.text and page.csp_violations.append(msg.text)
            ),
        )
        yield page
        browser.close()
        assert errors == [], f"JavaScript errors: {errors}"
        assert page.csp_violations == [], f"CSP violations: {page.csp_violations}"
