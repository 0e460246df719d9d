"""A labeler at the screen, in headless Chromium at 1280x800: the keys a K = 4 ranking with
ratings, one tie and one flag takes, the ranking page's height, and the time from logging in to
the first stored label (issue 18's targets: at most 10 keys, no scrolling, at most 60 s).

    python bench/labeler_keys.py [--port 8766] [--chromium /usr/bin/chromium]

Runs the app with `manage.py runserver` on the embedded default (SQLite and a filesystem queue in
a temporary directory): no service needed. Needs Playwright and a system Chromium.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import wait_for_http  # noqa: E402

PASSWORD = "keys-bench-pw-123"
# Outputs of one to three lines (the layout target is "up to three lines").
OUTPUTS = [
    "Paris.",
    "The capital of France is Paris.\nIt sits on the Seine.",
    "Paris is the capital of France and its largest city.\nIt has been the capital since 987.\n"
    "About two million people live in the city proper.",
    "Lyon, I believe.",
]
SEED = f"""
import json
from django.contrib.auth import get_user_model
from labeling import services
from labeling.models import Completion, Membership, ModelVersion, Prompt, Role
from labeling.imports import messages_hash
User = get_user_model()
admin = User.objects.create_user("keys-admin", password=None, is_staff=True)
project = services.project_create(name="Keys", slug="keys", creator=admin, k=4,
    guidelines="# Rules\\n\\nPrefer honest, helpful answers. Flag made-up facts.")
lena = User.objects.create_user("lena", password={PASSWORD!r})
Membership.objects.create(project=project, user=lena, role=Role.LABELER)
models = [ModelVersion.objects.create(project=project, name=f"m{{i}}", kind="external")
          for i in range(4)]
for n in range(3):
    messages = [{{"role": "user", "content": f"What is the capital of France? ({{n}})"}}]
    prompt = Prompt.objects.create(project=project, messages=messages, text=messages[0]["content"],
                                   content_hash=messages_hash(messages), split="train")
    outputs = [Completion(prompt=prompt, model_version=m, text=t) for m, t in zip(models, {OUTPUTS!r})]
    services.ranking_task_create(project=project, prompt=prompt,
                                 completions=Completion.objects.bulk_create(outputs))
print(json.dumps({{"project": project.pk}}))
"""


def _start(env: dict[str, str], port: int) -> subprocess.Popen:
    cmd = [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    if wait_for_http(port):
        return proc
    proc.kill()
    raise SystemExit("the server did not start")


def _ranking(env: dict[str, str]) -> list:
    code = """
import json, django
django.setup()
from labeling.models import RankingEntry
rows = RankingEntry.objects.order_by("rank", "completion_id")
print(json.dumps([[e.completion.text[:20], e.rank, e.likert, e.flags] for e in rows]))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> None:
    from playwright.sync_api import sync_playwright

    var = tempfile.mkdtemp(prefix="labeler-keys-")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(INSTRUCTLOOP_VAR_DIR=var, DJANGO_SETTINGS_MODULE="instructloop.settings")
    migrate = [sys.executable, "manage.py", "migrate", "-v", "0"]
    subprocess.run(migrate, cwd=ROOT, env=env, check=True, capture_output=True)
    seed = "import django\ndjango.setup()\n" + SEED
    subprocess.run([sys.executable, "-c", seed], cwd=ROOT, env=env, check=True, capture_output=True)
    server = _start(env, args.port)
    url = f"http://127.0.0.1:{args.port}"
    keys: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})

            def press(key: str) -> None:
                keys.append(key)
                page.keyboard.press(key)

            page.goto(f"{url}/accounts/login/")
            page.fill("#id_username", "lena")
            page.fill("#id_password", PASSWORD)
            t0 = time.perf_counter()
            page.keyboard.press("Enter")
            page.wait_for_url(f"{url}/")
            page.keyboard.press("r")  # home: rank outputs in the selected project
            page.wait_for_url("**/leases/*/")
            page.locator(".rank-card:focus").wait_for()
            height = page.evaluate("() => document.documentElement.scrollHeight")
            last_card = page.evaluate(
                "() => Math.round([...document.querySelectorAll('.rank-card')].pop()"
                ".getBoundingClientRect().bottom)"
            )
            content = page.evaluate(
                "() => Math.round(document.querySelector('main').getBoundingClientRect().bottom)"
            )
            submit = page.evaluate(
                "() => Math.round(document.getElementById('submit').getBoundingClientRect().bottom)"
            )
            page.screenshot(path=f"{args.screenshots}/labeler-keys-ranking.png")
            # The first card has the focus. Flag it (f 1), then rate A..D: 5 3 5 1. The order
            # follows the ratings once all are rated; A and C (both 5) come tied.
            task_url = page.url
            for key in ["f", "1", "5", "3", "5", "1", "Enter"]:
                press(key)
            # Submit and next: the next task opens (or the page that says none is left).
            page.wait_for_url(lambda u: u != task_url)
            page.wait_for_load_state()
            first_label_s = time.perf_counter() - t0
            browser.close()
        stored = _ranking(env)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print("# bench/labeler_keys.py: headless Chromium 1280x800, runserver on SQLite")
    print(
        f"keys for a K=4 ranking with ratings, one tie and one flag: {len(keys)} ({' '.join(keys)})"
    )
    print(f"ranking page height: {height} px at a 800 px viewport (content ends at {content},"
          f" last card at {last_card}, submit button at {submit})")  # fmt: skip
    print(
        f"time from login to the first stored label (scripted, no reading): {first_label_s:.2f} s"
    )
    print("stored (text, rank, likert, flags):", json.dumps(stored))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--screenshots", default=tempfile.gettempdir())
    run(parser.parse_args())


if __name__ == "__main__":
    main()
