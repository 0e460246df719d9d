"""The reviewer dashboard from its snapshot of aggregates (training/review.py): the SQL counts
pinned to the record-based path on a small project, freshness, inline refresh of a small
project, background refresh of a large one, and the Recompute button."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from labeling import stats
from labeling.models import (
    Comparison,
    Lease,
    Ranking,
    RankingEntry,
    Split,
    Task,
    TaskCompletion,
)
from tests.factories import (
    CompletionFactory,
    ModelVersionFactory,
    PromptFactory,
    api_client,
    member,
)
from tests.worker import wait_until
from training import review, selectors
from training.models import ReviewSnapshot

pytestmark = pytest.mark.django_db

WINNERS = ["a", "b", "tie", "both_bad"]


def judge(project, labelers, *, a, b, winner, now, prompt=None, len_a=10, len_b=10):
    """One submitted blind comparison of a completion of `a` (side a) against one of `b`."""
    prompt = prompt or PromptFactory(project=project, split=Split.TEST)
    left = CompletionFactory(prompt=prompt, model_version=a, text="x" * len_a)
    right = CompletionFactory(prompt=prompt, model_version=b, text="y" * len_b)
    task = Task.objects.create(
        project=project, kind=Task.Kind.COMPARISON, prompt=prompt, overlap=len(labelers)
    )
    for position, completion in enumerate((left, right)):
        TaskCompletion.objects.create(task=task, completion=completion, position=position)
    for labeler in labelers:
        lease = Lease.objects.create(
            task=task,
            user=labeler,
            status=Lease.Status.SUBMITTED,
            shown_order=[left.pk, right.pk],
            created_at=now,
            expires_at=now + timedelta(minutes=15),
            heartbeat_at=now,
            submitted_at=now,
        )
        Comparison.objects.create(
            task=task,
            labeler=labeler,
            lease=lease,
            a_completion=left,
            b_completion=right,
            winner=winner if isinstance(winner, str) else winner(),
            created_at=now,
        )
    return prompt


def rank(project, labeler, completions, *, now, likert, flags):
    """One submitted ranking of `completions` (in that order) with a Likert score and flags each."""
    task = Task.objects.create(
        project=project, kind=Task.Kind.RANKING, prompt=completions[0].prompt, overlap=1
    )
    lease = Lease.objects.create(
        task=task,
        user=labeler,
        status=Lease.Status.SUBMITTED,
        created_at=now,
        expires_at=now + timedelta(minutes=15),
        heartbeat_at=now,
        submitted_at=now,
    )
    ranking = Ranking.objects.create(
        task=task, labeler=labeler, lease=lease, shown_order=[], created_at=now
    )
    for i, completion in enumerate(completions):
        TaskCompletion.objects.create(task=task, completion=completion, position=i)
        RankingEntry.objects.create(
            ranking=ranking, completion=completion, rank=i + 1, likert=likert[i], flags=flags[i]
        )


@pytest.fixture
def mixed(project, personas, now):
    """Three models judged in every pairing and side, prompts with 1–3 judgements, answers of
    varied lengths, a model against itself once; rankings with Likert scores and flags (one
    repeated within an output)."""
    rng = random.Random(5)
    sft = ModelVersionFactory(project=project, name="sft-1", kind="sft")
    ppo = ModelVersionFactory(project=project, name="ppo-1", kind="policy")
    dpo = ModelVersionFactory(project=project, name="dpo-1", kind="policy")
    labelers = [personas.alice, personas.bob, member(project, "carol_labeler")]
    for i in range(60):
        a, b = rng.sample([sft, ppo, dpo], 2)
        judge(
            project,
            labelers[: 1 + i % 3],
            a=a,
            b=b,
            winner=lambda: rng.choice(WINNERS),
            now=now,
            len_a=rng.randint(0, 80),
            len_b=rng.randint(0, 80),
        )
    judge(project, [personas.alice], a=sft, b=sft, winner="tie", now=now)
    for model in (sft, ppo, dpo):
        prompt = PromptFactory(project=project)
        outputs = [CompletionFactory(prompt=prompt, model_version=model) for _ in range(3)]
        rank(
            project,
            personas.alice,
            outputs,
            now=now,
            likert=[rng.randint(1, 7) for _ in outputs],
            flags=[["hallucination", "hallucination"], ["harmful_advice"], []],
        )
    return sft, ppo, dpo


def test_the_sql_aggregates_give_the_record_based_figures(project, mixed):
    data = review.current_data(project_id=project.pk)
    records = selectors.comparison_records(project=project)
    models = ["dpo-1", "ppo-1", "sft-1"]
    for model in models:
        for baseline in models:
            if model == baseline:
                continue
            plain = stats.win_rate(records, model=model, baseline=baseline, n_boot=10)
            counted = selectors.win_rate_of(data, model=model, baseline=baseline)
            assert (counted.n, counted.wins, counted.losses, counted.ties) == (
                plain.n,
                plain.wins,
                plain.losses,
                plain.ties,
            )
            assert counted.rate == pytest.approx(plain.rate, rel=1e-12)
            clusters = [
                tuple(c) if lo == model else (2 * c[1] - c[0], c[1], c[2])
                for lo, hi, *c in data["clusters"]
                if {lo, hi} == {model, baseline}
            ]
            assert sorted(clusters) == stats.win_rate_clusters(
                records, model=model, baseline=baseline
            )
    plain = {r.model: r for r in stats.bradley_terry(records, anchor="sft-1", n_boot=0)}
    counted = {r.model: r for r in selectors._ratings(data["ratings"], anchor="sft-1")}
    assert counted.keys() == plain.keys()
    for model, rating in plain.items():
        assert counted[model].rating == pytest.approx(rating.rating, rel=1e-9)
        assert counted[model].n == rating.n
    plain_lc = stats.bradley_terry(records, anchor="sft-1", n_boot=0, length_controlled=True)
    counted_lc = {r.model: r for r in selectors._ratings(data["ratings_lc"], anchor="sft-1")}
    for rating in plain_lc:
        assert counted_lc[rating.model].rating == pytest.approx(rating.rating, abs=0.5)
    rows = selectors.rating_rows(project=project)
    dashboard = selectors.evaluation_dashboard(project=project, data=data)
    assert dashboard.metadata == stats.metadata_rates(rows, flags=project.flags)
    assert dashboard.likert == stats.mean_likert(rows)
    assert dashboard.comparisons == len(records)
    assert dashboard.baseline == "sft-1"  # the oldest compared model


def test_the_page_says_how_fresh_its_figures_are_and_recomputes_a_small_project_inline(
    project, personas, mixed, now
):
    reviewer = Client()
    reviewer.force_login(personas.reviewer)
    html = reviewer.get(f"/p/{project.slug}/review/dashboard/").content.decode()
    assert "from 121 blind comparisons and 9 ranked outputs; nothing new since." in html
    snapshot = ReviewSnapshot.objects.get(project=project)
    first = snapshot.computed_at

    sft, ppo, _ = mixed
    judge(project, [personas.alice], a=ppo, b=sft, winner="a", now=now)
    assert review.freshness_of(project=project).new_comparisons == 1
    html = reviewer.get(f"/p/{project.slug}/review/dashboard/").content.decode()
    assert "from 122 blind comparisons" in html
    snapshot.refresh_from_db()
    assert snapshot.computed_at > first and snapshot.comparisons == 122


def test_a_large_project_is_sent_to_a_worker_and_the_page_shows_the_old_figures(
    project, personas, mixed, now, monkeypatch, django_capture_on_commit_callbacks
):
    review.refresh_snapshot(project_id=project.pk, now=now - timedelta(hours=2))
    sft, ppo, _ = mixed
    judge(project, [personas.alice], a=ppo, b=sft, winner="a", now=now)
    # 121 comparisons and 9 ranked outputs counted, 1 new: large, though little is new.
    monkeypatch.setattr(review, "INLINE_LIMIT", 100)
    reviewer = Client()
    reviewer.force_login(personas.reviewer)
    # The sends are captured, not run: the worker test below sends through the broker.
    with django_capture_on_commit_callbacks() as sends:
        html = reviewer.get(f"/p/{project.slug}/review/dashboard/").content.decode()
        again = reviewer.get(f"/p/{project.slug}/review/dashboard/").content.decode()
    assert len(sends) == 1  # asked once, not on every view
    for page in (html, again):
        assert "from 121 blind comparisons" in page and "since then 1 new comparison" in page
        assert "Being computed" in page and 'hx-trigger="every 3s"' in page
        assert "ppo-1" in page  # the old figures are shown meanwhile
    poll = reviewer.get(f"/p/{project.slug}/review/dashboard/", headers={"HX-Request": "true"})
    assert "HX-Refresh" not in poll and "Being computed" in poll.content.decode()

    review.refresh_snapshot(project_id=project.pk, now=now + timedelta(seconds=1))
    poll = reviewer.get(f"/p/{project.slug}/review/dashboard/", headers={"HX-Request": "true"})
    assert poll["HX-Refresh"] == "true"  # the new figures are in: reload
    html = reviewer.get(f"/p/{project.slug}/review/dashboard/").content.decode()
    assert "from 122 blind comparisons" in html and "Being computed" not in html


def test_a_project_with_no_snapshot_and_too_much_to_count_inline_says_it_is_being_computed(
    project, personas, mixed, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(review, "INLINE_LIMIT", 1)
    reviewer = Client()
    reviewer.force_login(personas.reviewer)
    with django_capture_on_commit_callbacks() as sends:
        html = reviewer.get(f"/p/{project.slug}/review/dashboard/").content.decode()
    assert len(sends) == 1
    assert "No figures computed yet." in html and "Being computed" in html
    assert "No blind comparisons" in html


def test_recompute_needs_a_reviewer_of_the_project_a_post_and_a_csrf_token(
    project, personas, mixed
):
    url = f"/p/{project.slug}/review/dashboard/recompute/"
    labeler = Client()
    labeler.force_login(personas.alice)
    assert labeler.post(url).status_code == 403
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(personas.reviewer)
    assert strict.post(url).status_code == 403
    outsider = Client()
    outsider.force_login(personas.outsider)
    assert outsider.post(url).status_code == 404
    reviewer = Client()
    reviewer.force_login(personas.reviewer)
    assert reviewer.get(url).status_code == reviewer.put(url).status_code == 405
    assert not ReviewSnapshot.objects.filter(project=project, requested_at__isnull=False).exists()


def test_a_win_rate_from_the_aggregates_has_the_plain_interval(project, mixed):
    data = review.current_data(project_id=project.pk)
    records = selectors.comparison_records(project=project)
    plain = stats.win_rate(records, model="ppo-1", baseline="sft-1", n_boot=500)
    counted = selectors.win_rate_of(data, model="ppo-1", baseline="sft-1")
    assert counted.rate == pytest.approx(plain.rate, rel=1e-12)
    assert counted.low == pytest.approx(plain.low, abs=0.1)  # same bootstrap, other draws


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_recompute_enqueues_a_refresh_that_a_worker_runs(celery_worker, now):
    from tests.factories import ProjectFactory

    project = ProjectFactory(k=4, overlap=1)
    reviewer_user = member(project, "rita_reviewer", "reviewer")
    alice = member(project, "alice_labeler")
    sft = ModelVersionFactory(project=project, name="sft-1", kind="sft")
    ppo = ModelVersionFactory(project=project, name="ppo-1", kind="policy")
    judge(project, [alice], a=ppo, b=sft, winner="a", now=now)
    reviewer = Client()
    reviewer.force_login(reviewer_user)
    reviewer.get(f"/p/{project.slug}/review/dashboard/")  # small: computed inline
    computed = ReviewSnapshot.objects.get(project=project).computed_at

    response = reviewer.post(
        f"/p/{project.slug}/review/dashboard/recompute/", headers={"HX-Request": "true"}
    )
    fragment = response.content.decode()
    assert response.status_code == 200 and fragment.lstrip().startswith('<section class="card"')
    assert "Being computed" in fragment and 'hx-trigger="every 3s"' in fragment
    wait_until(lambda: ReviewSnapshot.objects.get(project=project).computed_at > computed)
    assert "training.tasks.refresh_review_snapshot" in celery_worker.log()
    poll = reviewer.get(f"/p/{project.slug}/review/dashboard/", headers={"HX-Request": "true"})
    assert poll["HX-Refresh"] == "true"
    assert ReviewSnapshot.objects.get(project=project).comparisons == 1


def test_a_current_snapshot_is_shown_without_counting_again(project, personas, mixed, now):
    review.refresh_snapshot(project_id=project.pk, now=now)
    reviewer = Client()
    reviewer.force_login(personas.reviewer)
    with CaptureQueriesContext(connection) as queries:
        page = reviewer.get(f"/p/{project.slug}/review/dashboard/")
    assert page.status_code == 200 and "nothing new since" in page.content.decode()
    statements = " ".join(q["sql"] for q in queries.captured_queries)
    assert "GROUP BY v.model_a" not in statements and "s.half" not in statements
    assert "JOIN p y" not in statements  # labelers' agreement comes from the snapshot too
    assert "Labelers' pairwise agreement is the ceiling" in page.content.decode()
    # 9 today: session, user, membership, the snapshot, two "new since" counts, reward models
    # and rounds; none of them groups judgements.
    assert len(queries.captured_queries) <= 15


def test_the_snapshot_keeps_the_labelers_agreement_up_to_its_watermark(project, personas, now):
    from labeling import selectors as labeling_selectors
    from tests.factories import member, ranking_task

    project.overlap = 3
    project.save()
    task = ranking_task(project)
    completions = list(task.completions.order_by("pk"))

    def rank(labeler, ranks):
        lease = Lease.objects.create(task=task, user=labeler, status="submitted", created_at=now,
                                     expires_at=now, heartbeat_at=now, submitted_at=now)  # fmt: skip
        ranking = Ranking.objects.create(task=task, labeler=labeler, lease=lease, shown_order=[],
                                         created_at=now)  # fmt: skip
        RankingEntry.objects.bulk_create(
            RankingEntry(ranking=ranking, completion=c, rank=r, likert=4)
            for c, r in zip(completions, ranks, strict=True)
        )

    rank(personas.alice, (1, 2, 3, 4))
    rank(personas.bob, (2, 1, 3, 4))
    snapshot = review.refresh_snapshot(project_id=project.pk, now=now)
    # 6 completion pairs ordered by both; they disagree on one: 5/6.
    assert snapshot.data["agreement"] == pytest.approx(5 / 6)
    rank(member(project, "carol"), (4, 3, 2, 1))  # after the snapshot: disagrees with both
    assert labeling_selectors.labeler_agreement(project=project)["overall"] == pytest.approx(
        (5 + 0 + 1) / 18
    )
    kept = review.snapshot_data(
        project_id=project.pk,
        comparisons_upto=snapshot.comparisons_upto,
        entries_upto=snapshot.entries_upto,
    )
    assert kept["agreement"] == pytest.approx(5 / 6)


def test_the_beat_asks_for_a_recount_only_where_judgements_came_in_after_the_snapshot(
    project, personas, mixed, now, django_capture_on_commit_callbacks
):
    review.refresh_snapshot(project_id=project.pk, now=now - timedelta(hours=1))
    with django_capture_on_commit_callbacks() as sends:
        assert review.refresh_stale(now=now) == []  # nothing new: nothing asked
    assert sends == []
    sft, ppo, _ = mixed
    judge(project, [personas.alice], a=ppo, b=sft, winner="b", now=now)
    with django_capture_on_commit_callbacks() as sends:
        assert review.refresh_stale(now=now) == [project.pk]
        assert review.refresh_stale(now=now) == [project.pk]  # still stale, but asked once
    assert len(sends) == 1
    assert ReviewSnapshot.objects.get(project=project).requested_at == now


def test_the_api_answers_the_dashboards_figures_with_their_intervals_and_freshness(
    project, personas, mixed
):
    sft, ppo, dpo = mixed
    url = f"/api/v1/projects/{project.pk}/evaluation/"
    body = api_client(personas.reviewer).get(url).json()
    assert body["computed_at"] is not None and body["computing"] is False
    assert body["baseline"] == "sft-1" and body["new_comparisons"] == 0
    plain = selectors.comparison_records(project=project)
    for row in body["win_rates"]:
        expected = stats.win_rate(plain, model=row["model"], baseline="sft-1", n_boot=500)
        assert (row["n"], row["wins"], row["ties"]) == (expected.n, expected.wins, expected.ties)
        assert row["rate"] == pytest.approx(expected.rate)
        assert row["low"] <= row["rate"] <= row["high"]
    assert {r["model"] for r in body["ratings"]} == {"sft-1", "ppo-1", "dpo-1"}
    assert [r["rating"] for r in body["ratings"] if r["model"] == "sft-1"] == [1000.0]
    assert set(body["flag_rates"]) == {"sft-1", "ppo-1", "dpo-1"}
    assert body["likert"]["ppo-1"]["n"] == 3 and body["pairs_needed"] == 194

    other = api_client(personas.reviewer).get(url, {"baseline": "ppo-1"}).json()
    assert other["baseline"] == "ppo-1"
    assert {w["baseline"] for w in other["win_rates"]} == {"ppo-1"}


def test_the_api_refuses_a_baseline_nobody_compared_and_people_outside_the_reviewers(
    project, personas, mixed
):
    url = f"/api/v1/projects/{project.pk}/evaluation/"
    bad = api_client(personas.reviewer).get(url, {"baseline": "gpt-9"})
    assert bad.status_code == 400
    assert "gpt-9" in bad.content.decode() and "dpo-1, ppo-1, sft-1" in bad.content.decode()
    assert api_client(personas.alice).get(url).status_code == 403
    assert api_client(personas.outsider).get(url).status_code == 404


def test_a_script_asks_for_a_recount_over_the_api_and_reads_that_it_is_computing(
    project, personas, mixed, now, django_capture_on_commit_callbacks
):
    from tests.factories import api_client

    review.refresh_snapshot(project_id=project.pk, now=now)
    url = f"/api/v1/projects/{project.pk}/evaluation/refresh/"
    assert api_client(personas.alice).post(url).status_code == 403
    with django_capture_on_commit_callbacks() as sent:
        answer = api_client(personas.reviewer).post(url)
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert body["computing"] is True and body["computed_at"] is not None
    assert len(sent) == 1  # the refresh goes to the queue once the request commits
    with django_capture_on_commit_callbacks() as sent_again:
        assert api_client(personas.reviewer).post(url).json()["computing"] is True
    assert sent_again == []  # one pending recount is not asked for twice
