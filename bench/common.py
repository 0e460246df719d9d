"""Helpers shared by the bench scripts. Import-light: no torch and no Django until called."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    from labeling.stats import HeldOutAccuracy

ROOT = Path(__file__).resolve().parent.parent


def reset_database(url: str) -> None:
    """Drop and re-create the PostgreSQL database of `url` (a bench's own, never the app's)."""
    import psycopg2

    parsed = urlparse(url)
    conn = psycopg2.connect(parsed._replace(path="/postgres").geturl())
    conn.autocommit = True
    with conn.cursor() as cur:
        name = parsed.path.lstrip("/")
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def django_setup() -> None:
    """Load the apps (for the platform's functions); nothing here opens a database connection."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "instructloop.settings")
    django.setup()


def accuracy_text(held_out: HeldOutAccuracy | None) -> str:
    """A reward model's held-out pair accuracy as the dashboard reads it: the rate, its 95% Wilson
    interval, its n, and a warning when it cannot tell 60% from 50%."""
    if held_out is None:
        return "not measured (no held-out pairs)"
    text = (
        f"{held_out.accuracy:.3f} [{held_out.low:.3f}, {held_out.high:.3f}] over"
        f" {held_out.pairs} pairs from {held_out.rankings} held-out rankings"
    )
    if not held_out.enough_pairs:
        text += f" (too few to tell 60% from 50%: {held_out.pairs_needed} needed)"
    elif not held_out.excludes_chance:
        text += " (not told from chance)"
    return text


def wait_for_http(port: int, path: str = "/accounts/login/", timeout: float = 60) -> bool:
    """Whether a server on 127.0.0.1:`port` answered `path` (any status) within `timeout` s."""
    import http.client
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            conn.getresponse().read()
            return True
        except OSError:
            time.sleep(0.3)
    return False
