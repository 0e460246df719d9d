"""A run's curves in real headless Chromium: uPlot (vendored, allowed by the page's
Content-Security-Policy) draws each one with axis values and a hover readout, and the htmx poll
of a live run gives the same charts new points instead of drawing them again."""

from __future__ import annotations

import pytest

from labeling.models import Role
from tests.factories import ModelVersionFactory, ProjectFactory, member
from training.models import RunStatus, TrainingRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_reviewer_hovers_a_live_runs_curves_and_they_follow_new_points(
    live_server, browser_page, settings, tmp_path, _close_server_connections
):
    settings.MODEL_ROOT = tmp_path / "models"
    (settings.MODEL_ROOT / "tiny-base").mkdir(parents=True)
    page = browser_page
    project = ProjectFactory(name="Curves")
    reviewer = member(project, "rita_reviewer", Role.REVIEWER)
    base = ModelVersionFactory(project=project, name="tiny-base", kind="base", path="tiny-base")
    run = TrainingRun.objects.create(project=project, kind="sft", base_model=base,
                                     status=RunStatus.RUNNING, step=20, total_steps=40)  # fmt: skip
    for step in range(1, 21):
        run.metric_points.create(step=step, name="train/loss", value=3.0 / step)
        run.metric_points.create(step=step, name="response/length", value=float(step))
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", reviewer.username)
    page.fill("#id_password", "pw-for-tests-123")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/")

    page.goto(f"{live_server.url}/p/{project.slug}/runs/{run.pk}/")
    loss = page.locator('figure[data-chart="train/loss"]')
    loss.locator(".uplot").wait_for()
    assert page.locator("figure[data-chart] .uplot").count() == 2
    assert loss.locator(".u-axis").count() == 2  # step and value axes (their ticks: canvas)

    def hover_right_edge():
        over = loss.locator(".u-over")
        box = over.bounding_box()
        page.mouse.move(box["x"] + box["width"] - 1, box["y"] + box["height"] / 2)
        values = loss.locator(".u-legend .u-series .u-value")
        return values.nth(0).inner_text(), float(values.nth(1).inner_text())

    step, value = hover_right_edge()
    assert step == "20" and value == pytest.approx(3.0 / 20, abs=1e-3)
    page.screenshot(path="/tmp/instructloop-run-curves.png", full_page=True)

    for step in range(21, 31):
        run.metric_points.create(step=step, name="train/loss", value=3.0 / step)
    TrainingRun.objects.filter(pk=run.pk).update(step=30)
    page.locator("#run-live >> text=step 30 of 40").wait_for(timeout=10_000)  # the htmx poll
    assert page.locator("figure[data-chart] .uplot").count() == 2  # the same charts, not more
    page.mouse.move(0, 0)
    step, value = hover_right_edge()
    assert step == "30" and value == pytest.approx(3.0 / 30, abs=1e-3)
