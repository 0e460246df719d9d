"""Helpers shared by the bench scripts. Import-light: no torch and no Django until called."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

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
