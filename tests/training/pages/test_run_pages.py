"""Training-run pages: who sees them, launching, live fragment, cancel."""

from __future__ import annotations

import pytest
from django.test import Client

from labeling.models import Demonstration, Lease, ModelVersion
from tests.factories import ModelVersionFactory, PromptFactory, api_client, demonstration_task
from training import stages
from training.models import RunStatus, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def base(project, settings, tmp_path):
    settings.MODEL_ROOT = tmp_path / "models"
    (settings.MODEL_ROOT / "tiny-base").mkdir(parents=True)
    return ModelVersionFactory(project=project, name="tiny-base", kind="base", path="tiny-base")


def _client(user, *, csrf=False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def _demonstration(project, labeler, now):
    task = demonstration_task(project)
    lease = Lease.objects.create(task=task, user=labeler, status="submitted", created_at=now,
                                 expires_at=now, heartbeat_at=now, submitted_at=now)  # fmt: skip
    return Demonstration.objects.create(task=task, prompt=task.prompt, labeler=labeler, lease=lease,
                                        text="A good answer.", created_at=now)  # fmt: skip


def test_runs_page_is_for_reviewers_and_admins_only(project, personas, base):
    url = f"/p/{project.slug}/runs/"
    assert _client(personas.outsider).get(url).status_code == 404
    assert _client(personas.alice).get(url).status_code == 403
    assert _client(personas.reviewer).get(url).status_code == 200
    page = _client(personas.admin).get(url)
    assert page.status_code == 200 and b"Launch a run" in page.content


def test_a_reviewer_cannot_launch_a_run(project, personas, base):
    response = _client(personas.reviewer).post(
        f"/p/{project.slug}/runs/", {"kind": "sft", "base_model": base.pk}
    )
    assert response.status_code == 403
    assert not TrainingRun.objects.exists()


def test_launching_without_data_explains_why_and_creates_nothing(project, personas, base):
    response = _client(personas.admin).post(
        f"/p/{project.slug}/runs/", {"kind": "sft", "base_model": base.pk}
    )
    assert response.status_code == 400 and b"no data to train on" in response.content
    assert not TrainingRun.objects.exists()


def test_launching_an_sft_run_snapshots_the_demonstrations_and_enqueues_after_commit(
    project, personas, base, now, django_capture_on_commit_callbacks
):
    demos = [_demonstration(project, personas.alice, now) for _ in range(2)]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = _client(personas.admin).post(
            f"/p/{project.slug}/runs/",
            {"kind": "sft", "base_model": base.pk, "max_steps": 3, "batch_size": 2,
             "confirm": "on"},
        )  # fmt: skip
    run = TrainingRun.objects.get()
    assert (
        response.status_code == 302 and response["Location"] == f"/p/{project.slug}/runs/{run.pk}/"
    )
    assert run.dataset == {"demonstrations": sorted(d.pk for d in demos)}
    assert run.config == {**stages.stage("sft").resolve({}), "max_steps": 3, "batch_size": 2}
    assert len(callbacks) == 1  # the Celery message goes out only when the transaction commits


def test_the_live_fragment_polls_while_running_and_shows_curves(project, personas, base):
    run = TrainingRun.objects.create(project=project, kind="sft", base_model=base, status=RunStatus.RUNNING,
                                     step=2, total_steps=4)  # fmt: skip
    run.metric_points.create(step=1, name="train/loss", value=2.0)
    run.metric_points.create(step=2, name="train/loss", value=1.0)
    run.metric_points.create(step=1, name="custom/thing", value=3.0)
    url = f"/p/{project.slug}/runs/{run.pk}/"
    fragment = _client(personas.reviewer).get(url, headers={"HX-Request": "true"})
    assert b"<html" not in fragment.content
    assert (
        b'hx-trigger="every 2s"' in fragment.content
        and fragment.content.count(b'<figure class="chart" data-chart=') == 2
    )
    full = _client(personas.reviewer).get(url)
    assert b"<html" in full.content and b"Cancel run" not in full.content


def test_an_admin_cancels_a_queued_run_from_the_browser_with_csrf(project, personas, base):
    run = TrainingRun.objects.create(project=project, kind="sft", base_model=base)
    client = _client(personas.admin, csrf=True)
    assert client.post(f"/p/{project.slug}/runs/{run.pk}/cancel/").status_code == 403  # no token
    page = client.get(f"/p/{project.slug}/runs/{run.pk}/")
    token = page.cookies["csrftoken"].value
    response = client.post(f"/p/{project.slug}/runs/{run.pk}/cancel/", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 302
    assert TrainingRun.objects.get(pk=run.pk).status == RunStatus.CANCELLED


def test_a_run_of_another_project_is_not_found(project, personas, base):
    foreign = TrainingRun.objects.create(project=personas.other_project, kind="sft",
                                         base_model=ModelVersionFactory(project=personas.other_project))  # fmt: skip
    assert _client(personas.admin).get(f"/p/{project.slug}/runs/{foreign.pk}/").status_code == 404
    assert (
        _client(personas.admin).post(f"/p/{project.slug}/runs/{foreign.pk}/cancel/").status_code
        == 404
    )
    assert ModelVersion.objects.filter(project=project).count() == 1


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"k": 1}, "k", "k must be from 2 to 9"),
        ({"k": 10}, "k", "k must be from 2 to 9"),
        ({"temperature": 0}, "temperature", "temperature must be > 0"),
        ({"temperature": -1}, "temperature", "temperature must be > 0"),
    ],
)
def test_a_sampling_runs_k_and_temperature_are_refused_on_their_fields(
    project, personas, base, fields, field, words
):
    PromptFactory(project=project)
    response = _client(personas.admin).post(
        f"/p/{project.slug}/runs/", {"kind": "sample", "base_model": base.pk, **fields}
    )
    assert response.status_code == 400
    assert any(words in error for error in response.context["form"].errors[field])
    assert not TrainingRun.objects.exists()


def test_a_sampling_run_takes_k_and_temperature_from_the_form_or_the_projects_k(
    project, personas, base
):
    PromptFactory(project=project)
    url = f"/p/{project.slug}/runs/"
    admin = _client(personas.admin)
    assert admin.post(url, {"kind": "sample", "base_model": base.pk, "k": 6,
                            "temperature": 0.7}).status_code == 302  # fmt: skip
    assert admin.post(url, {"kind": "sample", "base_model": base.pk}).status_code == 302
    chosen, default = TrainingRun.objects.order_by("pk")
    assert (chosen.config["k"], chosen.config["temperature"]) == (6, 0.7)
    assert chosen.config["resample_duplicates"] == 2
    assert (default.config["k"], default.config["temperature"]) == (project.k, 1.0)
    # K is a sampling setting: an SFT run refuses it on the field.
    response = admin.post(url, {"kind": "sft", "base_model": base.pk, "k": 4})
    assert response.status_code == 400 and response.context["form"].errors["k"]


def test_the_api_lists_runs_and_a_script_polls_one_for_new_metric_points(project, personas, base):
    older = TrainingRun.objects.create(project=project, kind="sft", base_model=base)
    run = TrainingRun.objects.create(project=project, kind="sft", base_model=base, status=RunStatus.RUNNING,
                                     step=2, total_steps=4, config={"lr": 1e-3})  # fmt: skip
    for step, loss in ((1, 2.0), (2, 1.5)):
        run.metric_points.create(step=step, name="train/loss", value=loss)
    reviewer = api_client(personas.reviewer)
    listed = reviewer.get(f"/api/v1/projects/{project.pk}/runs/").json()
    assert [r["id"] for r in listed["results"]] == [run.pk, older.pk]
    assert listed["results"][0]["base_model"] == "tiny-base"
    url = f"/api/v1/projects/{project.pk}/runs/{run.pk}/"
    first = reviewer.get(url).json()
    assert first["run"]["status"] == "running" and first["run"]["config"] == {"lr": 1e-3}
    assert [(p["step"], p["value"]) for p in first["metrics"]] == [(1, 2.0), (2, 1.5)]
    assert first["next_since"] == 2
    run.metric_points.create(step=3, name="train/loss", value=1.2)
    later = reviewer.get(url, {"since": first["next_since"]}).json()
    assert [(p["step"], p["value"]) for p in later["metrics"]] == [(3, 1.2)]
    assert later["next_since"] == 3
    assert reviewer.get(url, {"since": 3}).json()["metrics"] == []


def test_a_full_page_of_metric_points_never_ends_inside_a_step(
    project, personas, base, monkeypatch
):
    from training import api

    monkeypatch.setattr(api, "METRICS_PAGE", 3)
    run = TrainingRun.objects.create(project=project, kind="sft", base_model=base)
    for step in (1, 2):
        for name in ("a", "b"):
            run.metric_points.create(step=step, name=name, value=float(step))
    url = f"/api/v1/projects/{project.pk}/runs/{run.pk}/"
    page = api_client(personas.reviewer).get(url).json()
    assert [(p["step"], p["name"]) for p in page["metrics"]] == [(1, "a"), (1, "b")]
    rest = api_client(personas.reviewer).get(url, {"since": page["next_since"]}).json()
    assert [(p["step"], p["name"]) for p in rest["metrics"]] == [(2, "a"), (2, "b")]


@pytest.mark.parametrize("since", ["-2", "abc", "1.5"])
def test_a_bad_since_is_a_400_that_says_what_it_must_be(project, personas, base, since):
    run = TrainingRun.objects.create(project=project, kind="sft", base_model=base)
    response = api_client(personas.reviewer).get(
        f"/api/v1/projects/{project.pk}/runs/{run.pk}/", {"since": since}
    )
    assert response.status_code == 400 and "since must be" in response.content.decode()


def test_an_admin_cancels_a_run_over_the_api_and_a_finished_run_is_a_409(project, personas, base):
    run = TrainingRun.objects.create(project=project, kind="sft", base_model=base)
    url = f"/api/v1/projects/{project.pk}/runs/{run.pk}/cancel/"
    assert api_client(personas.reviewer).post(url).status_code == 403
    assert api_client(personas.outsider).post(url).status_code == 404
    answer = api_client(personas.admin).post(url)
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    assert api_client(personas.admin).post(url).status_code == 409
    foreign = TrainingRun.objects.create(project=personas.other_project, kind="sft",
                                         base_model=ModelVersionFactory(project=personas.other_project))  # fmt: skip
    assert (
        api_client(personas.admin)
        .get(f"/api/v1/projects/{project.pk}/runs/{foreign.pk}/")
        .status_code
        == 404
    )


def test_an_admin_launches_a_run_over_the_api_with_its_config_resolved_and_data_frozen(
    project, personas, base, now, django_capture_on_commit_callbacks
):
    demo = _demonstration(project, personas.alice, now)
    url = f"/api/v1/projects/{project.pk}/runs/"
    body = {"kind": "sft", "base_model": "tiny-base", "config": {"max_steps": 3}}
    assert api_client(personas.reviewer).post(url, body, format="json").status_code == 403
    with django_capture_on_commit_callbacks() as sends:
        launched = api_client(personas.admin).post(url, body, format="json")
    assert launched.status_code == 201, launched.content
    run = TrainingRun.objects.get(pk=launched.json()["id"])
    assert run.config == {**stages.stage("sft").resolve({}), "max_steps": 3}
    assert launched.json()["config"] == run.config
    assert run.dataset == {"demonstrations": [demo.pk]} and len(sends) == 1


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"kind": "sft", "base_model": "nope"}, "No model named"),
        ({"kind": "magic", "base_model": "tiny-base"}, "kind"),
        ({"kind": "sft", "base_model": "tiny-base", "config": {"lr": -1}}, "lr"),
        ({"kind": "sft", "base_model": "tiny-base", "config": {"no_such": 1}}, "no_such"),
        ({"kind": "ppo", "base_model": "tiny-base"}, "reward model"),
        ({"kind": "reward", "base_model": "tiny-base"}, "no data"),
    ],
)
def test_a_bad_run_request_is_a_400_that_names_the_problem_and_launches_nothing(
    project, personas, base, now, body, words
):
    _demonstration(project, personas.alice, now)
    response = api_client(personas.admin).post(
        f"/api/v1/projects/{project.pk}/runs/", body, format="json"
    )
    assert response.status_code == 400 and words in response.content.decode(), response.content
    assert not TrainingRun.objects.exists()


def _failed_run(project, base, now, **fields):
    return TrainingRun.objects.create(
        project=project, kind="sft", base_model=base, status=RunStatus.FAILED, attempt=3,
        max_attempts=3, error="CUDA out of memory", finished_at=now, **fields,
    )  # fmt: skip


def test_an_admin_resumes_a_failed_run_over_the_api_with_fresh_attempts_and_its_reason_kept(
    project, personas, base, now, django_capture_on_commit_callbacks
):
    run = _failed_run(project, base, now)
    url = f"/api/v1/projects/{project.pk}/runs/{run.pk}/resume/"
    assert api_client(personas.reviewer).post(url).status_code == 403
    assert api_client(personas.outsider).post(url).status_code == 404
    with django_capture_on_commit_callbacks(execute=True) as sent:
        answer = api_client(personas.admin).post(url)
    assert answer.status_code == 202 and answer.json()["status"] == "queued"
    assert len(sent) == 1  # sent to the queue once the resume committed
    run.refresh_from_db()
    assert (run.status, run.attempt, run.max_attempts, run.finished_at) == ("queued", 3, 6, None)
    assert run.error.startswith("Resumed by ada_admin at ")
    assert run.error.endswith("It had failed: CUDA out of memory")
    again = api_client(personas.admin).post(url)
    assert again.status_code == 409 and "this one is queued" in again.json()["detail"]


@pytest.mark.parametrize(
    ("status", "says"),
    [
        ("cancelled", "checkpoints are gone"),
        ("succeeded", "is succeeded"),
        ("running", "not finished"),
    ],
)
def test_only_a_failed_run_is_resumed_and_the_409_says_why(
    project, personas, base, now, status, says
):
    run = TrainingRun.objects.create(project=project, kind="sft", base_model=base, status=status)
    answer = api_client(personas.admin).post(f"/api/v1/projects/{project.pk}/runs/{run.pk}/resume/")
    assert answer.status_code == 409 and says in answer.json()["detail"], answer.json()
    run.refresh_from_db()
    assert run.status == status


def test_a_failed_step_of_a_round_is_not_resumed_alone(project, personas, base, now):
    from training.models import Round, RoundStep

    run = _failed_run(project, base, now)
    round_ = Round.objects.create(project=project, number=4, policy=base, status="failed")
    RoundStep.objects.create(round=round_, position=0, role="reward", run=run)
    answer = api_client(personas.admin).post(f"/api/v1/projects/{project.pk}/runs/{run.pk}/resume/")
    assert answer.status_code == 409 and "step of round 4" in answer.json()["detail"]
    page = _client(personas.admin).get(f"/p/{project.slug}/runs/{run.pk}/")
    assert b"Resume from the last checkpoint" not in page.content


def test_an_admin_resumes_a_failed_run_from_its_page_with_key_shift_r(project, personas, base, now):
    run = _failed_run(project, base, now)
    page = _client(personas.admin).get(f"/p/{project.slug}/runs/{run.pk}/")
    assert b'data-key="R">Resume from the last checkpoint' in page.content
    reviewer_page = _client(personas.reviewer).get(f"/p/{project.slug}/runs/{run.pk}/")
    assert b"Resume from the last checkpoint" not in reviewer_page.content
    refused = _client(personas.reviewer).post(f"/p/{project.slug}/runs/{run.pk}/resume/")
    assert refused.status_code == 403
    done = _client(personas.admin, csrf=False).post(f"/p/{project.slug}/runs/{run.pk}/resume/")
    assert done.status_code == 302
    run.refresh_from_db()
    assert run.status == "queued"
    again = _client(personas.admin).post(f"/p/{project.slug}/runs/{run.pk}/resume/", follow=True)
    assert b"Only a failed run can be resumed" in again.content


# Issue 18: the launch form explains itself and refuses what cannot work.


def test_the_launch_form_offers_only_models_with_weights_and_starts_from_the_newest_policy(
    project, personas, base, settings
):
    canned = ModelVersionFactory(project=project, name="demo-canned", kind="external", path="")
    hub_less = ModelVersionFactory(project=project, name="no-files", kind="sft", path="gone")
    (settings.MODEL_ROOT / "sft-1").mkdir()
    sft = ModelVersionFactory(project=project, name="sft-1", kind="sft", path="sft-1")
    page = _client(personas.admin).get(f"/p/{project.slug}/runs/")
    form = page.context["form"]
    offered = set(form.fields["base_model"].queryset)
    assert offered == {base, sft}, f"offered {offered}, not demo-canned {canned} or {hub_less}"
    assert form["base_model"].value() == sft.pk  # the newest trained policy, preselected
    html = page.content.decode()
    assert f'<option value="{sft.pk}" selected>' in html and "demo-canned" not in html


def test_the_launch_form_starts_from_the_first_base_model_before_any_training(
    project, personas, base
):
    page = _client(personas.admin).get(f"/p/{project.slug}/runs/")
    assert page.context["form"]["base_model"].value() == base.pk


def test_the_launch_form_shows_each_blank_fields_default(project, personas, base):
    html = _client(personas.admin).get(f"/p/{project.slug}/runs/").content.decode()
    lr = f"SFT {stages.stage('sft').resolve({})['lr']:g}"
    assert f"Blank: {lr}" in html and "one epoch of the data" in html
    assert 'placeholder="default"' in html and f'placeholder="{project.k}"' in html


def test_an_sft_on_one_demonstration_is_refused_and_registers_nothing(project, personas, base, now):
    _demonstration(project, personas.alice, now)
    response = _client(personas.admin).post(
        f"/p/{project.slug}/runs/", {"kind": "sft", "base_model": base.pk, "confirm": "on"}
    )
    assert response.status_code == 400
    assert "Only 1 demonstration so far: a run needs at least 2" in response.content.decode()
    assert not TrainingRun.objects.exists()


def test_a_run_on_few_demonstrations_asks_to_confirm_and_launches_once_confirmed(
    project, personas, base, now
):
    for _ in range(3):
        _demonstration(project, personas.alice, now)
    form = {"kind": "sft", "base_model": base.pk}
    warned = _client(personas.admin).post(f"/p/{project.slug}/runs/", form)
    html = warned.content.decode()
    assert warned.status_code == 400 and not TrainingRun.objects.exists()
    assert "Only 3 demonstrations so far" in html
    assert (
        'type="checkbox" name="confirm"' in html and "Launch anyway with this little data" in html
    )
    confirmed = _client(personas.admin).post(f"/p/{project.slug}/runs/", {**form, "confirm": "on"})
    assert confirmed.status_code == 302 and TrainingRun.objects.count() == 1


def test_the_confirm_box_is_hidden_until_it_is_needed(project, personas, base):
    html = _client(personas.admin).get(f"/p/{project.slug}/runs/").content.decode()
    assert 'type="hidden" name="confirm"' in html and 'type="checkbox" name="confirm"' not in html


# Issue 18: the run page and the runs list follow the run.


def test_cancel_is_bound_to_the_c_key_inside_the_live_part_and_goes_when_the_run_ends(
    project, personas, base
):
    run = TrainingRun.objects.create(project=project, kind="sft", base_model=base,
                                     status=RunStatus.RUNNING)  # fmt: skip
    url = f"/p/{project.slug}/runs/{run.pk}/"
    fragment = _client(personas.admin).get(url, headers={"HX-Request": "true"}).content.decode()
    assert 'data-key="c">Cancel run' in fragment and "accesskey" not in fragment
    run.status = RunStatus.SUCCEEDED
    run.save(update_fields=["status"])
    fragment = _client(personas.admin).get(url, headers={"HX-Request": "true"}).content.decode()
    assert "Cancel run" not in fragment and "hx-trigger" not in fragment


def test_the_run_page_shows_its_duration_and_an_eta_while_it_runs(project, personas, base, now):
    from datetime import timedelta

    run = TrainingRun.objects.create(project=project, kind="sft", base_model=base,
                                     status=RunStatus.RUNNING, step=10, total_steps=40,
                                     started_at=now - timedelta(seconds=100))  # fmt: skip
    html = _client(personas.reviewer).get(f"/p/{project.slug}/runs/{run.pk}/").content.decode()
    # 100 s for 10 steps: 30 more steps take about 300 s. The clock moved a little since `now`.
    assert "running for 1 min 4" in html and "about 5 min 0" in html
    run.status, run.finished_at = RunStatus.SUCCEEDED, now
    run.save(update_fields=["status", "finished_at"])
    html = _client(personas.reviewer).get(f"/p/{project.slug}/runs/{run.pk}/").content.decode()
    assert "took 1 min 40 s" in html and " left" not in html


def test_the_runs_list_refreshes_while_a_run_is_live_and_links_its_models(
    project, personas, base, settings
):
    sft = ModelVersionFactory(project=project, name="sft-9", kind="sft", path="sft-9")
    run = TrainingRun.objects.create(project=project, kind="sft", base_model=base,
                                     status=RunStatus.SUCCEEDED, model_version=sft)  # fmt: skip
    url = f"/p/{project.slug}/runs/"
    html = _client(personas.reviewer).get(url).content.decode()
    assert "hx-trigger" not in html  # nothing live: no polling
    assert f'href="/p/{project.slug}/models/{base.pk}/">tiny-base</a>' in html
    assert f'href="/p/{project.slug}/models/{sft.pk}/">sft-9</a>' in html
    TrainingRun.objects.create(project=project, kind="sft", base_model=base)  # queued
    fragment = _client(personas.reviewer).get(url, headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in fragment and 'hx-trigger="every 3s"' in fragment
    assert f'href="/p/{project.slug}/runs/{run.pk}/"' in fragment


def test_the_training_pages_carry_the_project_navigation(project, personas, base):
    run = TrainingRun.objects.create(project=project, kind="sft", base_model=base)
    for url in (f"/p/{project.slug}/runs/", f"/p/{project.slug}/rounds/",
                f"/p/{project.slug}/runs/{run.pk}/"):  # fmt: skip
        html = _client(personas.reviewer).get(url).content.decode()
        assert f'href="/p/{project.slug}/rounds/" data-key="y"' in html, url
        assert f'href="/p/{project.slug}/runs/" data-key="u"' in html, url
    admin = _client(personas.admin).get(f"/p/{project.slug}/admin/").content.decode()
    assert (
        f'href="/p/{project.slug}/runs/"' in admin and f'href="/p/{project.slug}/rounds/"' in admin
    )


def test_a_refused_launch_gives_back_blank_json_settings_not_null(project, personas, base):
    response = _client(personas.admin).post(
        f"/p/{project.slug}/runs/", {"kind": "sft", "base_model": base.pk, "settings": ""}
    )
    assert response.status_code == 400
    assert ">null</textarea>" not in response.content.decode()


# Issue 18: curves drawn by a charting library (uPlot, vendored) from data the page carries.


def test_a_curve_is_handed_to_the_page_as_data_in_step_order(project, personas, base):
    run = TrainingRun.objects.create(project=project, kind="sft", base_model=base, status=RunStatus.RUNNING,
                                     step=3, total_steps=4)  # fmt: skip
    for step, value in ((2, 1.25), (1, 2.0)):
        run.metric_points.create(step=step, name="train/loss", value=value)
    html = _client(personas.reviewer).get(f"/p/{project.slug}/runs/{run.pk}/").content.decode()
    data = '{"name": "train/loss", "steps": [1, 2], "values": [2.0, 1.25]}'
    assert f'<script type="application/json">{data}</script>' in html
    assert "at step 2 (from 1.2500 to 2.0000 over steps 1–2)" in html  # without JavaScript
    assert "/static/vendor/uplot/uPlot.iife.min.js" in html and "/static/js/charts.js" in html
    assert "<svg" not in html.split('id="run-live"')[1]  # no hand-drawn chart left


def test_a_curve_leaves_out_non_finite_values_and_a_curve_of_none_is_no_chart():
    from training.charts import charts_for

    points = [("a", 2, float("nan")), ("a", 1, 0.5), ("b", 1, float("inf"))]
    (chart,) = charts_for(points)
    assert chart.data() == {"name": "a", "steps": [1], "values": [0.5]}


def test_uplot_is_vendored_with_its_licence_and_listed():
    from django.conf import settings

    vendor = settings.BASE_DIR / "static" / "vendor"
    script = (vendor / "uplot" / "uPlot.iife.min.js").read_text()
    assert script.startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    assert "MIT License" in (vendor / "uplot" / "LICENSE").read_text()
    assert "| uPlot | 1.6.32 | MIT" in (vendor / "README.md").read_text()


# Issue 18: on first start the tiny base model builds in the background; pages say what waits.


def test_pages_say_a_base_model_is_being_built_and_a_run_from_it_waits(
    project, personas, settings, tmp_path, now
):
    import time

    from training.demo import build_progress

    settings.MODEL_ROOT = tmp_path / "models"
    settings.MODEL_ROOT.mkdir()
    tiny = ModelVersionFactory(project=project, name="tiny-base", kind="base", path="tiny-base")
    project.base_model = tiny
    project.save(update_fields=["base_model"])
    for _ in range(2):
        _demonstration(project, personas.alice, now)
    build_progress.progress_write(
        settings.MODEL_ROOT / "tiny-base",
        build_progress.BuildProgress(phase="train", step=300, total_steps=1300,
                                     started_at=time.time() - 60, updated_at=time.time(),
                                     eta_seconds=200.0),
    )  # fmt: skip
    for url in (f"/p/{project.slug}/runs/", f"/p/{project.slug}/rounds/",
                f"/p/{project.slug}/models/"):  # fmt: skip
        html = _client(personas.admin).get(url).content.decode()
        assert "tiny-base is being built" in html and "step 300 of 1300" in html, url
        assert "about 3 min 20 s left" in html and "Runs and rounds from it wait" in html, url
    response = _client(personas.admin).post(
        f"/p/{project.slug}/runs/", {"kind": "sft", "base_model": tiny.pk, "confirm": "on"}
    )
    assert response.status_code == 400 and not TrainingRun.objects.exists()
    assert "tiny-base is still being built (about 3 min 20 s left)" in response.content.decode()

    build_progress.progress_clear(settings.MODEL_ROOT / "tiny-base")
    (settings.MODEL_ROOT / "tiny-base").mkdir()  # built
    html = _client(personas.admin).get(f"/p/{project.slug}/runs/").content.decode()
    assert "being built" not in html


def test_a_sampling_runs_page_answers_with_its_create_tasks_flag_in_the_dataset(
    project, personas, base
):
    run = TrainingRun.objects.create(project=project, kind="sample", base_model=base,
                                     config={"k": 4}, status=RunStatus.SUCCEEDED,
                                     dataset={"prompts": [1, 2], "create_tasks": True})  # fmt: skip
    response = _client(personas.reviewer).get(f"/p/{project.slug}/runs/{run.pk}/")
    assert response.status_code == 200 and "<li>2 prompts</li>" in response.content.decode()


def test_the_launch_form_offers_a_published_model_without_touching_its_files(
    project, personas, base, settings
):
    """Issue 17: the web host needs no model files. A version published to the store (its key
    and sha256 recorded) is offered although nothing of it is on this host, and loading the
    form fetches nothing into the artifact cache."""
    settings.ARTIFACTS = "s3://no-such-bucket/prefix"  # never contacted: the form reads the row
    published = ModelVersionFactory(
        project=project, name="sft-remote", kind="sft", path="run-9-20261205",
        artifact_uri="s3://no-such-bucket/prefix/models/run-9-20261205", sha256="a" * 64,
    )  # fmt: skip
    page = _client(personas.admin).get(f"/p/{project.slug}/runs/")
    assert published in set(page.context["form"].fields["base_model"].queryset)
    cache = settings.ARTIFACT_CACHE
    assert not cache.exists() or not any(cache.iterdir())
