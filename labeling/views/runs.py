"""Training-run pages: list and launch, live progress (htmx polling), curves, cancel."""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from labeling import runs, selectors
from labeling.charts import charts_for
from labeling.errors import DomainError, Forbidden, NotFound
from labeling.models import ModelVersion, Role
from training.models import RunKind, TrainingRun

# The curves worth a glance, in reading order (names as the stages log them).
CURVES = [
    "train/loss", "val/loss", "train/pair_accuracy", "val/pair_accuracy", "reward/score",
    "reward/total", "kl/k1", "kl/k3", "policy/entropy", "policy/clipfrac", "policy/approx_kl",
    "loss/value", "value/explained_variance", "response/length", "response/eos_rate", "loss/ptx",
    "eos_rate", "mean_length",
]  # fmt: skip


class RunForm(forms.Form):
    kind = forms.ChoiceField(choices=RunKind.choices)
    base_model = forms.ModelChoiceField(queryset=ModelVersion.objects.none(), label="Start from")
    reward_model = forms.ModelChoiceField(queryset=ModelVersion.objects.none(), required=False)
    max_steps = forms.IntegerField(min_value=1, max_value=1_000_000, required=False)
    lr = forms.FloatField(min_value=0, max_value=1, required=False, label="Learning rate")
    batch_size = forms.IntegerField(min_value=1, max_value=4096, required=False)
    checkpoint_every = forms.IntegerField(min_value=0, max_value=1_000_000, required=False)

    def __init__(self, *args, project, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        versions = ModelVersion.objects.filter(project=project).order_by("-created_at")
        self.fields["base_model"].queryset = versions.exclude(kind=ModelVersion.Kind.REWARD)
        self.fields["reward_model"].queryset = versions.filter(kind=ModelVersion.Kind.REWARD)

    def config(self) -> dict:
        keys = ("max_steps", "lr", "batch_size", "checkpoint_every")
        config = {k: self.cleaned_data[k] for k in keys if self.cleaned_data.get(k) is not None}
        if self.cleaned_data["kind"] == RunKind.PPO and "max_steps" in config:
            config["total_episodes"] = config.pop("max_steps") * config.get("batch_size", 16)
        if self.cleaned_data["kind"] == RunKind.SAMPLE:
            config.pop("max_steps", None)
            config.pop("lr", None)
        return config


def _membership(request: HttpRequest, slug: str, role: str):
    try:
        return selectors.membership_require(user_id=request.user.pk, slug=slug, role=role)
    except NotFound:
        raise Http404("No such project.") from None


@login_required
@require_http_methods(["GET", "POST"])
def run_list(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        membership = _membership(request, slug, Role.REVIEWER)
    except Forbidden as exc:
        return HttpResponseForbidden(exc.message)
    project = membership.project
    form = RunForm(request.POST or None, project=project)
    error = None
    if request.method == "POST":
        if not membership.allows(Role.ADMIN):
            return HttpResponseForbidden("Only admins launch training runs.")
        if form.is_valid():
            try:
                run = runs.run_start(
                    project=project,
                    kind=form.cleaned_data["kind"],
                    config=form.config(),
                    created_by=request.user,
                    base_model=form.cleaned_data["base_model"],
                    reward_model=form.cleaned_data["reward_model"],
                )
            except DomainError as exc:
                error = exc.message
            else:
                return redirect("run-detail", slug=slug, run_id=run.pk)
    run_rows = (
        TrainingRun.objects.filter(project=project)
        .select_related("base_model")
        .order_by("-pk")[:100]
    )
    return render(
        request,
        "training/runs.html",
        {
            "project": project,
            "runs": run_rows,
            "form": form,
            "error": error,
            "is_admin": membership.allows(Role.ADMIN),
        },
    )


@login_required
def run_detail(request: HttpRequest, slug: str, run_id: int) -> HttpResponse:
    try:
        membership = _membership(request, slug, Role.REVIEWER)
    except Forbidden as exc:
        return HttpResponseForbidden(exc.message)
    run = (
        TrainingRun.objects.filter(pk=run_id, project=membership.project)
        .select_related("base_model", "reward_model")
        .first()
    )
    if run is None:
        raise Http404("No such run.")
    points = run.metric_points.order_by("step").values_list("name", "step", "value")
    context = {
        "project": membership.project,
        "run": run,
        "charts": charts_for(list(points), CURVES),
        "is_admin": membership.allows(Role.ADMIN),
        "model_version": ModelVersion.objects.filter(training_run=run).first(),
        "dataset_sizes": {k: len(v) for k, v in run.dataset.items()},
        "live": run.status in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING),
    }
    template = "training/run_detail.html#live" if request.htmx else "training/run_detail.html"
    return render(request, template, context)


@login_required
@require_POST
def run_cancel(request: HttpRequest, slug: str, run_id: int) -> HttpResponse:
    try:
        membership = _membership(request, slug, Role.ADMIN)
    except Forbidden as exc:
        return HttpResponseForbidden(exc.message)
    try:
        runs.run_cancel(run_id=run_id, project=membership.project, now=timezone.now())
    except NotFound:
        raise Http404("No such run.") from None
    except DomainError:
        pass  # already finished: the page shows its final state
    return redirect("run-detail", slug=slug, run_id=run_id)
