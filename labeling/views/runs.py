"""Training-run pages: list and launch, live progress (htmx polling), curves, cancel."""

from __future__ import annotations

import contextlib

from django import forms
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from labeling import runs, selectors
from labeling.charts import charts_for
from labeling.errors import Conflict, DomainError, Forbidden
from labeling.models import ModelVersion, Role
from labeling.views.pages import page_view
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
    return selectors.membership_require(user_id=request.user.pk, slug=slug, role=role)


@page_view
@require_http_methods(["GET", "POST"])
def run_list(request: HttpRequest, slug: str) -> HttpResponse:
    membership = _membership(request, slug, Role.REVIEWER)
    project = membership.project
    form = RunForm(request.POST or None, project=project)
    error = None
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


@page_view
def run_detail(request: HttpRequest, slug: str, run_id: int) -> HttpResponse:
    membership = _membership(request, slug, Role.REVIEWER)
    run = (
        TrainingRun.objects.filter(pk=run_id, project=membership.project)
        .select_related("base_model", "reward_model")
        .first()
    )
    if run is None:
        raise Http404("No such run.")
    # run/… rows are bookkeeping (where an attempt started), not curves.
    points = list(
        run.metric_points.exclude(name__startswith="run/")
        .order_by("step")
        .values_list("name", "step", "value")
    )
    context = {
        "project": membership.project,
        "run": run,
        "charts": charts_for(
            points, CURVES + sorted({n for n, _, _ in points} - set(CURVES) - {"lr"})
        ),
        "is_admin": membership.allows(Role.ADMIN),
        "model_version": ModelVersion.objects.filter(training_run=run).first(),
        "dataset_sizes": {k: len(v) for k, v in run.dataset.items()},
        "live": run.status in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING),
    }
    template = "training/run_detail.html#live" if request.htmx else "training/run_detail.html"
    return render(request, template, context)


@page_view
@require_POST
def run_cancel(request: HttpRequest, slug: str, run_id: int) -> HttpResponse:
    membership = _membership(request, slug, Role.ADMIN)
    with contextlib.suppress(Conflict):  # already finished: the page shows its final state
        runs.run_cancel(run_id=run_id, project=membership.project, now=timezone.now())
    return redirect("run-detail", slug=slug, run_id=run_id)


# --- rounds and lineage --------------------------------------------------------------------


class RoundForm(forms.Form):
    policy = forms.ModelChoiceField(queryset=ModelVersion.objects.none(), label="Start from policy")
    max_prompts = forms.IntegerField(
        min_value=1, max_value=100_000, initial=64, label="Prompts to sample"
    )
    reward_steps = forms.IntegerField(min_value=1, max_value=1_000_000, required=False)
    ppo_episodes = forms.IntegerField(min_value=1, max_value=10_000_000, required=False)
    kl_coef = forms.FloatField(min_value=0, max_value=10, required=False, label="KL coefficient β")
    sample_temperature = forms.FloatField(
        min_value=0.01, max_value=5, required=False, label="Sampling temperature (A/B answers)"
    )
    rank_temperature = forms.FloatField(
        min_value=0.01, max_value=5, required=False,
        label="Sampling temperature for ranking tasks (blank: as above)",
    )  # fmt: skip
    min_eos_rate = forms.FloatField(
        min_value=0, max_value=1, initial=0.5, label="Gate: min EOS rate"
    )
    max_kl = forms.FloatField(min_value=0, initial=8.0, label="Gate: max KL (nats per response)")
    max_mean_length = forms.FloatField(min_value=1, initial=512.0, label="Gate: max mean length")

    def __init__(self, *args, project, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["policy"].queryset = (
            ModelVersion.objects.filter(project=project)
            .exclude(kind=ModelVersion.Kind.REWARD)
            .order_by("-created_at")
        )

    def config(self) -> dict:
        data = self.cleaned_data
        config: dict = {
            "max_prompts": data["max_prompts"],
            "gate": {k: data[k] for k in ("min_eos_rate", "max_kl", "max_mean_length")},
        }
        if data.get("reward_steps"):
            config["reward"] = {"max_steps": data["reward_steps"]}
        ppo = {}
        if data.get("ppo_episodes"):
            ppo["total_episodes"] = data["ppo_episodes"]
        if data.get("kl_coef") is not None:
            ppo["kl_coef"] = data["kl_coef"]
        if ppo:
            config["ppo"] = ppo
        if data.get("sample_temperature") is not None:
            config["sample"] = {"temperature": data["sample_temperature"]}
        if data.get("rank_temperature") is not None:
            config["rank_sample"] = {"temperature": data["rank_temperature"]}
        return config


@page_view
@require_http_methods(["GET", "POST"])
def round_list(request: HttpRequest, slug: str) -> HttpResponse:
    from labeling import rounds
    from training.models import Round

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
                )
            except DomainError as exc:
                error = exc.message
            else:
                return redirect("round-detail", slug=slug, number=round_.number)
    context = {
        "project": project,
        "rounds": Round.objects.filter(project=project)
        .select_related("policy", "new_policy")
        .order_by("-number"),
        "form": form,
        "error": error,
        "is_admin": membership.allows(Role.ADMIN),
    }
    return render(request, "training/rounds.html", context)


@page_view
def round_detail(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    from training.models import Round

    membership = _membership(request, slug, Role.REVIEWER)
    round_ = (
        Round.objects.filter(project=membership.project, number=number)
        .select_related("policy", "new_policy", "reward_run", "ppo_run")
        .first()
    )
    if round_ is None:
        raise Http404("No such round.")
    stages = [("Reward model", round_.reward_run), ("PPO", round_.ppo_run)] + [
        (f"Sample {run.base_model.name} ({run.config.get('k')} per prompt)", run)
        for run in round_.sample_runs.select_related("base_model").order_by("pk")
    ]
    context = {
        "project": membership.project,
        "round": round_,
        "stages": stages,
        "live": round_.status == "running",
    }
    template = "training/round_detail.html#live" if request.htmx else "training/round_detail.html"
    return render(request, template, context)


@page_view
def model_version_detail(request: HttpRequest, slug: str, version_id: int) -> HttpResponse:
    """Lineage: the run that made a version, its config and the exact data it trained on."""
    membership = _membership(request, slug, Role.REVIEWER)
    version = (
        ModelVersion.objects.filter(project=membership.project, pk=version_id)
        .select_related("training_run", "parent")
        .first()
    )
    if version is None:
        raise Http404("No such model version.")
    run = version.training_run
    context = {
        "project": membership.project,
        "version": version,
        "run": run,
        "dataset": [
            (name, len(ids), ids[:50])
            for name, ids in (run.dataset if run else {}).items()
            if isinstance(ids, list)
        ],
        "children": version.children.order_by("pk"),
        "completions": version.completions.count(),
    }
    return render(request, "training/model_version.html", context)
