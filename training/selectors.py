"""Reads for the training pages: runs, rounds, model lineage and the evaluation dashboard.

Every read is scoped to a project the caller belongs to (views check membership first).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import QuerySet

from labeling import stats
from labeling.errors import Invalid
from labeling.models import Comparison, Completion, ModelVersion, Project, RankingEntry

from . import review, rounds, storage
from .demo import build_progress
from .demo.build_progress import BuildProgress
from .models import ModelRegistration, Round, RoundStep, RunStatus, StepRole, TrainingRun


def runs_for_project(*, project: Project, limit: int = 100) -> QuerySet[TrainingRun]:
    return (
        TrainingRun.objects.filter(project=project)
        .select_related("base_model", "model_version")
        .order_by("-pk")[:limit]
    )


def trainable_models(*, project: Project, kind: str = "policy") -> QuerySet[ModelVersion]:
    """The model versions a run can start from ("policy": anything but a reward model; "reward":
    reward models), newest first. A version without weights (the name imported completions came
    with, e.g. "demo-canned"), with an unsafe key, or from before the artifact store with its
    folder missing, is left out: training from it could only fail in the worker. A published
    version is offered on its database record alone: the web host never fetches model files."""
    versions = ModelVersion.objects.filter(project=project).exclude(path="").order_by("-created_at")
    if kind == "reward":
        versions = versions.filter(kind=ModelVersion.Kind.REWARD)
    else:
        versions = versions.exclude(kind__in=[ModelVersion.Kind.REWARD, ModelVersion.Kind.EXTERNAL])
    usable = []
    for version in versions:
        try:
            if version.sha256:  # published: the database vouches for it; never fetched here
                storage.model_check(version)
            else:  # from before the store: a folder under MODEL_ROOT (or a hub name)
                storage.model_path(version)
        except Invalid:
            continue
        usable.append(version.pk)
    return versions.filter(pk__in=usable)


def model_ids_by_name(*, project: Project) -> dict[str, int]:
    """name -> id of the project's model versions (pages that name models link them)."""
    return dict(ModelVersion.objects.filter(project=project).values_list("name", "pk"))


def default_start_model(*, project: Project) -> ModelVersion | None:
    """What a launch form starts from unless told: the newest trained policy (SFT, PPO, DPO…),
    else the project's base model, else its first base model."""
    models = trainable_models(project=project)
    trained = models.filter(kind__in=[ModelVersion.Kind.SFT, ModelVersion.Kind.POLICY]).first()
    if trained is not None:
        return trained
    base = models.filter(pk=project.base_model_id).first() if project.base_model_id else None
    return base or models.filter(kind=ModelVersion.Kind.BASE).order_by("created_at").first()


@dataclass(frozen=True)
class ModelBuild:
    model: ModelVersion
    progress: BuildProgress


def model_build(*, version: ModelVersion, now: float) -> ModelBuild | None:
    """The build under way of a base model whose files are not there yet (the demo's tiny model,
    built in the background on first start), or None."""
    if version.kind != ModelVersion.Kind.BASE or not version.path or version.sha256:
        return None  # a published version was built before it was published
    try:
        storage.model_path(version)
    except Invalid:
        return None
    target = storage.model_root() / version.path
    if target.is_dir():
        return None
    progress = build_progress.progress_read(target, now=now)
    return ModelBuild(model=version, progress=progress) if progress else None


def model_builds(*, project: Project, now: float) -> list[ModelBuild]:
    """Every build under way of the project's base models (the pages say what waits on them)."""
    versions = ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.BASE)
    builds = [model_build(version=v, now=now) for v in versions.exclude(path="")]
    return [b for b in builds if b is not None]


def runs_of(*, project: Project) -> QuerySet[TrainingRun]:
    """Every run of the project, newest first, with the models it names (the API pages it)."""
    return (
        TrainingRun.objects.filter(project=project)
        .select_related("base_model", "reward_model", "model_version")
        .order_by("-pk")
    )


@dataclass(frozen=True)
class RunTiming:
    duration: timedelta | None  # from its start to its end, or to now while it runs
    eta: timedelta | None  # while it runs: the time left at the pace of its steps so far


def run_timing(*, run: TrainingRun, now: datetime) -> RunTiming:
    if run.started_at is None:
        return RunTiming(duration=None, eta=None)
    end = run.finished_at or now
    duration = max(end - run.started_at, timedelta(0))
    eta = None
    if run.status == RunStatus.RUNNING and 0 < run.step < run.total_steps:
        eta = duration / run.step * (run.total_steps - run.step)
    return RunTiming(duration=duration, eta=eta)


def run_for_page(*, project: Project, run_id: int) -> TrainingRun | None:
    return (
        TrainingRun.objects.filter(pk=run_id, project=project)
        .select_related("base_model", "reward_model", "model_version")
        .first()
    )


def run_curves(*, run: TrainingRun) -> list[tuple[str, int, float]]:
    """(name, step, value) of every logged metric, step order; run/… rows are bookkeeping
    (where an attempt started) and tasks/… rows counts (sampling_outcome), not curves."""
    return list(
        run.metric_points.exclude(name__startswith="run/")
        .exclude(name__startswith="tasks/")
        .order_by("step")
        .values_list("name", "step", "value")
    )


def run_metrics_since(*, run: TrainingRun, since: int, limit: int) -> list[tuple[str, int, float]]:
    """(name, step, value) of the run's logged values after step `since`, step order, at most
    `limit` (bookkeeping rows included: run/… marks where an attempt started)."""
    return list(
        run.metric_points.filter(step__gt=since)
        .order_by("step", "name")
        .values_list("name", "step", "value")[:limit]
    )


def sampling_outcome(*, run: TrainingRun) -> dict[str, int]:
    """What a sampling run put in the queue (runs._add_samples): prompts, ranking tasks, tasks
    with fewer than K outputs and prompts dropped for fewer than 2 different ones; {} if none."""
    points = run.metric_points.filter(name__startswith="tasks/").values_list("name", "value")
    return {name.removeprefix("tasks/"): int(value) for name, value in points}


def rounds_for_project(*, project: Project) -> QuerySet[Round]:
    return (
        Round.objects.filter(project=project)
        .select_related("policy", "new_policy")
        .order_by("-number")
    )


def round_for_page(*, project: Project, number: int) -> Round | None:
    return (
        Round.objects.filter(project=project, number=number)
        .select_related("policy", "new_policy")
        .first()
    )


def round_steps(*, round_: Round) -> list[tuple[str, TrainingRun | None]]:
    """(label, run) of each step in recipe order; None for the training steps still to come."""
    steps = RoundStep.objects.filter(round=round_).select_related("run__base_model")
    found: list[tuple[str, TrainingRun | None]] = []
    for step in steps.order_by("position"):
        run = step.run
        if step.role == StepRole.SAMPLE:
            label = f"Sample {run.base_model.name} ({run.config.get('k')} per prompt)"
        elif step.role == StepRole.BASELINE:
            label = f"Compute-matched SFT ({run.config.get('max_steps')} steps)"
        else:
            label = run.get_kind_display()
        found.append((label, run))
    planned = rounds.planned_steps(round_.recipe)
    done = sum(
        role != StepRole.SAMPLE and role != StepRole.BASELINE
        for role in steps.values_list("role", flat=True)
    )
    return found + [(label, None) for label in planned[done:]]


def model_version_for_page(*, project: Project, version_id: int) -> ModelVersion | None:
    return (
        ModelVersion.objects.filter(project=project, pk=version_id)
        .select_related("parent", "training_run", "registration")
        .first()
    )


def completions_of(*, version: ModelVersion, split: str | None = None) -> QuerySet[Completion]:
    """The outputs a model version sampled, oldest first, with their prompts."""
    completions = (
        Completion.objects.filter(model_version=version).select_related("prompt").order_by("pk")
    )
    return completions if split is None else completions.filter(prompt__split=split)


def registrations_for_page(*, project: Project, limit: int = 50) -> list[ModelRegistration]:
    return list(
        ModelRegistration.objects.filter(project=project)
        .select_related("model_version")
        .order_by("-pk")[:limit]
    )


def model_versions_for_page(*, project: Project) -> list[ModelVersion]:
    """Every version, oldest first, with where it came from (a registration or a run)."""
    return list(
        ModelVersion.objects.filter(project=project)
        .select_related("parent", "registration", "training_run")
        .order_by("pk")
    )


def training_run_of(version: ModelVersion) -> TrainingRun | None:
    """The run that made a version (None for a base or an imported model)."""
    try:
        return version.training_run
    except TrainingRun.DoesNotExist:
        return None


# --- evaluation dashboard ------------------------------------------------------------------


def comparison_records(*, project: Project) -> list[stats.PairVerdict]:
    """Every blind A/B judgement as a plain stats record (model names, lengths in characters)."""
    rows = (
        Comparison.objects.filter(task__project=project)
        .select_related("a_completion__model_version", "b_completion__model_version", "task")
        .order_by("pk")
    )
    return [
        stats.PairVerdict(
            model_a=r.a_completion.model_version.name,
            model_b=r.b_completion.model_version.name,
            winner=r.winner,
            len_a=len(r.a_completion.text),
            len_b=len(r.b_completion.text),
            prompt_id=r.task.prompt_id,
            labeler_id=r.labeler_id,
        )
        for r in rows.iterator(chunk_size=2000)
    ]


@dataclass(frozen=True)
class RoundResult:
    """A finished round's new policy against its start policy and its compute-matched SFT."""

    round: Round
    over_start: stats.WinRate
    over_baseline: stats.WinRate | None  # None: the round trained no baseline
    baseline_name: str | None


def win_rate_of(
    data: dict[str, Any], *, model: str, baseline: str, n_boot: int = review.WIN_RATE_BOOTSTRAPS
) -> stats.WinRate:
    """`model`'s win rate over `baseline` from a snapshot's aggregates (training/review.py):
    the pair's outcome counts and prompt clusters, turned to `model`'s side."""
    wins = losses = ties = 0
    for a, b, outcome, n in data.get("outcomes", ()):
        if {a, b} != {model, baseline} or a == b:
            continue
        if outcome == "tie":
            ties += n
        elif (outcome == "a") == (a == model):
            wins += n
        else:
            losses += n
    clusters = [
        (half, n, prompts) if lo == model else (2 * n - half, n, prompts)
        for lo, hi, half, n, prompts in data.get("clusters", ())
        if {lo, hi} == {model, baseline}
    ]
    return stats.win_rate_from_counts(
        model=model,
        baseline=baseline,
        wins=wins,
        losses=losses,
        ties=ties,
        clusters=clusters,
        n_boot=n_boot,
    )


def round_results(
    *,
    project: Project,
    data: dict[str, Any] | None = None,
    number: int | None = None,
    n_boot: int = review.WIN_RATE_BOOTSTRAPS,
) -> list[RoundResult]:
    """Blind A/B win rates of each round's new policy, newest round first: over the policy it
    started from, and over SFT continued for the same optimizer steps (what the rankings added
    beyond more demonstrations). From a snapshot's aggregates (`data`); the judgements so far,
    counted now, when none is given."""
    if data is None:
        data = review.current_data(project_id=project.pk)
    found = []
    rounds_ = Round.objects.filter(project=project, new_policy__isnull=False).select_related(
        "policy", "new_policy"
    )
    if number is not None:
        rounds_ = rounds_.filter(number=number)
    for round_ in rounds_.order_by("-number"):
        assert round_.new_policy is not None  # filtered above
        new = round_.new_policy.name
        baseline_run = round_.baseline_run
        baseline = baseline_run.model_version if baseline_run is not None else None
        found.append(
            RoundResult(
                round=round_,
                over_start=win_rate_of(data, model=new, baseline=round_.policy.name, n_boot=n_boot),
                over_baseline=win_rate_of(data, model=new, baseline=baseline.name, n_boot=n_boot)
                if baseline is not None
                else None,
                baseline_name=baseline.name if baseline is not None else None,
            )
        )
    return found


def rating_rows(*, project: Project) -> list[tuple[str, int, list[str]]]:
    """(model version, likert, flags) for every ranked completion: metadata rates per model."""
    entries = RankingEntry.objects.filter(ranking__task__project=project).values_list(
        "completion__model_version__name", "likert", "flags"
    )
    return [(name, likert, flags) for name, likert, flags in entries.iterator(chunk_size=5000)]


@dataclass(frozen=True)
class RewardModelAccuracy:
    model: str
    accuracy: float | None  # held-out pair accuracy as its run last measured it; None: never
    held_out: stats.HeldOutAccuracy | None  # with its n and 95% interval; None: n not recorded


def held_out_accuracy_of(metrics: dict[str, Any]) -> stats.HeldOutAccuracy | None:
    """A reward model's held-out pair accuracy with its interval, from the final metrics its run
    registered (None when it measured none, or ran before the pairs were counted)."""
    accuracy, pairs = metrics.get("val/pair_accuracy"), metrics.get("val/pairs")
    if accuracy is None or pairs is None:
        return None
    rankings = metrics.get("val_rankings")
    return stats.held_out_accuracy(
        accuracy, pairs=int(pairs), rankings=None if rankings is None else int(rankings)
    )


def reward_model_accuracies(*, project: Project) -> list[RewardModelAccuracy]:
    """Held-out pair accuracy of each reward model, with the number of pairs and rankings it was
    measured on and its 95% interval, from the metrics its run registered (one query)."""
    versions = (
        ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.REWARD)
        .order_by("pk")
        .values_list("name", "metrics")
    )
    return [
        RewardModelAccuracy(
            model=name,
            accuracy=(metrics or {}).get("val/pair_accuracy"),
            held_out=held_out_accuracy_of(metrics or {}),
        )
        for name, metrics in versions
    ]


@dataclass(frozen=True)
class Dashboard:
    models: list[str]
    baseline: str | None
    win_rates: list[stats.WinRate]
    ratings: list[stats.Rating]
    ratings_lc: list[stats.Rating]
    flags: list[str]
    metadata: dict[str, dict[str, float]]
    likert: dict[str, tuple[float, int]]
    reward_models: list[RewardModelAccuracy]
    pairs_needed: int  # held-out pairs to tell a 60% reward model from 50%
    agreement: float | None
    comparisons: int
    rounds: list[RoundResult]


def evaluation_dashboard(
    *, project: Project, baseline: str | None = None, data: dict[str, Any] | None = None
) -> Dashboard:
    """Everything the reviewer dashboard shows, from a snapshot's aggregates (`data`,
    training/review.py; the judgements so far, counted now, when none is given). Win rates and
    the anchoring of ratings follow the chosen baseline, from those few numbers."""
    if data is None:
        data = review.current_data(project_id=project.pk)
    outcomes = data.get("outcomes", [])
    compared = sorted({a for a, *_ in outcomes} | {b for _, b, *_ in outcomes})
    totals = {model: (total, n) for model, total, n in data.get("likert", [])}
    flagged: dict[str, dict[str, int]] = {}
    for model, flag, n in data.get("flags", []):
        flagged.setdefault(model, {})[flag] = n
    if baseline not in compared:
        # Default baseline: the oldest compared model version (usually the SFT policy).
        order = data.get("model_ids", {})
        baseline = min(compared, key=lambda n: order.get(n, 0)) if compared else None
    win_rates = [win_rate_of(data, model=m, baseline=baseline) for m in compared if m != baseline]
    return Dashboard(
        models=sorted(set(compared) | set(totals)),
        baseline=baseline,
        win_rates=[w for w in win_rates if w.n],
        ratings=_ratings(data.get("ratings"), anchor=baseline),
        ratings_lc=_ratings(data.get("ratings_lc"), anchor=baseline),
        flags=list(project.flags),
        metadata=stats.metadata_rates_from_counts(
            {model: n for model, (_, n) in totals.items()}, flagged, flags=project.flags
        ),
        likert=stats.mean_likert_from_counts(totals),
        reward_models=reward_model_accuracies(project=project),
        pairs_needed=stats.PAIRS_TO_TELL_60_FROM_50,
        agreement=data.get("agreement"),
        comparisons=sum(n for *_, n in outcomes),
        rounds=round_results(project=project, data=data),
    )


def _ratings(draws: dict[str, Any] | None, *, anchor: str | None) -> list[stats.Rating]:
    if not draws:
        return []
    return stats.ratings_anchored(stats.RatingDraws(**draws), anchor=anchor)
