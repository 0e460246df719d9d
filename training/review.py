"""The reviewer dashboard's figures, kept as a snapshot of aggregates (issue 15).

At 10^6 comparisons the dashboard cannot be computed per request (the record-based path took
25 min and 3.2 GB). Every figure on it depends on the judgements only through counts the
database groups (labeling/sql/statements.py, REVIEW_*): per model pair and outcome, the prompt
clusters of the win-rate bootstrap, Likert sums and flag counts. `refresh_snapshot` counts them up
to a watermark, fits Bradley–Terry with its bootstrap once, and stores it all on the project's
ReviewSnapshot; the page (training/selectors.py) anchors the ratings and bootstraps win rates
for whichever baseline is chosen, from those few numbers.

A request never waits for a large project: `snapshot_for_page` computes inline only when the
project is small, and otherwise sends the refresh to a worker and shows the snapshot it has,
saying how old it is.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from celery import current_app
from django.db import transaction
from kombu.exceptions import KombuError

from labeling import sql, stats
from labeling.models import ModelVersion, Project
from labeling.sql import statements as q

from .models import ReviewSnapshot

logger = logging.getLogger(__name__)

REFRESH_TASK = "training.tasks.refresh_review_snapshot"
# Bins per unit of normalised length difference d ∈ [−1, 1] for the length-controlled fit: a
# group's mean d is within 0.005 of each member's, which moves ratings by under 0.01 Elo on a
# strongly length-biased judge (tests/labeling/test_stats_counts.py holds them to 0.5 Elo).
LENGTH_BINS_PER_UNIT = 100
# Bootstrap sizes, as the record-based dashboard used them.
RATING_BOOTSTRAPS = 100
WIN_RATE_BOOTSTRAPS = 500
# A project with fewer comparisons + ranked outputs than this is recomputed inline when its
# snapshot is missing or stale (well under a second); a larger one in the background.
INLINE_LIMIT = 20_000
# New rows are counted up to this many for the freshness line ("100000+ since").
NEW_COUNT_CAP = 100_000
# A recompute asked for this long ago and not done is taken as lost and asked for again.
REQUEST_RETRY = timedelta(minutes=10)


def snapshot_data(*, project_id: int, comparisons_upto: int, entries_upto: int) -> dict[str, Any]:
    """The dashboard's aggregates and Bradley–Terry fits for the judgements up to the
    watermarks: a JSON-able dict (the ReviewSnapshot's `data`), read by selectors."""
    names = dict(ModelVersion.objects.filter(project_id=project_id).values_list("pk", "name"))
    window = (project_id, comparisons_upto)
    groups = [
        stats.VerdictCount(names[a], names[b], _SCORE[winner], n, float(d_sum), float(d_sq))
        for a, b, winner, n, d_sum, d_sq in sql.rows(
            q.REVIEW_VERDICTS.format(bins=LENGTH_BINS_PER_UNIT), window
        )
    ]
    outcomes = _outcome_counts(groups)
    clusters = [
        [names[lo], names[hi], int(half), int(n), int(prompts)]
        for lo, hi, half, n, prompts in sql.rows(q.REVIEW_CLUSTERS, window)
    ]
    entries = (project_id, entries_upto)
    likert = [
        [names[model], int(total), int(n)] for model, total, n in sql.rows(q.REVIEW_LIKERT, entries)
    ]
    elements = q.REVIEW_FLAG_ELEMENTS["postgresql" if sql.postgres() else "sqlite"]
    flags = [
        [names[model], flag, int(n)]
        for model, flag, n in sql.rows(q.REVIEW_FLAGS.format(elements=elements), entries)
    ]
    return {
        "model_ids": {name: pk for pk, name in names.items()},
        "outcomes": [[a, b, winner, n] for (a, b, winner), n in sorted(outcomes.items())],
        "clusters": clusters,
        "ratings": asdict(stats.bradley_terry_draws(groups, n_boot=RATING_BOOTSTRAPS)),
        "ratings_lc": asdict(
            stats.bradley_terry_draws(groups, n_boot=RATING_BOOTSTRAPS, length_controlled=True)
        ),
        "likert": likert,
        "flags": flags,
        # Labelers' agreement, the ceiling the reward models are read against: the database
        # counts it in about a second at 10^6 rankings, too long for the page to wait on.
        "agreement": stats.agreement_from_pair_counts(
            sql.rows_planned(q.AGREEMENT_PLANS, q.AGREEMENT_PAIRS, entries)
        ).overall,
    }


# The database's outcome → side a's score (stats.PairVerdict.score_a), and back for counting.
_SCORE = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}


def _outcome_counts(groups: list[stats.VerdictCount]) -> dict[tuple[str, str, str], int]:
    """Per ordered pair: comparisons a won ("a"), b won ("b") and tied or both bad ("tie"),
    summed over the length bins."""
    counts: dict[tuple[str, str, str], int] = {}
    for g in groups:
        key = (g.model_a, g.model_b, {1.0: "a", 0.0: "b"}.get(g.score_a, "tie"))
        counts[key] = counts.get(key, 0) + g.count
    return counts


def current_data(*, project_id: int) -> dict[str, Any]:
    """The aggregates of every judgement so far, computed now and not stored (scripts, tests,
    and the record-based path's callers that want today's numbers)."""
    return snapshot_data(
        project_id=project_id,
        comparisons_upto=sql.value(q.MAX_COMPARISON_ID),
        entries_upto=sql.value(q.MAX_ENTRY_ID),
    )


def refresh_snapshot(*, project_id: int, now: datetime) -> ReviewSnapshot:
    """Count the project's judgements up to the current watermarks, fit, and store the snapshot
    (`now`: when counting began, what the page calls "computed at")."""
    # (No JIT: connections run with jit=off, settings; it cost ~4 s a statement here.)
    with transaction.atomic():
        comparisons_upto = sql.value(q.MAX_COMPARISON_ID)
        entries_upto = sql.value(q.MAX_ENTRY_ID)
        data = snapshot_data(
            project_id=project_id, comparisons_upto=comparisons_upto, entries_upto=entries_upto
        )
    snapshot, _ = ReviewSnapshot.objects.update_or_create(
        project_id=project_id,
        defaults={
            "computed_at": now,
            "comparisons_upto": comparisons_upto,
            "entries_upto": entries_upto,
            "comparisons": sum(n for *_, n in data["outcomes"]),
            "entries": sum(n for *_, n in data["likert"]),
            "data": data,
        },
    )
    return snapshot


def refresh_request(*, project_id: int, now: datetime) -> ReviewSnapshot:
    """Ask a worker to recompute the project's snapshot, once the current transaction commits.
    Asked again only when no recompute is pending, or the pending one looks lost."""
    snapshot, _ = ReviewSnapshot.objects.get_or_create(project_id=project_id)
    asked = snapshot.requested_at
    pending = snapshot.computing and asked is not None and now - asked < REQUEST_RETRY
    if not pending:
        snapshot.requested_at = now
        snapshot.save(update_fields=["requested_at"])
        transaction.on_commit(lambda: _send(project_id))
    return snapshot


def _send(project_id: int) -> None:
    """Put the refresh on the queue by name (this module is imported by the task module). A
    broker that cannot be reached clears the request, so the next page view asks again."""
    try:
        current_app.send_task(REFRESH_TASK, args=(project_id,))
    except (KombuError, OSError) as exc:  # connection refused, timeouts, a broker gone away
        logger.warning("review snapshot of project %s not sent: %s", project_id, exc)
        ReviewSnapshot.objects.filter(project_id=project_id).update(requested_at=None)


def refresh_stale(*, now: datetime) -> list[int]:
    """Ask for a recompute of every project whose snapshot has judgements after it (the beat
    runs this every INSTRUCTLOOP_REVIEW_REFRESH_SECONDS): a large project's figures are then at
    most that old even when nobody opens its dashboard. Projects nobody ever opened have no
    snapshot and are left alone. Returns the projects asked for."""
    asked = []
    for snapshot in ReviewSnapshot.objects.filter(computed_at__isnull=False).order_by("pk"):
        if any(_new_since(snapshot.project_id, snapshot)):
            refresh_request(project_id=snapshot.project_id, now=now)
            asked.append(snapshot.project_id)
    return asked


@dataclass(frozen=True)
class Freshness:
    """The snapshot a page shows and how old it is."""

    snapshot: ReviewSnapshot | None  # None: nothing computed yet (a large project, computing)
    new_comparisons: int  # counted after its watermark, up to NEW_COUNT_CAP
    new_entries: int
    computing: bool  # a background recompute is pending

    @property
    def data(self) -> dict[str, Any]:
        return self.snapshot.data if self.snapshot is not None else {}

    cap = NEW_COUNT_CAP  # for the page: a count at the cap reads "100000+"


def freshness_of(*, project: Project) -> Freshness:
    """The project's snapshot and what came in after it, computing nothing."""
    snapshot = ReviewSnapshot.objects.filter(project=project).first()
    if snapshot is None or snapshot.computed_at is None:
        new_comparisons, new_entries = _new_since(project.pk, None)
        return Freshness(
            None, new_comparisons, new_entries, snapshot is not None and snapshot.computing
        )
    new_comparisons, new_entries = _new_since(project.pk, snapshot)
    return Freshness(snapshot, new_comparisons, new_entries, snapshot.computing)


def snapshot_for_page(*, project: Project, now: datetime) -> Freshness:
    """The snapshot to show: a current one as it is; a missing or stale one recomputed inline
    for a small project, and otherwise asked of a worker while the page shows what it has."""
    found = freshness_of(project=project)
    if found.snapshot is not None and found.new_comparisons == found.new_entries == 0:
        return found
    # The project's size, not what is new: a few new judgements in a large project still mean
    # counting all of it again.
    counted = found.snapshot.comparisons + found.snapshot.entries if found.snapshot else 0
    if counted + found.new_comparisons + found.new_entries < INLINE_LIMIT:
        return Freshness(refresh_snapshot(project_id=project.pk, now=now), 0, 0, False)
    snapshot = refresh_request(project_id=project.pk, now=now)
    return Freshness(found.snapshot, found.new_comparisons, found.new_entries, snapshot.computing)


def _new_since(project_id: int, snapshot: ReviewSnapshot | None) -> tuple[int, int]:
    """Comparisons and ranked outputs after the snapshot's watermarks (all, without one), each
    counted up to NEW_COUNT_CAP: an index range over the new rows only."""
    comparisons_upto = snapshot.comparisons_upto if snapshot is not None else 0
    entries_upto = snapshot.entries_upto if snapshot is not None else 0
    cap = NEW_COUNT_CAP
    return (
        sql.value(q.NEW_COMPARISONS.format(cap=cap), (comparisons_upto, project_id)),
        sql.value(q.NEW_ENTRIES.format(cap=cap), (entries_upto, project_id)),
    )
