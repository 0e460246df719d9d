"""Login throttling, as a client sees it: N wrong passwords on each login surface, then the right one.

Starts gunicorn on the embedded default (SQLite in a temporary var dir) behind a pretend proxy
(INSTRUCTLOOP_TRUSTED_PROXIES=1, each surface's tries from its own X-Forwarded-For address and
account), and for the token endpoint, the login page and Django's admin login prints what the
wrong tries got, the Retry-After of the first 429, what the right password got at once, and what
it got after waiting that Retry-After.

    python bench/login_throttle.py                  # 200 / 60 / 20 tries, the default limit
    python bench/login_throttle.py --cooloff 900    # the default cool-off (then no wait test)
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "a right password 123"
SURFACES = [  # name, path, wrong tries (the figures), account, client address
    ("token endpoint", "/api/v1/auth/token/", 200, "tina", "203.0.113.1"),
    ("login page", "/accounts/login/", 60, "lara", "203.0.113.2"),
    ("django admin", "/django-admin/login/", 20, "sam", "203.0.113.3"),
]


def _start(env: dict[str, str], port: int) -> subprocess.Popen:
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    users = "from django.contrib.auth import get_user_model; U = get_user_model()\n" + "".join(
        f"U.objects.create_user({name!r}, password={PASSWORD!r}, is_staff=True)\n"
        for _, _, _, name, _ in SURFACES
    )
    subprocess.run(
        [*manage, "shell", "-c", users], cwd=ROOT, env=env, check=True, capture_output=True
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "instructloop.wsgi:application",
         "--bind", f"127.0.0.1:{port}", "--workers", "2", "--log-level", "warning"],
        cwd=ROOT, env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(120):
        try:
            requests.get(f"http://127.0.0.1:{port}/accounts/login/", timeout=2)
            return proc
        except requests.ConnectionError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("gunicorn did not start")


def _try(base: str, path: str, username: str, password: str, address: str) -> requests.Response:
    headers = {"X-Forwarded-For": address}
    if path.startswith("/api/"):
        body = {"username": username, "password": password}
        return requests.post(base + path, json=body, headers=headers, timeout=30)
    session = requests.Session()
    form = session.get(base + path, headers=headers, timeout=30)
    token = form.text.split('name="csrfmiddlewaretoken" value="', 1)[1].split('"', 1)[0]
    data = {"username": username, "password": password, "csrfmiddlewaretoken": token}
    return session.post(base + path, data=data, headers=headers, allow_redirects=False, timeout=30)


def _logged_in(response: requests.Response) -> bool:
    return response.status_code == 302 or (
        response.status_code == 200
        and response.headers["Content-Type"].startswith("application/json")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cooloff", type=int, default=20, help="INSTRUCTLOOP_LOGIN_COOLOFF_SECONDS"
    )
    parser.add_argument("--limit", type=int, default=None, help="INSTRUCTLOOP_LOGIN_FAILURE_LIMIT")
    parser.add_argument("--port", type=int, default=8797)
    args = parser.parse_args()
    keep = {"PATH", "HOME", "LANG", "TMPDIR"}
    env = {key: value for key, value in os.environ.items() if key in keep}
    var = tempfile.mkdtemp(prefix="login-throttle-")
    env |= {"INSTRUCTLOOP_VAR_DIR": var, "INSTRUCTLOOP_TRUSTED_PROXIES": "1",
            "INSTRUCTLOOP_LOGIN_COOLOFF_SECONDS": str(args.cooloff), "LOG_LEVEL": "ERROR"}  # fmt: skip
    if args.limit:
        env["INSTRUCTLOOP_LOGIN_FAILURE_LIMIT"] = str(args.limit)
    proc = _start(env, args.port)
    base = f"http://127.0.0.1:{args.port}"
    rows = []
    try:
        for name, path, tries, username, address in SURFACES:
            answers = [_try(base, path, username, f"wrong-{i}", address) for i in range(tries)]
            codes = collections.Counter(a.status_code for a in answers)
            first = next((i for i, a in enumerate(answers) if a.status_code == 429), None)
            retry = int(answers[first].headers["Retry-After"]) if first is not None else None
            right = _try(base, path, username, PASSWORD, address)
            rows.append([name, path, tries, username, address, codes, first, retry, right])
        if args.cooloff <= 120:
            time.sleep(max(r[7] or 0 for r in rows))
        for row in rows:
            name, path, _, username, address = row[:5]
            after = _try(base, path, username, PASSWORD, address) if args.cooloff <= 120 else None
            row.append(after)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    limit = args.limit or "default"
    print(
        f"# bench/login_throttle.py: failure limit {limit}, cool-off {args.cooloff} s, gunicorn on SQLite"
    )
    print(f"{'surface':15} {'wrong tries':>11}  {'answers':22} {'1st 429':>8} {'Retry-After':>11}"
          f"  {'right pw now':12}  right pw after Retry-After")  # fmt: skip
    for name, _, tries, _, _, codes, first, retry, right, after in rows:
        answers = ", ".join(f"{code} x{n}" for code, n in sorted(codes.items()))
        now = f"{right.status_code} {'in' if _logged_in(right) else 'refused'}"
        later = (
            "not waited"
            if after is None
            else (f"{after.status_code} {'in' if _logged_in(after) else 'refused'}")
        )
        first_at = "-" if first is None else f"#{first + 1}"
        print(
            f"{name:15} {tries:>11}  {answers:22} {first_at:>8} {retry or '-':>10}s  {now:12}  {later}"
        )


if __name__ == "__main__":
    main()
