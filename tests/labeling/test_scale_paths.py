"""The fast paths of issue 15 against the plain ones: labeler agreement counted by the database
equals stats.pairwise_agreement over every entry; the claim's plan never reads a labeler's whole
history."""

from __future__ import annotations

import random
from dataclasses import asdict

import pytest
from django.db import connection

from labeling import queue, selectors, services, sql, stats
from labeling.blinding import SLOTS
from labeling.models import Lease, Prompt, RankingEntry, Task
from labeling.sql import statements
from tests.factories import member, ranking_task

pytestmark = pytest.mark.django_db


def _rank_everything(project, labelers, now, rng):
    """Every labeler ranks every task they are served, with random ranks and some ties."""
    for user in labelers:
        while lease := queue.claim_next(user_id=user.pk, project=project, kind="ranking", now=now):
            n = lease.task.task_completions.count()
            ranks = [rng.randint(1, n) for _ in range(n)]
            entries = [
                {"completion": slot, "rank": rank, "likert": rng.randint(1, 7), "flags": []}
                for slot, rank in zip(SLOTS[:n], ranks, strict=True)
            ]
            services.ranking_submit(lease_id=lease.pk, user_id=user.pk, entries=entries, now=now)


def test_agreement_counted_by_the_database_equals_the_plain_computation(project, personas, now):
    rng = random.Random(7)
    project.overlap = 3
    project.save()
    labelers = [personas.alice, personas.bob, member(project, "carol"), member(project, "dan")]
    for _ in range(6):
        ranking_task(project)
    project.overlap = 1  # a task nobody else ranks: never shared
    project.save()
    ranking_task(project)
    _rank_everything(project, labelers, now, rng)

    rows = RankingEntry.objects.filter(ranking__task__project=project).values_list(
        "ranking__task_id", "ranking__labeler_id", "completion_id", "rank"
    )
    plain = asdict(stats.pairwise_agreement(rows))
    fast = selectors.labeler_agreement(project=project)
    assert plain["comparisons"] > 20  # the data set shares enough to compare
    assert fast["comparisons"] == plain["comparisons"]
    assert fast["overall"] == pytest.approx(plain["overall"], abs=1e-12)
    assert fast["pairs"].keys() == plain["pairs"].keys()
    for key, value in plain["pairs"].items():
        assert fast["pairs"][key] == pytest.approx(value, abs=1e-12)
    assert fast["per_labeler"] == pytest.approx(plain["per_labeler"], abs=1e-12)


def test_agreement_of_a_project_with_no_shared_task_is_none(project, personas, now):
    ranking_task(project)
    _rank_everything(project, [personas.alice], now, random.Random(1))
    assert selectors.labeler_agreement(project=project) == {
        "overall": None,
        "comparisons": 0,
        "pairs": {},
        "per_labeler": {},
        "pair_comparisons": {},
    }


@pytest.mark.postgres_only
def test_agreement_joins_the_preferences_by_hash_even_when_statistics_say_the_tables_are_empty(
    project, personas, now
):
    """Statistics that lag the tables (work that came in within minutes; autovacuum off) made
    the planner expect one preference row and compare every preference with every other in a
    nested loop: 156 s for 2,420 rankings with overlap 2 (statements.AGREEMENT_PLANS)."""
    project.overlap = 2
    project.save()
    for _ in range(3):
        ranking_task(project)
    _rank_everything(project, [personas.alice, personas.bob], now, random.Random(3))
    params = [project.pk, statements.ALL_IDS]
    with connection.cursor() as cursor:
        for table in ("labeling_task", "labeling_ranking", "labeling_rankingentry"):
            cursor.execute(
                "UPDATE pg_class SET reltuples = 1, relpages = 1 WHERE oid = %s::regclass", [table]
            )
        cursor.execute(statements.AGREEMENT_PLANS)
        cursor.execute("EXPLAIN (FORMAT JSON) " + statements.AGREEMENT_PAIRS, params)
        nodes = [node for node, _ in _nodes(cursor.fetchone()[0])]
        cursor.execute("RESET enable_nestloop")
    [final] = [n for n in nodes if n.get("Node Type") == "Hash Join" and _joins_p(n)]
    assert not [n for n in nodes if n["Node Type"] == "Nested Loop" and _joins_p(n)]
    assert final["Hash Cond"]
    counted = sql.rows_planned(statements.AGREEMENT_PLANS, statements.AGREEMENT_PAIRS, params)
    assert [(a, b) for a, b, _, _ in counted] == [(personas.alice.pk, personas.bob.pk)]


def _joins_p(node) -> bool:
    """A join whose two inputs are scans of the CTE p (the pair preferences, x and y)."""
    inputs = node.get("Plans", [])
    scans = [c for c in inputs if c.get("CTE Name") == "p"]
    scans += [g for c in inputs for g in c.get("Plans", []) if g.get("CTE Name") == "p"]
    return len(scans) == 2


def _leases(tasks, user, now):
    Lease.objects.bulk_create(
        Lease(
            task=task,
            user=user,
            status="submitted",
            created_at=now,
            expires_at=now,
            heartbeat_at=now,
            submitted_at=now,
        )  # fmt: skip
        for task in tasks
    )


@pytest.mark.postgres_only
def test_the_claim_probes_the_labelers_lease_per_task_and_never_scans_their_history(
    project, personas, now
):
    """Whatever the planner thinks of the table sizes, the user's leases are looked up per
    candidate task through the (task, user) index: no sequential, bitmap or hash read of
    labeling_lease, which is what made a claim cost a labeler's whole history (issue 15)."""
    prompts = Prompt.objects.bulk_create(
        Prompt(
            project=project,
            messages=[{"role": "user", "content": f"p{i}"}],
            text=f"p{i}",
            content_hash=f"h{i}",
        )  # fmt: skip
        for i in range(2000)
    )
    tasks = Task.objects.bulk_create(
        Task(project=project, kind=Task.Kind.RANKING, prompt=p, overlap=3) for p in prompts
    )
    query = statements.CANDIDATE.format(
        tried="", holding=statements.HOLDING, lock=" FOR UPDATE OF t SKIP LOCKED"
    )
    user = personas.alice.pk
    params = [user, project.pk, Task.Kind.RANKING, user, user, now]
    _leases(tasks[:3], personas.bob, now)
    with connection.cursor() as cursor:
        # The plan a claim really runs, made as the claim makes it (statements.CLAIM_PLANS) and,
        # as in a new install, while labeling_lease holds a few rows (its statistics say so:
        # set here, in this test's transaction, as an ANALYZE would): a connection keeps it.
        cursor.execute(
            "UPDATE pg_class SET reltuples = 3, relpages = 1 WHERE oid = 'labeling_lease'::regclass"
        )
        cursor.execute(statements.CLAIM_PLANS)
        execute = sql._prepared(cursor, "il_test_candidate", query, len(params))
        cursor.execute(execute, params)
        cursor.execute("RESET plan_cache_mode; RESET enable_seqscan")
    _leases(tasks[3:], personas.bob, now)
    # Her history grows after the plan was made (statistics lag it, and nothing re-plans).
    _leases(tasks[:300], personas.alice, now)
    plans = {}
    with connection.cursor() as cursor:
        cursor.execute(statements.CLAIM_PLANS)  # as every claim runs it: the kept plan
        cursor.execute("EXPLAIN (FORMAT JSON) " + execute, params)
        plans["claim"] = list(_nodes(cursor.fetchone()[0]))
        cursor.execute("RESET plan_cache_mode; RESET enable_seqscan")
        cursor.execute("DEALLOCATE il_test_candidate")
        for seqscan in ("on", "off"):
            cursor.execute(f"SET LOCAL enable_seqscan = {seqscan}")
            cursor.execute(f"SET LOCAL enable_bitmapscan = {seqscan}")
            cursor.execute("EXPLAIN (FORMAT JSON) " + query, params)
            plans[seqscan] = list(_nodes(cursor.fetchone()[0]))
    for nodes in plans.values():
        lease_reads = [(node, in_subplan) for node, in_subplan in nodes if _on_lease(node)]
        assert len(lease_reads) == 3, "mine, the user's finished lease, the held slots"
        assert all(in_subplan for _, in_subplan in lease_reads), "each runs per candidate task"
        for node, _ in lease_reads:  # an index read is keyed on the task, never the user alone
            # (a bitmap read, which statistics left by earlier tests can make the planner pick
            # with sequential scans on, names its key in Recheck Cond)
            key = node.get("Index Cond") or node.get("Recheck Cond", "")
            assert node["Node Type"] == "Seq Scan" or "task_id = t.id" in key, node
        assert not [node for node, _ in nodes if "Hash" in node["Node Type"]]
        assert not [node for node, _ in nodes if "hashed" in node.get("Subplan Name", "")]
    # The claim's plan, and any plan where the table is big enough to use them: each of those
    # reads is one index lookup.
    for name in ("claim", "off"):
        for node, _ in plans[name]:
            if _on_lease(node):
                assert node["Node Type"] in ("Index Scan", "Index Only Scan"), (name, node)
                assert "task_id = t.id" in node["Index Cond"], node
    claimed = queue.claim(
        user_id=user, project_id=project.pk, kind="ranking", lease_seconds=600, now=now
    )
    assert claimed is not None
    assert Lease.objects.get(pk=claimed.lease_id).task_id == tasks[300].pk  # first not hers


def _nodes(plan):
    """(node, whether it runs inside a SubPlan) for every node of an EXPLAIN (FORMAT JSON)."""
    stack = [(plan[0]["Plan"], False)]
    while stack:
        node, in_subplan = stack.pop()
        yield node, in_subplan
        for child in node.get("Plans", []):
            stack.append((child, in_subplan or child.get("Parent Relationship") == "SubPlan"))


def _on_lease(node) -> bool:
    return node.get("Relation Name") == "labeling_lease"
