"""Labeling at InstructGPT's scale (issue 15): build the data set, then time every page on it.

`build` makes a PostgreSQL database il_scale_<size> with one project (K = 4) holding <size>
submitted rankings, blind comparisons and demonstrations by 64 labelers, plus open tasks, in bulk
SQL. `measure` runs each figure of a checkout (--code DIR) in a fresh subprocess against it and
prints wall time, the process's peak RSS, and the PostgreSQL backends' CPU time and peak VmHWM:
a. the claim's statements (auto_explain, as EXPLAIN (ANALYZE, BUFFERS)), fresh and deep labeler;
b. claim end to end p50/p95, 1 and 16 labelers; c. the reviewer dashboard; d. progress (API and
admin page); e. agreement (API) and the review page; f. rankings and preference exports; g. the
whole rankings export as Parquet (not in the default set: --only g).

    python bench/scale.py build --size 1e5
    taskset -c 0 python bench/scale.py measure --size 1e5 --code ../wt-old --only a,b

Server: BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/); the database is dropped and
re-created by `build`. Results live in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import reset_database  # noqa: E402

SERVER = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/")
LABELERS = 64
# Users by id: the admin, the reviewer, the 64 labelers, then a labeler with no history.
ADMIN, REVIEWER, FIRST_LABELER = 1, 2, 3
FRESH = FIRST_LABELER + LABELERS
PROJECT = 1
# Model versions by id, in lineage order; a ranking task shows one completion of each.
MODELS = [(1, "base", "base", None), (2, "sft", "sft", 1), (3, "ppo-1", "policy", 2),
          (4, "ppo-2", "policy", 3)]  # fmt: skip
BIG_TABLES = [
    "labeling_prompt", "labeling_completion", "labeling_task", "labeling_taskcompletion",
    "labeling_lease", "labeling_ranking", "labeling_rankingentry", "labeling_comparison",
    "labeling_demonstration",
]  # fmt: skip


def size_of(text: str) -> int:
    return int(float(text))


def label_of(text: str) -> str:
    """1e5 stays "1e5" (the database name); a plain count stays itself."""
    return text if "e" in text else str(int(text))


def db_url(name: str) -> str:
    return urlparse(SERVER)._replace(path=f"/{name}").geturl()


# --- build ------------------------------------------------------------------------------------

# The data set, one INSERT ... SELECT per table. Ids are arithmetic so that every row can name the
# rows it points to without a join: prompt i (1..M, M = N + P open ones) has completions
# 4(i-1)+1..4(i-1)+4 (one per model version), a ranking task i, a comparison task M+i and a
# demonstration task 2M+i. Of the first N prompts every task is done: ranking task i by lease i
# and ranking i (every 50th task has overlap 3: two more leases and rankings, ids after 3N and N),
# comparison task M+i by lease N+i and comparison i, demonstration task 2M+i by lease 2N+i and
# demonstration i. `{t0}` is the start of the 90 days the data spans.
# fmt: off
STEPS = [
    ("users", """
INSERT INTO auth_user (id, password, is_superuser, username, first_name, last_name, email,
                       is_staff, is_active, date_joined)
SELECT u, '!unusable', false,
       CASE WHEN u = {admin} THEN 'scale-admin' WHEN u = {reviewer} THEN 'scale-reviewer'
            WHEN u = {fresh} THEN 'scale-fresh' ELSE 'labeler-' || (u - {first}) END,
       '', '', '', false, true, {t0}
FROM generate_series(1, {fresh}) u"""),
    ("project", """
INSERT INTO labeling_project (id, name, slug, guidelines, k, overlap, demo_overlap, flags,
    lease_seconds, valid_percent, test_percent, base_model_id, created_at, created_by_id)
VALUES ({project}, 'Scale', 'scale', 'Rank the outputs.', 4, 1, 1,
    '["fails_to_follow", "hallucination", "inappropriate_customer_assistant",
      "satisfies_constraint", "harmful_advice"]', 900, 10, 10, 1, {t0}, {admin})"""),
    ("memberships", """
INSERT INTO labeling_membership (id, project_id, user_id, role, created_at)
SELECT u, {project}, u, CASE u WHEN {admin} THEN 'admin' WHEN {reviewer} THEN 'reviewer'
                               ELSE 'labeler' END, {t0}
FROM generate_series(1, {fresh}) u"""),
    ("model versions", """
INSERT INTO labeling_modelversion (id, project_id, name, kind, path, parent_id, metrics,
                                   created_at, artifact_uri, sha256)
VALUES {models}"""),
    ("prompts", """
INSERT INTO labeling_prompt (id, project_id, messages, text, content_hash, source, external_id,
                             author, submitted_by_id, split, created_at)
SELECT i, {project}, jsonb_build_array(jsonb_build_object('role', 'user', 'content', s.text)),
       s.text, md5(s.text) || md5(i::text), 'scale', '', 'author-' || i % 500, NULL,
       CASE i % 500 % 10 WHEN 0 THEN 'valid' WHEN 1 THEN 'test' ELSE 'train' END,
       {t0} + (i::float8 / {m}) * interval '88 days'
FROM generate_series(1, {m}) i,
     LATERAL (SELECT 'Prompt ' || i || ': write a short note about topic ' || i % 997
                     || ' for a reader who is ' || i % 89 || ' years old.' AS text) s"""),
    ("completions", """
INSERT INTO labeling_completion (id, prompt_id, model_version_id, text, temperature, top_p,
                                 max_tokens, seed, finished, created_at)
SELECT 4 * (i - 1) + j + 1, i, j + 1,
       'Answer of model ' || (j + 1) || ' to prompt ' || i || ': '
           || repeat('lorem ipsum dolor ', 2 + (i + 3 * j) % 9 + j),
       0.7, 1.0, 256, 4 * i + j, true, {t0} + (i::float8 / {m}) * interval '88 days'
FROM generate_series(1, {m}) i, generate_series(0, 3) j"""),
    ("tasks", """
INSERT INTO labeling_task (id, project_id, kind, prompt_id, overlap, priority, done, created_at)
SELECT k * {m} + i, {project}, (ARRAY['ranking', 'comparison', 'demonstration'])[k + 1], i,
       CASE WHEN k = 0 AND i <= {n} AND i % 50 = 0 THEN 3 ELSE 1 END, 0, i <= {n},
       {t0} + (i::float8 / {m}) * interval '88 days' + k * interval '1 hour'
FROM generate_series(0, 2) k, generate_series(1, {m}) i"""),
    # A comparison task shows two of its prompt's completions: sft-ppo-1, sft-ppo-2, ppo-1-ppo-2
    # by i % 3 (model ids 2-3, 2-4, 3-4), the older model at position 0.
    ("task completions", """
INSERT INTO labeling_taskcompletion (id, task_id, completion_id, position)
SELECT 4 * (i - 1) + j + 1, i, 4 * (i - 1) + j + 1, j
FROM generate_series(1, {m}) i, generate_series(0, 3) j
UNION ALL
SELECT 4 * {m} + 2 * (i - 1) + j + 1, {m} + i,
       4 * (i - 1) + CASE WHEN j = 0 THEN (CASE i % 3 WHEN 2 THEN 3 ELSE 2 END)
                          ELSE (CASE i % 3 WHEN 0 THEN 3 ELSE 4 END) END, j
FROM generate_series(1, {m}) i, generate_series(0, 1) j"""),
    # Ranking leases: slot 0 of task i is lease i; slots 1 and 2 of every 50th task are leases
    # 3N + x (x = 2(i/50 - 1) + s). Labeler of slot s: (i + s) mod 64, three different people.
    # The labeler saw the outputs rotated by i + s.
    ("leases", """
INSERT INTO labeling_lease (id, task_id, user_id, status, shown_order, created_at, expires_at,
                            heartbeat_at, submitted_at, skip_reason)
SELECT id, task_id, {first} + who % {labelers}, 'submitted', shown, at,
       at + interval '900 seconds', at, at + (30 + id % 600) * interval '1 second', ''
FROM (
    SELECT CASE WHEN s = 0 THEN i ELSE 3 * {n} + 2 * (i / 50 - 1) + s END AS id, i AS task_id,
           i + s AS who,
           jsonb_build_array(4 * (i - 1) + 1 + (i + s) % 4, 4 * (i - 1) + 1 + (i + s + 1) % 4,
                             4 * (i - 1) + 1 + (i + s + 2) % 4, 4 * (i - 1) + 1 + (i + s + 3) % 4)
               AS shown,
           {t0} + (i::float8 / {m}) * interval '88 days' + (s + 1) * interval '2 hours' AS at
    FROM generate_series(1, {n}) i, generate_series(0, 2) s
    WHERE s = 0 OR i % 50 = 0
    UNION ALL
    SELECT {n} + i, {m} + i, 7 * i + 5,
           CASE WHEN i / 3 % 2 = 0 THEN jsonb_build_array(a, b) ELSE jsonb_build_array(b, a) END,
           {t0} + (i::float8 / {m}) * interval '88 days' + interval '3 hours'
    FROM generate_series(1, {n}) i,
         LATERAL (SELECT 4 * (i - 1) + CASE i % 3 WHEN 2 THEN 3 ELSE 2 END AS a,
                         4 * (i - 1) + CASE i % 3 WHEN 0 THEN 3 ELSE 4 END AS b) c
    UNION ALL
    SELECT 2 * {n} + i, 2 * {m} + i, 13 * i + 11, '[]'::jsonb,
           {t0} + (i::float8 / {m}) * interval '88 days' + interval '4 hours'
    FROM generate_series(1, {n}) i
) l"""),
    # A ranking per ranking lease (ranking r has lease r for r <= N, else lease r + 2N).
    ("rankings", """
INSERT INTO labeling_ranking (id, task_id, labeler_id, lease_id, none_acceptable, notes,
                              time_spent_ms, shown_order, created_at)
SELECT CASE WHEN l.id <= {n} THEN l.id ELSE l.id - 2 * {n} END, l.task_id, l.user_id, l.id,
       l.id % 97 = 0, CASE WHEN l.id % 31 = 0 THEN 'Two outputs were close.' ELSE '' END,
       20000 + l.id % 90000, l.shown_order, l.submitted_at
FROM labeling_lease l WHERE l.id <= {n} OR l.id > 3 * {n}"""),
    # Ranks rotate with the task (and flip between labelers of a shared task, so agreement is
    # neither 0 nor 1); every 7th ranking ties its two worst. Likert rises with the model.
    ("ranking entries", """
INSERT INTO labeling_rankingentry (id, ranking_id, completion_id, rank, likert, flags)
SELECT 4 * (r.id - 1) + j + 1, r.id, 4 * (r.task_id - 1) + j + 1,
       CASE WHEN r.id % 7 = 0 AND (j + r.task_id + r.id % 2) % 4 = 3 THEN 3
            ELSE (j + r.task_id + r.id % 2) % 4 + 1 END,
       2 + j + r.id % 3,
       CASE WHEN (r.id + j) % 10 = 0 THEN '["hallucination"]'::jsonb
            WHEN (r.id + j) % 23 = 0 THEN '["fails_to_follow", "harmful_advice"]'::jsonb
            ELSE '[]'::jsonb END
FROM labeling_ranking r, generate_series(0, 3) j"""),
    # Side A is the first of the lease's shown order; the newer model wins half the time, the
    # older one a third, the rest are ties and both-bad.
    ("comparisons", """
INSERT INTO labeling_comparison (id, task_id, labeler_id, lease_id, a_completion_id,
                                 b_completion_id, winner, notes, time_spent_ms, created_at)
SELECT l.id - {n}, l.task_id, l.user_id, l.id, (l.shown_order->>0)::int,
       (l.shown_order->>1)::int,
       CASE WHEN x < 50 THEN (CASE WHEN newer_is_b THEN 'b' ELSE 'a' END)
            WHEN x < 82 THEN (CASE WHEN newer_is_b THEN 'a' ELSE 'b' END)
            WHEN x < 93 THEN 'tie' ELSE 'both_bad' END,
       '', 15000 + l.id % 60000, l.submitted_at
FROM labeling_lease l,
     LATERAL (SELECT (hashint8(l.id)::int8 % 100 + 100) % 100 AS x,
                     (l.shown_order->>1)::int > (l.shown_order->>0)::int AS newer_is_b) w
WHERE l.id > {n} AND l.id <= 2 * {n}"""),
    ("demonstrations", """
INSERT INTO labeling_demonstration (id, task_id, prompt_id, labeler_id, lease_id, text,
                                    time_spent_ms, created_at)
SELECT l.id - 2 * {n}, l.task_id, l.task_id - 2 * {m}, l.user_id, l.id,
       'A demonstration for prompt ' || (l.task_id - 2 * {m}) || ': '
           || repeat('a careful answer ', (3 + l.id % 11)::int),
       60000 + l.id % 300000, l.submitted_at
FROM labeling_lease l WHERE l.id > 2 * {n} AND l.id <= 3 * {n}"""),
]
# fmt: on


def _secondary_indexes(cur) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """The big tables' unique constraints (table, name, definition) and other non-primary-key
    indexes (name, CREATE statement): dropped before the load and built after it, which costs a
    fraction of maintaining them row by row."""
    cur.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE contype = 'u' AND conrelid::regclass::text = ANY(%s)",
        [BIG_TABLES],
    )
    constraints = cur.fetchall()
    cur.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = ANY(%s)"
        " AND i.schemaname = 'public' AND NOT EXISTS (SELECT 1 FROM pg_constraint c"
        " WHERE c.conname = i.indexname AND c.contype IN ('p', 'u'))",
        [BIG_TABLES],
    )
    return constraints, cur.fetchall()


def _run_in(code_dir: Path, url: str, code: str, *, timeout: float = 3600) -> str:
    env = _child_env(code_dir, url)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=code_dir, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"failed in {code_dir}:\n{done.stderr[-3000:]}")
    return done.stdout


def _child_env(code_dir: Path, url: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(code_dir),
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "instructloop.settings",
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
        "ALLOWED_HOSTS": "testserver,localhost",
        "CELERY_BROKER_URL": os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/11"),
        "OMP_NUM_THREADS": "1",
    }


# The maintained aggregates bulk SQL with triggers off does not fill, rebuilt by the code's own
# functions where it has them (absent in older checkouts: skipped). Prints one JSON line.
REBUILD = """
import importlib, inspect, json, time
import django
django.setup()
from django.utils import timezone
done = {}
for module, name, label in [("labeling.tally", "rebuild", "tally rebuild"),
                            ("training.review", "refresh_snapshot",
                             "dashboard background recompute")]:
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        continue
    t0 = time.perf_counter()
    extra = {"now": timezone.now()} if "now" in inspect.signature(fn).parameters else {}
    fn(project_id=%d, **extra)
    done[label] = time.perf_counter() - t0
print(json.dumps(done))
"""


def migrate_and_rebuild(code_dir: Path, url: str) -> None:
    t0 = time.perf_counter()
    _run_in(code_dir, url, "from django.core.management import execute_from_command_line;"
            " execute_from_command_line(['manage.py', 'migrate', '-v', '0'])")  # fmt: skip
    print(f"  migrate ({code_dir}): {time.perf_counter() - t0:.1f} s", flush=True)
    out = _run_in(code_dir, url, REBUILD % PROJECT)
    for label, seconds in json.loads(out.strip().splitlines()[-1]).items():
        print(f"  {label}: {seconds:.2f} s", flush=True)


def build(*, size: int, name: str) -> None:
    import psycopg2

    n, pool = size, max(size // 100, 200)
    m = n + pool
    url = db_url(name)
    started = time.perf_counter()
    reset_database(url)
    _run_in(ROOT, url, "from django.core.management import execute_from_command_line;"
            " execute_from_command_line(['manage.py', 'migrate', '-v', '0'])")  # fmt: skip
    print(f"# build {name}: N = {n}, open tasks per kind = {pool}; migrate "
          f"{time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    # Superuser: skip the foreign keys' triggers (the ids are consistent by construction, and the
    # test checks every key); the load's WAL need not reach disk before each statement returns.
    cur.execute("SET session_replication_role = replica")
    cur.execute("SET synchronous_commit = off")
    cur.execute("SET maintenance_work_mem = '1GB'")
    cur.execute("SET work_mem = '256MB'")
    constraints, indexes = _secondary_indexes(cur)
    for table, cname, _ in constraints:
        cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{cname}"')
    for iname, _ in indexes:
        cur.execute(f'DROP INDEX "{iname}"')
    models = ", ".join(
        f"({pk}, {PROJECT}, '{vname}', '{kind}', '', {parent or 'NULL'}, '{{{{}}}}', {{t0}}, '', '')"
        for pk, vname, kind, parent in MODELS
    )
    params = {"n": n, "m": m, "project": PROJECT, "admin": ADMIN, "reviewer": REVIEWER,
              "first": FIRST_LABELER, "fresh": FRESH, "labelers": LABELERS}  # fmt: skip
    t0 = "(timestamptz '2026-12-05 00:00:00+00' - interval '90 days')"
    for step, statement in STEPS:
        t = time.perf_counter()
        cur.execute(statement.replace("{models}", models).format(t0=t0, **params))
        print(f"  {step:<18} {cur.rowcount:>10,} rows {time.perf_counter() - t:7.1f} s", flush=True)
    t = time.perf_counter()
    for _, definition in indexes:
        cur.execute(definition)
    for table, cname, definition in constraints:
        cur.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{cname}" {definition}')
    print(f"  indexes and unique constraints ({len(indexes) + len(constraints)}) "
          f"{time.perf_counter() - t:.1f} s", flush=True)  # fmt: skip
    # The next id of every table continues after the ids written here.
    cur.execute(
        "SELECT table_name, pg_get_serial_sequence(table_name, 'id') FROM information_schema.columns"
        " WHERE table_schema = 'public' AND column_name = 'id'"
        " AND pg_get_serial_sequence(table_name, 'id') IS NOT NULL"
    )
    for table, sequence in cur.fetchall():
        cur.execute(
            f"SELECT setval('{sequence}', COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)"  # noqa: S608
        )
    t = time.perf_counter()
    # A production database has been vacuumed (the visibility map lets index-only scans skip the
    # heap) and analysed (planner statistics); a bulk load has neither until autovacuum runs.
    cur.execute("VACUUM (ANALYZE)")
    print(f"  vacuum + analyze {time.perf_counter() - t:.1f} s", flush=True)
    cur.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
    size_text = cur.fetchone()[0]
    conn.close()
    print(f"# built {name} in {time.perf_counter() - started:.1f} s ({size_text})", flush=True)
    out = _run_in(ROOT, url, REBUILD % PROJECT)
    for label, seconds in json.loads(out.strip().splitlines()[-1]).items():
        print(f"  {label}: {seconds:.2f} s", flush=True)


# --- measure ----------------------------------------------------------------------------------

# Each figure runs in a fresh interpreter of the measured checkout (cwd and sys.path first), which
# prints one JSON line of results. Django's test Client serves the pages (DEBUG off): the time is
# the view's, without a web server in front.
CHILD = r"""
import json, os, statistics, sys, threading, time
sys.path.insert(0, os.getcwd())
import django
django.setup()
from django.db import connection, connections, transaction
from django.test import Client
from django.utils import timezone

FIGURE, ARGS = sys.argv[1], json.loads(sys.argv[2])
PROJECT, SLUG = ARGS["project"], "scale"


def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024


BACKENDS = {}


def note_backend():
    # This thread's server process: its CPU seconds and VmHWM now (the parent samples only every
    # 0.2 s, and a backend ends with its connection).
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    hwm = [int(line.split()[1]) for line in open(f"/proc/{pid}/status")
           if line.startswith("VmHWM")]
    BACKENDS[pid] = ((int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"), hwm[0])


LEASE_SECONDS = 900  # the built project's (bench/scale.py build)


def claim_once(user_id):
    from labeling import queue
    t0 = time.perf_counter()
    with transaction.atomic():
        queue.claim(user_id=user_id, project_id=PROJECT, kind="ranking",
                    lease_seconds=LEASE_SECONDS, now=timezone.now())
        transaction.set_rollback(True)  # the data stays as built
    return time.perf_counter() - t0


def plan_nodes(node):
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def explained_claim(user_id):
    # auto_explain logs each statement's EXPLAIN (ANALYZE, BUFFERS) at NOTICE, so the plans of
    # the statements the claim really runs (prepared or not, as this checkout formats them) come
    # back to this connection.
    with connection.cursor() as cur:
        cur.execute("LOAD 'auto_explain'")
        for setting, value in [("log_min_duration", "0"), ("log_analyze", "on"),
                               ("log_buffers", "on"), ("log_format", "json"),
                               ("log_level", "notice"), ("log_nested_statements", "on")]:
            cur.execute(f"SET auto_explain.{setting} = {value}")
    runs = []
    for _ in range(5):
        raw = connection.connection
        raw.notices = []
        claim_once(user_id)
        statements = []
        for notice in raw.notices:
            if "plan:" not in notice:
                continue
            head, plan = notice.split("plan:", 1)
            ms = float(head.split("duration:")[1].split("ms")[0])
            plan = json.loads(plan)
            nodes = list(plan_nodes(plan["Plan"]))
            statements.append({
                "ms": ms, "hit": plan["Plan"].get("Shared Hit Blocks", 0),
                "read": plan["Plan"].get("Shared Read Blocks", 0),
                "locks": any(n["Node Type"] == "LockRows" for n in nodes),
                "text": " ".join(plan.get("Query Text", "").split())[:160],
            })
        runs.append(statements)
    with connection.cursor() as cur:
        cur.execute("SET auto_explain.log_min_duration = -1")
    # The candidate statement: the one that row-locks a task (FOR UPDATE), else the slowest.
    def candidate(statements):
        locking = [s for s in statements if s["locks"]]
        return (locking or sorted(statements, key=lambda s: -s["ms"]))[0]
    ordered = sorted(runs, key=lambda r: candidate(r)["ms"])
    median = ordered[len(ordered) // 2]
    first = candidate(runs[0])
    return {"candidate": candidate(median), "first_run": first,
            "statements": len(median), "all_ms": sum(s["ms"] for s in median),
            "each": [(s["text"], s["ms"], s["hit"], s["read"]) for s in median]}


def claims(users, seconds, at_most):
    lat, lock = [], threading.Lock()
    barrier = threading.Barrier(len(users))
    def loop(user_id):
        mine = []
        claim_once(user_id)  # this connection's prepared statements, as a web worker has them
        barrier.wait()
        stop = time.monotonic() + seconds
        while time.monotonic() < stop and len(mine) < at_most:
            mine.append(claim_once(user_id))
        note_backend()
        connections.close_all()
        with lock:
            lat.extend(mine)
    threads = [threading.Thread(target=loop, args=(u,)) for u in users]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat.sort()
    return {"claims": len(lat), "p50_ms": 1000 * lat[len(lat) // 2],
            "p95_ms": 1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))],
            "per_s": len(lat) / (time.perf_counter() - t0)}


def client_as(user_id):
    from django.contrib.auth import get_user_model
    client = Client()
    client.force_login(get_user_model().objects.get(pk=user_id))
    return client


def get_once(client, path):
    t0 = time.perf_counter()
    response = client.get(path)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response.status_code, time.perf_counter() - t0, len(body)


def get_page(user_id, path):
    # The first request also pays for imports and template compilation: when it is quick, the
    # figure is a second one, as a warm web worker serves it.
    client = client_as(user_id)
    status, cold, size = get_once(client, path)
    seconds = cold
    if cold < ARGS["repeat_below"]:
        status, seconds, size = get_once(client, path)
    return {"status": status, "s": seconds, "cold_s": cold, "bytes": size}


def export(kind, limit):
    client = client_as(ARGS["reviewer"])
    warm = client.get(f"/api/v1/projects/{PROJECT}/export/{kind}/")  # imports, first queries
    next(iter(warm.streaming_content))
    warm.close()
    t0 = time.perf_counter()
    response = client.get(f"/api/v1/projects/{PROJECT}/export/{kind}/")
    lines, early_rss, partial = 0, None, b""
    for chunk in response.streaming_content:
        lines += chunk.count(b"\n")
        if early_rss is None and lines >= 1000:
            early_rss = rss_mb()
        if limit and lines >= limit:
            break
    seconds = time.perf_counter() - t0
    response.close()
    return {"status": response.status_code, "lines": lines, "s": seconds,
            "per_s": lines / seconds, "rss_at_1000_mb": early_rss, "rss_end_mb": rss_mb()}


# The whole export as a Parquet file, written to a temporary file as it streams; its rows as
# pyarrow reads them back (an older checkout answers JSON lines or an error: no rows).
def parquet(kind):
    import tempfile

    client = client_as(ARGS["reviewer"])
    t0 = time.perf_counter()
    response = client.get(f"/api/v1/projects/{PROJECT}/export/{kind}/?format=parquet")
    size, rows = 0, None
    with tempfile.NamedTemporaryFile(suffix=".parquet") as out:
        for chunk in response.streaming_content if response.streaming else [response.content]:
            out.write(chunk)
            size += len(chunk)
        out.flush()
        seconds = time.perf_counter() - t0
        if response.get("Content-Type", "").startswith("application/vnd.apache.parquet"):
            import pyarrow.parquet as pq

            rows = pq.read_metadata(out.name).num_rows
    response.close()
    return {"status": response.status_code, "s": seconds, "bytes": size, "rows": rows,
            "rss_end_mb": rss_mb()}  # fmt: skip


with connection.cursor() as cur:
    cur.execute("SELECT 1")
t0 = time.perf_counter()
if FIGURE == "a":
    out = {"fresh": explained_claim(ARGS["fresh"]), "deep": explained_claim(ARGS["deep"])}
elif FIGURE == "b":
    out = {"alone": claims([ARGS["deep"]], ARGS["seconds"], 50),
           "sixteen": claims([ARGS["deep"] + i for i in range(16)], ARGS["seconds"], 20)}
elif FIGURE == "c":
    out = get_page(ARGS["reviewer"], f"/p/{SLUG}/review/dashboard/")
elif FIGURE == "d1":
    out = get_page(ARGS["reviewer"], f"/api/v1/projects/{PROJECT}/progress/")
elif FIGURE == "d2":
    out = get_page(ARGS["admin"], f"/p/{SLUG}/admin/")
elif FIGURE == "e1":
    out = get_page(ARGS["reviewer"], f"/api/v1/projects/{PROJECT}/agreement/")
elif FIGURE == "e2":
    out = get_page(ARGS["reviewer"], f"/p/{SLUG}/review/")
elif FIGURE == "f1":
    out = export("rankings", ARGS["limit"])
elif FIGURE == "f2":
    out = export("preferences", ARGS["limit"])
elif FIGURE == "g":
    out = parquet("rankings")
out["figure_s"] = time.perf_counter() - t0
note_backend()
out["backends"] = BACKENDS
print(json.dumps(out))
"""

FIGURES = {
    "a": ["a"], "b": ["b"], "c": ["c"], "d": ["d1", "d2"], "e": ["e1", "e2"], "f": ["f1", "f2"],
    "g": ["g"],
}  # fmt: skip
TITLES = {
    "a": "claim statement (auto_explain)", "b": "claim end to end", "c": "reviewer dashboard page",
    "d1": "progress API", "d2": "project admin page (progress)", "e1": "agreement API",
    "e2": "review page (agreement)", "f1": "export rankings", "f2": "export preference pairs",
    "g": "export rankings as Parquet (whole)",
}  # fmt: skip


def _proc(pid: int) -> tuple[float, int] | None:
    """(user + system CPU seconds, VmHWM in kB) of a process, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    hwm = next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")), 0
    )
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"), hwm


@dataclass
class Backends:
    """Samples the measured database's server processes (the figure's connections and any parallel
    workers) every 0.2 s: their CPU time, and the peak VmHWM of any one of them. VmHWM counts the
    shared buffers a backend touched as well as its own memory."""

    name: str
    seen: dict[int, tuple[float, float]] = field(default_factory=dict)
    peak_kb: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        import psycopg2

        conn = psycopg2.connect(db_url("postgres"))
        conn.autocommit = True
        with conn.cursor() as cur:
            while not self.stop.is_set():
                cur.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    [self.name],
                )
                for (pid,) in cur.fetchall():
                    found = _proc(pid)
                    if found is None:
                        continue
                    cpu, hwm = found
                    first = self.seen.get(pid, (cpu, cpu))[0]
                    self.seen[pid] = (first, cpu)
                    self.peak_kb = max(self.peak_kb, hwm)
                self.stop.wait(0.2)
        conn.close()

    def cpu(self, existing: set[int]) -> float:
        """CPU seconds spent during the figure: a backend that was there before counts from its
        first sample, a new one (the figure's own connections) from its start."""
        return sum(
            last - (first if pid in existing else 0) for pid, (first, last) in self.seen.items()
        )


def _terminate_backends(name: str) -> None:
    """A killed figure leaves its query running on the server: end it."""
    import psycopg2

    conn = psycopg2.connect(db_url("postgres"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
    conn.close()


def run_figure(code_dir: Path, name: str, figure: str, args: dict, timeout: float) -> dict:
    import psycopg2

    url = db_url(name)
    with psycopg2.connect(db_url("postgres")) as conn, conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [name])
        existing = {pid for (pid,) in cur.fetchall()}
    conn.close()
    sampler = Backends(name)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, figure, json.dumps(args)], cwd=code_dir,
        env=_child_env(code_dir, url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # wait4: the child's own peak RSS (resource usage of that one process).
    timed_out, usage = False, None
    while usage is None:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode, usage = os.waitstatus_to_exitcode(status), rusage
        elif time.perf_counter() - t0 > timeout:
            timed_out = True
            proc.send_signal(signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            _terminate_backends(name)
        else:
            time.sleep(0.05)
    wall = time.perf_counter() - t0
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    time.sleep(0.3)
    sampler.stop.set()
    thread.join()
    result = {"wall_s": wall, "rss_mb": usage.ru_maxrss / 1024, "timed_out": timed_out,
              "pg_cpu_s": sampler.cpu(existing), "pg_peak_mb": sampler.peak_kb / 1024}  # fmt: skip
    if not timed_out:
        if proc.returncode != 0:
            result["error"] = stderr.strip().splitlines()[-1:] if stderr else ["exit"]
        else:
            result.update(json.loads(stdout.strip().splitlines()[-1]))
            # The figure's own readings of its backends, taken just before they closed.
            for pid, (cpu, hwm) in result.pop("backends").items():
                first, last = sampler.seen.get(int(pid), (0.0, 0.0))
                sampler.seen[int(pid)] = (first, max(last, cpu))
                sampler.peak_kb = max(sampler.peak_kb, hwm)
            result["pg_cpu_s"] = sampler.cpu(existing)
            result["pg_peak_mb"] = sampler.peak_kb / 1024
    return result


def _line(title: str, r: dict, timeout: float, what: str) -> str:
    cost = (f"wall {r['wall_s']:6.1f} s  RSS {r['rss_mb']:6.0f} MB  PG CPU {r['pg_cpu_s']:6.2f} s"
            f"  PG peak {r['pg_peak_mb']:5.0f} MB")  # fmt: skip
    if r["timed_out"]:
        what = f"> {timeout:.0f} s (killed)"
    elif "error" in r:
        what = f"error: {r['error']}"
    return f"  {title:<32} {what:<58} {cost}"


def _label(text: str) -> str:
    """A statement as auto_explain quoted it: its prepared name, else its first words."""
    if text.startswith("PREPARE "):
        return text.split()[1]
    return text[:70]


def _what(figure: str, r: dict) -> str:
    if figure == "a":
        parts = []
        for who in ("fresh", "deep"):
            c = r[who]["candidate"]
            parts.append(f"{who} {c['ms']:.2f} ms hit {c['hit']} read {c['read']}")
        return "; ".join(parts)
    if figure == "b":
        a, s = r["alone"], r["sixteen"]
        return (f"1: p50 {a['p50_ms']:.1f} p95 {a['p95_ms']:.1f} ms ({a['claims']}); 16: p50"
                f" {s['p50_ms']:.1f} p95 {s['p95_ms']:.1f} ms ({s['claims']})")  # fmt: skip
    if figure in ("f1", "f2"):
        return (f"{r['per_s']:,.0f}/s over {r['lines']:,} (RSS {r['rss_at_1000_mb'] or 0:.0f}"
                f"→{r['rss_end_mb']:.0f} MB) [{r['status']}]")  # fmt: skip
    if figure == "g":
        rows = "no Parquet" if r["rows"] is None else f"{r['rows']:,} rows"
        return (f"{r['s']:.1f} s, {r['bytes'] / 1e6:,.0f} MB, {rows} (RSS {r['rss_end_mb']:.0f}"
                f" MB) [{r['status']}]")  # fmt: skip
    cold = f" (first {r['cold_s'] * 1000:,.0f})" if r["cold_s"] != r["s"] else ""
    return f"{r['s'] * 1000:,.0f} ms{cold} [{r['status']}] {r['bytes']:,} bytes"


def measure(*, name: str, code_dir: Path, only: list[str], timeout: float, limit: int,
            seconds: float) -> None:  # fmt: skip
    url = db_url(name)
    print(f"# measure {code_dir} on {name}; timeout {timeout:.0f} s, export limit {limit or 'all'},"
          f" load average {os.getloadavg()[0]:.2f}, CPU affinity {sorted(os.sched_getaffinity(0))}",
          flush=True)  # fmt: skip
    migrate_and_rebuild(code_dir, url)
    args = {"project": PROJECT, "admin": ADMIN, "reviewer": REVIEWER, "fresh": FRESH,
            "deep": FIRST_LABELER, "limit": limit, "seconds": seconds, "repeat_below": 5.0}  # fmt: skip
    for letter in only:
        for figure in FIGURES[letter]:
            r = run_figure(code_dir, name, figure, args, timeout)
            print(_line(TITLES[figure], r, timeout, "" if "error" in r or r["timed_out"]
                        else _what(figure, r)), flush=True)  # fmt: skip
            if figure == "a" and not r["timed_out"] and "error" not in r:
                for who in ("fresh", "deep"):
                    x = r[who]
                    print(f"      {who}: {x['statements']} statements, {x['all_ms']:.2f} ms in all;"
                          f" first run {x['first_run']['ms']:.2f} ms (read"
                          f" {x['first_run']['read']}); candidate: {x['candidate']['text'][:110]}",
                          flush=True)  # fmt: skip
                    for text, ms, hit, read in x["each"]:
                        print(f"        {ms:9.2f} ms hit {hit:>6} read {read:>6}  {_label(text)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="scale.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="(re)create il_scale_<size> with the data set")
    m = sub.add_parser("measure", help="print the figures of a checkout on il_scale_<size>")
    for p in (b, m):
        p.add_argument("--size", required=True, help="1e3, 1e5, 1e6 (or any count)")
        p.add_argument("--database", help="instead of il_scale_<size>")
    m.add_argument("--code", type=Path, default=ROOT, help="the checkout to measure")
    m.add_argument("--timeout", type=float, default=300.0, help="per figure, seconds")
    m.add_argument("--only", default="a,b,c,d,e,f", help="figures, e.g. a,b")
    m.add_argument("--export-limit", type=int, default=50_000,
                   help="records per export (0: all; the whole export at 1e3)")  # fmt: skip
    m.add_argument("--claim-seconds", type=float, default=15.0, help="per claim run (figure b)")
    args = parser.parse_args(argv)
    name = args.database or f"il_scale_{label_of(args.size)}"
    if args.command == "build":
        build(size=size_of(args.size), name=name)
    else:
        limit = 0 if size_of(args.size) <= 1000 else args.export_limit
        measure(name=name, code_dir=args.code.resolve(), only=args.only.split(","),
                timeout=args.timeout, limit=limit, seconds=args.claim_seconds)  # fmt: skip


if __name__ == "__main__":
    main()
