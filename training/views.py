"""Training pages: runs (launch, live progress by htmx polling, curves, cancel), rounds, model
lineage and the reviewers' evaluation dashboard. Thin: check membership, one domain call, render.
"""

from __future__ import annotations

import contextlib
import json

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from labeling import access
from labeling.errors import Conflict, Forbidden, Invalid
from labeling.models import Membership, Role
from labeling.views.pages import page_view

from . import loop, registry, review, rounds, runs, selectors
from .charts import charts_for
from .forms import RegisterModelForm, RoundForm, RunForm
from .models import RoundStatus, RoundStep, RunStatus

# The curves worth a glance, in reading order (names as the stages log them).
CURVES = [
    "train/loss", "val/loss", "train/pair_accuracy", "val/pair_accuracy", "reward/score",
    "reward/total", "kl/k1", "kl/k3", "policy/entropy", "policy/clipfrac", "policy/approx_kl",
    "loss/value", "value/explained_variance", "response/length", "response/eos_rate", "loss/ptx",
    "eos_rate", "mean_length",
]  # fmt: skip


def _membership(request: HttpRequest, slug: str, role: str) -> Membership:
    return access.membership_require(user_id=request.user.pk, slug=slug, role=role)


@page_view
@require_http_methods(["GET", "POST"])
def run_list(request: HttpRequest, slug: str) -> HttpResponse:
    membership = _membership(request, slug, Role.REVIEWER)
    project = membership.project
    form = RunForm(request.POST or None, project=project)
    if request.method == "POST":
        if not membership.allows(Role.ADMIN):
            raise Forbidden("Only admins launch training runs.")
        if form.is_valid():
            try:
                run = runs.run_start(
                    project=project,
                    kind=form.cleaned_data["kind"],
                    config=form.config(),
                    created_by=request.user,
                    base_model=form.cleaned_data["base_model"],
                    reward_model=form.cleaned_data["reward_model"],
                    queue=form.gpu_queue(),
                )
            except Invalid as exc:
                form.add_setting_errors(exc)
            else:
                return redirect("run-detail", slug=slug, run_id=run.pk)
    now = timezone.now()
    rows = [
        (run, selectors.run_timing(run=run, now=now))
        for run in selectors.runs_for_project(project=project)
    ]
    context = {
        "project": project,
        "rows": rows,
        "live": any(run.status in (RunStatus.QUEUED, RunStatus.RUNNING) for run, _ in rows),
        "builds": selectors.model_builds(project=project, now=now.timestamp()),
        "form": form,
        "is_admin": membership.allows(Role.ADMIN),
    }
    if request.htmx and request.method == "GET":
        return render(request, "training/runs.html#list", context)
    return render(request, "training/runs.html", context, status=400 if form.errors else 200)


@page_view
@require_GET
def run_detail(request: HttpRequest, slug: str, run_id: int) -> HttpResponse:
    membership = _membership(request, slug, Role.REVIEWER)
    run = selectors.run_for_page(project=membership.project, run_id=run_id)
    if run is None:
        raise Http404("No such run.")
    points = selectors.run_curves(run=run)
    context = {
        "project": membership.project,
        "run": run,
        "charts": charts_for(
            points, CURVES + sorted({n for n, _, _ in points} - set(CURVES) - {"lr"})
        ),
        "is_admin": membership.allows(Role.ADMIN),
        "model_version": run.model_version,
        "dataset_sizes": {k: len(v) for k, v in run.dataset.items() if isinstance(v, list)},
        "outcome": selectors.sampling_outcome(run=run),
        "live": run.status in (RunStatus.QUEUED, RunStatus.RUNNING),
        "in_round": RoundStep.objects.filter(run=run).exists(),
        "timing": selectors.run_timing(run=run, now=timezone.now()),
    }
    template = "training/run_detail.html#live" if request.htmx else "training/run_detail.html"
    return render(request, template, context)


@page_view
@require_POST
def run_cancel(request: HttpRequest, slug: str, run_id: int) -> HttpResponse:
    membership = _membership(request, slug, Role.ADMIN)
    with contextlib.suppress(Conflict):  # already finished: the page shows its final state
        loop.run_cancel(run_id=run_id, project=membership.project, now=timezone.now())
    return redirect("run-detail", slug=slug, run_id=run_id)


@page_view
@require_POST
def run_resume(request: HttpRequest, slug: str, run_id: int) -> HttpResponse:
    membership = _membership(request, slug, Role.ADMIN)
    try:
        loop.run_resume(
            run_id=run_id,
            project=membership.project,
            now=timezone.now(),
            by=request.user.get_username(),
        )
    except Conflict as exc:
        messages.error(request, str(exc))
    return redirect("run-detail", slug=slug, run_id=run_id)


@page_view
@require_http_methods(["GET", "POST"])
def round_list(request: HttpRequest, slug: str) -> HttpResponse:
    membership = _membership(request, slug, Role.REVIEWER)
    project = membership.project
    form = RoundForm(request.POST or None, project=project)
    error = None
    if request.method == "POST":
        if not membership.allows(Role.ADMIN):
            raise Forbidden("Only admins start rounds.")
        if form.is_valid():
            try:
                round_ = rounds.round_start(
                    project=project,
                    policy=form.cleaned_data["policy"],
                    created_by=request.user,
                    config=form.config(),
                    recipe=form.cleaned_data["recipe"],
                    queue=form.gpu_queue(),
                )
            except Conflict as exc:
                error = exc.message
            except Invalid as exc:
                form.add_setting_errors(exc)
            else:
                return redirect("round-detail", slug=slug, number=round_.number)
    context = {
        "project": project,
        "rounds": selectors.rounds_for_project(project=project),
        "builds": selectors.model_builds(project=project, now=timezone.now().timestamp()),
        "form": form,
        "error": error,
        "is_admin": membership.allows(Role.ADMIN),
    }
    status = 400 if form.errors else 409 if error else 200
    return render(request, "training/rounds.html", context, status=status)


@page_view
@require_GET
def round_detail(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    membership = _membership(request, slug, Role.REVIEWER)
    round_ = selectors.round_for_page(project=membership.project, number=number)
    if round_ is None:
        raise Http404("No such round.")
    context = {
        "project": membership.project,
        "round": round_,
        "stages": selectors.round_steps(round_=round_),
        # Judged after the round: not recomputed on every poll while it runs. From the
        # dashboard's snapshot of aggregates (training/review.py), as fresh as it says there.
        "results": []
        if round_.status == RoundStatus.RUNNING
        else selectors.round_results(
            project=membership.project,
            number=number,
            data=review.snapshot_for_page(project=membership.project, now=timezone.now()).data,
        ),
        "live": round_.status == RoundStatus.RUNNING,
        "is_admin": membership.allows(Role.ADMIN),
    }
    template = "training/round_detail.html#live" if request.htmx else "training/round_detail.html"
    return render(request, template, context)


@page_view
@require_POST
def round_cancel(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    membership = _membership(request, slug, Role.ADMIN)
    with contextlib.suppress(Conflict):  # already finished: the page shows its final state
        loop.round_cancel(project=membership.project, number=number, now=timezone.now())
    return redirect("round-detail", slug=slug, number=number)


@page_view
@require_GET
def model_version_detail(request: HttpRequest, slug: str, version_id: int) -> HttpResponse:
    """Lineage: the run that made a version, the config it really ran with and the exact data."""
    membership = _membership(request, slug, Role.REVIEWER)
    version = selectors.model_version_for_page(project=membership.project, version_id=version_id)
    if version is None:
        raise Http404("No such model version.")
    run = selectors.training_run_of(version)
    context = {
        "project": membership.project,
        "version": version,
        "run": run,
        # As stored (JSON): 9e-06 reads as the config says, not as a localised 0.000009.
        "config": [(k, json.dumps(v)) for k, v in sorted(run.config.items())] if run else [],
        "dataset": [
            (name, len(ids), ids[:50])
            for name, ids in (run.dataset if run else {}).items()
            if isinstance(ids, list)
        ],
        "registration": getattr(version, "registration", None),
        "children": version.children.order_by("pk"),
        "completions": version.completions.count(),
        "held_out": selectors.held_out_accuracy_of(version.metrics or {}),
    }
    return render(request, "training/model_version.html", context)


@page_view
@require_http_methods(["GET", "POST"])
def model_list(request: HttpRequest, slug: str) -> HttpResponse:
    """The project's models, and (admins) registering a base model and following its checks."""
    membership = _membership(request, slug, Role.REVIEWER)
    project = membership.project
    is_admin = membership.allows(Role.ADMIN)
    form = RegisterModelForm(request.POST or None)
    if request.method == "POST":
        if not is_admin:
            raise Forbidden("Only admins register models.")
        if form.is_valid():
            try:
                registry.registration_create(
                    project=project, created_by=request.user, **form.cleaned_data
                )
            except Invalid as exc:
                form.add_registry_error(exc)
            else:
                return redirect("model-list", slug=slug)
    registrations = selectors.registrations_for_page(project=project) if is_admin else []
    context = {
        "project": project,
        "form": form,
        "is_admin": is_admin,
        "import_root": registry.import_root(),
        "registrations": registrations,
        "live": any(r.status in ("pending", "validating") for r in registrations),
        "versions": selectors.model_versions_for_page(project=project),
        "builds": selectors.model_builds(project=project, now=timezone.now().timestamp()),
    }
    template = "training/models.html#live" if request.htmx else "training/models.html"
    return render(request, template, context)


@page_view
@require_GET
def review_dashboard(request: HttpRequest, slug: str) -> HttpResponse:
    """The figures come from the project's snapshot of aggregates (training/review.py); the
    htmx poll of a page whose snapshot is being recomputed gets the freshness line, and a full
    reload once the new figures are in."""
    project = _membership(request, slug, Role.REVIEWER).project
    freshness = review.snapshot_for_page(project=project, now=timezone.now())
    if request.htmx:
        context = {"project": project, "f": freshness, "baseline": request.GET.get("baseline")}
        response = render(request, "training/dashboard.html#freshness", context)
        if not freshness.computing:
            response["HX-Refresh"] = "true"
        return response
    dashboard = selectors.evaluation_dashboard(
        project=project, baseline=request.GET.get("baseline"), data=freshness.data
    )
    context = {"project": project, "d": dashboard, "f": freshness, "baseline": dashboard.baseline,
               "model_ids": selectors.model_ids_by_name(project=project)}  # fmt: skip
    return render(request, "training/dashboard.html", context)


@page_view
@require_POST
def review_recompute(request: HttpRequest, slug: str) -> HttpResponse:
    """Ask a worker to recompute the dashboard's figures; the page polls until they are in."""
    project = _membership(request, slug, Role.REVIEWER).project
    review.refresh_request(project_id=project.pk, now=timezone.now())
    if not request.htmx:
        return redirect("review_dashboard", slug=slug)
    context = {
        "project": project,
        "f": review.freshness_of(project=project),
        "baseline": request.POST.get("baseline"),
    }
    return render(request, "training/dashboard.html#freshness", context)
