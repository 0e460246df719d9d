"""The evaluation dashboard's reads: blind A/B judgements, ratings, reward-model accuracy.

Moving to the training app (issue 11); kept as it was in labeling/selectors.py until then.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models import ModelVersion, Project, RankingEntry
from .review import labeler_agreement


def comparison_records(*, project: Project) -> list:
    """Every blind A/B judgement as a plain stats.PairVerdict (model names, lengths in characters)."""
    from ..models import Comparison as ComparisonRow
    from ..stats import PairVerdict

    rows = (
        ComparisonRow.objects.filter(task__project=project)
        .select_related("a_completion__model_version", "b_completion__model_version", "task")
        .order_by("pk")
    )
    return [
        PairVerdict(
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


def rating_rows(*, project: Project) -> list[tuple[str, int, list[str]]]:
    """(model version, likert, flags) for every ranked completion: metadata rates per model."""
    entries = RankingEntry.objects.filter(ranking__task__project=project).values_list(
        "completion__model_version__name", "likert", "flags"
    )
    return [(name, likert, flags) for name, likert, flags in entries.iterator(chunk_size=5000)]


def reward_model_accuracies(*, project: Project) -> list[dict]:
    """Held-out pair accuracy of each reward model, as its training run measured it."""
    from training.models import RunMetric

    versions = ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.REWARD).order_by(
        "pk"
    )
    out = []
    for version in versions.select_related("training_run"):
        point = (
            RunMetric.objects.filter(run=version.training_run, name="val/pair_accuracy")
            .order_by("-step")
            .first()
            if version.training_run_id
            else None
        )
        out.append({"model": version.name, "val_pair_accuracy": point.value if point else None})
    return out


@dataclass(frozen=True)
class Dashboard:
    models: list[str]
    baseline: str | None
    win_rates: list
    ratings: list
    ratings_lc: list
    flags: list[str]
    metadata: dict
    likert: dict
    reward_models: list[dict]
    agreement: float | None
    comparisons: int


def evaluation_dashboard(*, project: Project, baseline: str | None = None) -> Dashboard:
    """Everything the reviewer dashboard shows, computed from the project's judgements."""
    from .. import stats

    comparisons = comparison_records(project=project)
    rows = rating_rows(project=project)
    compared = sorted({c.model_a for c in comparisons} | {c.model_b for c in comparisons})
    models = sorted(set(compared) | {name for name, _, _ in rows})
    if baseline not in compared:
        # Default baseline: the oldest compared model version (usually the SFT policy).
        order = dict(
            ModelVersion.objects.filter(project=project, name__in=compared).values_list(
                "name", "pk"
            )
        )
        baseline = min(compared, key=lambda n: order.get(n, 0)) if compared else None
    win_rates = [
        stats.win_rate(comparisons, model=m, baseline=baseline, n_boot=500)
        for m in compared
        if m != baseline
    ]
    return Dashboard(
        models=models,
        baseline=baseline,
        win_rates=[w for w in win_rates if w.n],
        ratings=stats.bradley_terry(comparisons, anchor=baseline, n_boot=100)
        if comparisons
        else [],
        ratings_lc=stats.bradley_terry(
            comparisons, anchor=baseline, n_boot=100, length_controlled=True
        )
        if comparisons
        else [],
        flags=list(project.flags),
        metadata=stats.metadata_rates(rows, flags=project.flags),
        likert=stats.mean_likert(rows),
        reward_models=reward_model_accuracies(project=project),
        agreement=labeler_agreement(project=project)["overall"],
        comparisons=len(comparisons),
    )
