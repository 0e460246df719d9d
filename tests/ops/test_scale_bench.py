"""bench/scale.py's builder writes a data set that holds every rule of the schema: it loads with the
foreign keys' triggers off, so the keys, the queue's bookkeeping (done, overlap, one lease per
submit) and the ids it derives arithmetically are checked here, on a tiny size."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import psycopg2
import pytest

pytestmark = pytest.mark.postgres_only

REPO_ROOT = Path(__file__).resolve().parents[2]
URL = os.environ.get("DATABASE_URL", "")
N, OPEN = 200, 200  # --size 200: the open pool is max(N / 100, 200) per kind
NAME = f"test_scale_{urlparse(URL).path.lstrip('/') or 'bench'}"[:63]


@pytest.fixture(scope="module")
def built():
    if not URL.startswith("postgres"):
        pytest.skip("the builder writes PostgreSQL")
    server = urlparse(URL)._replace(path="/").geturl()
    done = subprocess.run(
        [sys.executable, "bench/scale.py", "build", "--size", str(N), "--database", NAME],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "BENCH_PG_URL": server},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    conn = psycopg2.connect(urlparse(URL)._replace(path=f"/{NAME}").geturl())
    conn.autocommit = True
    yield conn.cursor(), done.stdout
    conn.close()
    admin = psycopg2.connect(urlparse(URL)._replace(path="/postgres").geturl())
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')
    admin.close()


def _value(cur, query: str):
    cur.execute(query)
    return cur.fetchone()[0]


def test_it_prints_each_step_and_the_build_time(built):
    _, out = built
    assert "ranking entries" in out and f"# built {NAME} in " in out


def test_every_table_holds_the_rows_of_its_size(built):
    cur, _ = built
    m, shared = N + OPEN, N // 50  # every 50th ranking task has overlap 3: two more rankings
    expected = {
        "auth_user": 67, "labeling_membership": 67, "labeling_modelversion": 4,
        "labeling_prompt": m, "labeling_completion": 4 * m, "labeling_task": 3 * m,
        "labeling_taskcompletion": 6 * m, "labeling_lease": 3 * N + 2 * shared,
        "labeling_ranking": N + 2 * shared, "labeling_rankingentry": 4 * (N + 2 * shared),
        "labeling_comparison": N, "labeling_demonstration": N,
    }  # fmt: skip
    counts = {table: _value(cur, f"SELECT count(*) FROM {table}") for table in expected}  # noqa: S608
    assert counts == expected


def test_every_foreign_key_points_at_a_row(built):
    cur, _ = built
    cur.execute(
        "SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text, fa.attname"
        " FROM pg_constraint c"
        " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
        " JOIN pg_attribute fa ON fa.attrelid = c.confrelid AND fa.attnum = c.confkey[1]"
        " WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace"
    )
    keys = cur.fetchall()
    assert len(keys) > 20
    orphans = {
        f"{table}.{column}": _value(
            cur,
            f"SELECT count(*) FROM {table} x WHERE x.{column} IS NOT NULL AND NOT EXISTS"  # noqa: S608
            f" (SELECT 1 FROM {target} y WHERE y.{target_column} = x.{column})",
        )
        for table, column, target, target_column in keys
    }
    assert {key: n for key, n in orphans.items() if n} == {}


def test_every_constraint_and_index_is_back_and_valid(built):
    cur, _ = built
    assert _value(cur, "SELECT count(*) FROM pg_constraint WHERE NOT convalidated") == 0
    assert _value(cur, "SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0
    cur.execute("SELECT conname FROM pg_constraint UNION SELECT indexname FROM pg_indexes")
    names = {row[0] for row in cur.fetchall()}
    assert names >= {
        "lease_once_per_task_and_user", "ranking_once_per_labeler", "comparison_once_per_labeler",
        "demonstration_once_per_labeler", "task_one_demonstration_task_per_prompt",
        "task_open_queue", "entry_unique_completion", "task_position_unique", "prompt_unique_text",
    }  # fmt: skip


def test_a_task_is_done_exactly_when_its_overlap_is_submitted(built):
    cur, _ = built
    cur.execute(
        "SELECT t.kind, t.done, t.overlap, count(l.id), count(l.id) FILTER"
        " (WHERE l.status = 'submitted') FROM labeling_task t"
        " LEFT JOIN labeling_lease l ON l.task_id = t.id GROUP BY t.id"
    )
    rows = cur.fetchall()
    assert all(done == (submitted >= overlap) and submitted == leases for _, done, overlap, leases,
               submitted in rows)  # fmt: skip
    assert all(submitted <= overlap for *_, overlap, _, submitted in rows)
    open_tasks = [(kind, leases) for kind, done, _, leases, _ in rows if not done]
    assert sorted({kind for kind, _ in open_tasks}) == ["comparison", "demonstration", "ranking"]
    assert len(open_tasks) == 3 * OPEN and all(leases == 0 for _, leases in open_tasks)
    assert sum(1 for kind, _, overlap, *_ in rows if kind == "ranking" and overlap == 3) == N // 50


def test_every_submission_has_its_own_submitted_lease_on_its_task(built):
    cur, _ = built
    for table, owner in [("labeling_ranking", "labeler_id"), ("labeling_comparison", "labeler_id"),
                         ("labeling_demonstration", "labeler_id")]:  # fmt: skip
        bad = _value(
            cur,
            f"SELECT count(*) FROM {table} x JOIN labeling_lease l ON l.id = x.lease_id"  # noqa: S608
            f" WHERE l.task_id <> x.task_id OR l.user_id <> x.{owner} OR l.status <> 'submitted'"
            " OR l.submitted_at IS NULL OR x.created_at < l.created_at",
        )
        assert bad == 0, table
    assert _value(
        cur,
        "SELECT count(*) FROM labeling_lease l WHERE NOT EXISTS (SELECT 1 FROM labeling_ranking"
        " r WHERE r.lease_id = l.id UNION ALL SELECT 1 FROM labeling_comparison c WHERE"
        " c.lease_id = l.id UNION ALL SELECT 1 FROM labeling_demonstration d WHERE d.lease_id = l.id)",
    ) == 0  # fmt: skip
    for table, kind in [("labeling_ranking", "ranking"), ("labeling_comparison", "comparison"),
                        ("labeling_demonstration", "demonstration")]:  # fmt: skip
        wrong = f"SELECT count(*) FROM {table} x JOIN labeling_task t ON t.id = x.task_id"  # noqa: S608
        assert _value(cur, f"{wrong} WHERE t.kind <> '{kind}'") == 0, table


def test_rankings_rank_their_tasks_outputs_as_shown(built):
    cur, _ = built
    assert _value(
        cur,
        "SELECT count(*) FROM labeling_ranking r JOIN labeling_lease l ON l.id = r.lease_id"
        " WHERE r.shown_order <> l.shown_order OR jsonb_array_length(r.shown_order) <> 4"
        " OR (SELECT array_agg(e.completion_id ORDER BY e.completion_id) FROM"
        " labeling_rankingentry e WHERE e.ranking_id = r.id) IS DISTINCT FROM (SELECT"
        " array_agg(tc.completion_id ORDER BY tc.completion_id) FROM labeling_taskcompletion tc"
        " WHERE tc.task_id = r.task_id)",
    ) == 0  # fmt: skip
    cur.execute("SELECT min(rank), max(rank), min(likert), max(likert) FROM labeling_rankingentry")
    assert cur.fetchone() == (1, 4, 2, 7)
    ties = "SELECT count(*) FROM (SELECT 1 FROM labeling_rankingentry GROUP BY ranking_id, rank"
    assert _value(cur, ties + " HAVING count(*) > 1) x") > 0
    assert _value(cur, "SELECT count(*) FROM labeling_rankingentry WHERE flags <> '[]'") > 0


def test_comparisons_judge_two_models_outputs_as_shown(built):
    cur, _ = built
    assert _value(
        cur,
        "SELECT count(*) FROM labeling_comparison c JOIN labeling_lease l ON l.id = c.lease_id"
        " JOIN labeling_completion a ON a.id = c.a_completion_id"
        " JOIN labeling_completion b ON b.id = c.b_completion_id"
        " JOIN labeling_task t ON t.id = c.task_id"
        " WHERE a.model_version_id = b.model_version_id OR a.prompt_id <> t.prompt_id"
        " OR b.prompt_id <> t.prompt_id"
        " OR l.shown_order <> jsonb_build_array(c.a_completion_id, c.b_completion_id)"
        " OR NOT EXISTS (SELECT 1 FROM labeling_taskcompletion x WHERE x.task_id = t.id"
        "                AND x.completion_id = a.id)",
    ) == 0  # fmt: skip
    cur.execute(
        "SELECT DISTINCT least(a.model_version_id, b.model_version_id),"
        " greatest(a.model_version_id, b.model_version_id) FROM labeling_comparison c"
        " JOIN labeling_completion a ON a.id = c.a_completion_id"
        " JOIN labeling_completion b ON b.id = c.b_completion_id ORDER BY 1, 2"
    )
    assert cur.fetchall() == [(2, 3), (2, 4), (3, 4)]
    cur.execute("SELECT DISTINCT winner FROM labeling_comparison ORDER BY 1")
    assert [w for (w,) in cur.fetchall()] == ["a", "b", "both_bad", "tie"]


def test_the_work_is_spread_over_the_64_labelers_and_the_fresh_one_has_none(built):
    cur, _ = built
    cur.execute(
        "SELECT u.username, count(l.id) FROM auth_user u JOIN labeling_membership m"
        " ON m.user_id = u.id AND m.role = 'labeler' LEFT JOIN labeling_lease l"
        " ON l.user_id = u.id GROUP BY u.username"
    )
    leases = dict(cur.fetchall())
    assert leases.pop("scale-fresh") == 0
    assert len(leases) == 64 and min(leases.values()) >= 5
    cur.execute("SELECT role, count(*) FROM labeling_membership GROUP BY role ORDER BY role")
    assert cur.fetchall() == [("admin", 1), ("labeler", 65), ("reviewer", 1)]


def test_new_rows_get_ids_after_the_built_ones(built):
    cur, _ = built
    for table in ("labeling_lease", "labeling_ranking", "labeling_task", "auth_user"):
        max_id = _value(cur, f"SELECT max(id) FROM {table}")  # noqa: S608
        nextval = _value(cur, f"SELECT nextval(pg_get_serial_sequence('{table}', 'id'))")
        assert nextval > max_id, table
