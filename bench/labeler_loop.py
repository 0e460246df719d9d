"""Labeler-loop benchmark: N token-authenticated labelers loop claim-next → submit over HTTP.

The app runs under gunicorn on PostgreSQL (a fresh database made for the run). Each labeler is a
client thread with its own keep-alive connection; for a fixed time it asks for the next ranking
task and submits a ranking. Prints completed annotations/s, p50/p95/p99 per call, errors, double
assignments (a task over its overlap or a (task, labeler) pair twice) and lost submissions (a 2xx
submit with no row behind it).

    python bench/labeler_loop.py                    # 1, 8 and 32 labelers, 20 s each
    python bench/labeler_loop.py --labelers 32 --seconds 30 --workers 4

Needs PostgreSQL (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/il_bench; the
database is dropped and re-created).
"""

from __future__ import annotations

import argparse
import http.client
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

from bench.common import reset_database, wait_for_http  # noqa: E402


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"next": [], "submit": []})
    completed: int = 0
    errors: list[str] = field(default_factory=list)
    submitted_ids: list[int] = field(default_factory=list)
    empty: int = 0


def _setup(env: dict[str, str], *, labelers: int, tasks: int, overlap: int, k: int) -> list[str]:
    """Migrate and seed through Django in a child process; returns the labelers' tokens."""
    code = f"""
import django, json, os
django.setup()
from django.contrib.auth import get_user_model
from django.utils import timezone
from accounts.services import api_token_issue
from labeling.models import Completion, ModelVersion, Project, Prompt, Role, Task, TaskCompletion, Membership
from labeling.imports import messages_hash
User = get_user_model()
project = Project.objects.create(name="Bench", slug="bench", k={k}, overlap={overlap}, lease_seconds=600)
mv = ModelVersion.objects.create(project=project, name="bench-model", kind="external")
prompts = Prompt.objects.bulk_create(
    Prompt(project=project, messages=[{{"role": "user", "content": f"Prompt {{i}}"}}], text=f"Prompt {{i}}",
           content_hash=messages_hash([{{"role": "user", "content": f"Prompt {{i}}"}}]))
    for i in range({tasks}))
completions = Completion.objects.bulk_create(
    Completion(prompt=p, model_version=mv, text=f"Answer {{j}} to {{p.text}}") for p in prompts for j in range({k}))
tasks = Task.objects.bulk_create(Task(project=project, kind="ranking", prompt=p, overlap={overlap}) for p in prompts)
TaskCompletion.objects.bulk_create(
    TaskCompletion(task=t, completion=completions[i * {k} + j], position=j) for i, t in enumerate(tasks) for j in range({k}))
tokens = []
for i in range({labelers}):
    u = User.objects.create_user(f"bench{{i}}", password=None)
    Membership.objects.create(project=project, user=u, role=Role.LABELER)
    tokens.append(api_token_issue(user_id=u.pk, name="bench", now=timezone.now(), lifetime=None).key)
from django.db import connection
with connection.cursor() as cur:
    cur.execute("ANALYZE")  # a production database has planner statistics; a fresh seed has none
print(json.dumps({{"project": project.pk, "tokens": tokens}}))
"""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    env["BENCH_PROJECT_ID"] = str(data["project"])
    return data["tokens"]


def _start_gunicorn(
    env: dict[str, str], *, port: int, workers: int, threads: int
) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "gunicorn", "instructloop.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
        "--worker-class", "gthread", "--threads", str(threads),
        "--keep-alive", "30", "--log-level", "warning", "--backlog", "2048",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    if wait_for_http(port):
        return proc
    proc.kill()
    raise SystemExit("gunicorn did not start")


def _labeler(port: int, token: str, project_id: int, k: int, stop_at: float, stats: Stats,
             lock: threading.Lock) -> None:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}

    def call(path: str, body: dict) -> tuple[int, dict | None, float]:
        t0 = time.perf_counter()
        conn.request("POST", path, body=json.dumps(body), headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        dt = time.perf_counter() - t0
        return resp.status, (json.loads(raw) if raw else None), dt

    local = Stats()
    while time.monotonic() < stop_at:
        try:
            status, body, dt = call(f"/api/v1/projects/{project_id}/next/", {"kind": "ranking"})
            local.latencies["next"].append(dt)
            if status == 204:
                local.empty += 1
                break
            if status != 200:
                local.errors.append(f"next {status} {body}")
                continue
            entries = [
                {"completion": c["id"], "rank": min(i + 1, k), "likert": 7 - i % 7, "flags": []}
                for i, c in enumerate(body["completions"])
            ]
            status, body2, dt = call(
                f"/api/v1/leases/{body['lease_id']}/ranking/",
                {"entries": entries, "none_acceptable": False, "notes": "", "time_spent_ms": 1000},
            )
            local.latencies["submit"].append(dt)
            if status in (200, 201):
                local.completed += 1
                local.submitted_ids.append(body2["id"])
            else:
                local.errors.append(f"submit {status} {body2}")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            local.errors.append(f"{type(exc).__name__}: {exc}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    with lock:
        stats.completed += local.completed
        stats.errors += local.errors
        stats.submitted_ids += local.submitted_ids
        stats.empty += local.empty
        for key, values in local.latencies.items():
            stats.latencies[key] += values


def _verify(env: dict[str, str], submitted_ids: list[int]) -> dict[str, int]:
    code = """
import django, json
django.setup()
from django.db.models import Count, F, Q
from labeling.models import Lease, Ranking, Task
import sys
ids = set(json.loads(sys.stdin.read()))
stored = set(Ranking.objects.filter(pk__in=ids).values_list("pk", flat=True))
over = Task.objects.annotate(n=Count("leases", filter=Q(leases__status="submitted"))).filter(n__gt=F("overlap")).count()
dup = Lease.objects.values("task", "user").annotate(n=Count("pk")).filter(n__gt=1).count()
dup_r = Ranking.objects.values("task", "labeler").annotate(n=Count("pk")).filter(n__gt=1).count()
print(json.dumps({"lost": len(ids - stored), "over_overlap": over, "duplicate_pairs": dup + dup_r,
                  "rankings_in_db": Ranking.objects.count()}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        input=json.dumps(submitted_ids),
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (Linux /proc), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _postgres_backends(url: str) -> list[int]:
    """The server processes serving the bench database (the app's persistent connections)."""
    import psycopg2

    name = urlparse(url).path.lstrip("/")
    conn = psycopg2.connect(urlparse(url)._replace(path="/postgres").geturl())
    with conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [name])
        pids = [row[0] for row in cur.fetchall()]
    conn.close()
    return pids


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def run_one(args: argparse.Namespace, labelers: int) -> None:
    url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/il_bench")
    reset_database(url)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/14"),
        "DJANGO_SETTINGS_MODULE": "instructloop.settings",
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
    }
    tokens = _setup(env, labelers=labelers, tasks=args.tasks, overlap=args.overlap, k=args.k)
    proc = _start_gunicorn(env, port=args.port, workers=args.workers, threads=args.threads)
    try:
        stats, lock = Stats(), threading.Lock()
        workers = _children(proc.pid)
        app_cpu0 = sum(_cpu_seconds(pid) for pid in workers)
        client_cpu0 = time.process_time()
        t0 = time.monotonic()
        stop_at = t0 + args.seconds
        threads = [
            threading.Thread(
                target=_labeler,
                args=(args.port, tok, int(env["BENCH_PROJECT_ID"]), args.k, stop_at, stats, lock),
            )
            for tok in tokens
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        # CPU spent per annotation by each party: what bounds throughput on a machine of C cores
        # (C x 1000 / the sum, in annotations/s), whatever else runs beside the bench.
        app_cpu = sum(_cpu_seconds(pid) for pid in workers) - app_cpu0
        client_cpu = time.process_time() - client_cpu0
        db_cpu = sum(_cpu_seconds(pid) for pid in _postgres_backends(url))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    check = _verify(env, stats.submitted_ids)
    calls = stats.latencies["next"] + stats.latencies["submit"]
    print(
        f"labelers={labelers:<3} workers={args.workers}x{args.threads}thr "
        f"annotations/s={stats.completed / elapsed:7.1f} completed={stats.completed:<6} "
        f"p50={_pct(calls, 0.50):6.1f}ms p95={_pct(calls, 0.95):6.1f}ms p99={_pct(calls, 0.99):6.1f}ms "
        f"(next p50={_pct(stats.latencies['next'], 0.5):.1f} submit p50={_pct(stats.latencies['submit'], 0.5):.1f}) "
        f"errors={len(stats.errors)} double_assignments={check['over_overlap'] + check['duplicate_pairs']} "
        f"lost_submissions={check['lost']} queue_empty_hits={stats.empty}",
        flush=True,
    )
    per = 1000 / max(stats.completed, 1)
    print(
        f"    CPU per annotation: app {app_cpu * per:.2f} ms, PostgreSQL {db_cpu * per:.2f} ms, "
        f"client {client_cpu * per:.2f} ms; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    for err in stats.errors[:5]:
        print("   error:", err[:300])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--labelers", type=int, nargs="*", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--tasks", type=int, default=8000)
    parser.add_argument("--overlap", type=int, default=3)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    print(f"# bench/labeler_loop.py: {args.seconds:.0f}s per run, {args.tasks} ranking tasks, "
          f"K={args.k}, overlap={args.overlap}, gunicorn gthread, PostgreSQL, {os.cpu_count()} cores")  # fmt: skip
    for n in args.labelers:
        run_one(args, n)


if __name__ == "__main__":
    main()
