"""Hand-written SQL for the labeler loop's hot path, on PostgreSQL and SQLite alike.

The queue's claim and the submits run a fixed handful of statements per annotation. Written with
the ORM they cost about 25 ms of Python per claim + submit on a slow core, most of it building
and compiling querysets; as SQL strings they cost a fraction of that (bench/labeler_loop.py).
The ORM stays everywhere else, and these statements touch only columns whose constraints live in
the database, so an integrity rule is enforced the same way whichever path wrote the row.

Portability: Django's cursor takes `%s` placeholders on both backends; `RETURNING` needs
SQLite 3.35+; row locks (`FOR UPDATE ... SKIP LOCKED`) exist only on PostgreSQL, and SQLite
serialises writers instead (every transaction begins IMMEDIATE, see settings). Datetimes and
JSON go in through the backend's own adapters and come back aware / decoded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connection
from django.db.models import BooleanField, DateTimeField, JSONField, Model

M = TypeVar("M", bound=Model)


def postgres() -> bool:
    return connection.vendor == "postgresql"


def lock(clause: str) -> str:
    """A row-lock clause such as "FOR UPDATE OF t SKIP LOCKED", or nothing on SQLite."""
    return f" {clause}" if postgres() else ""


def ts(value: datetime) -> Any:
    """A datetime as the backend stores it (SQLite keeps naive UTC text)."""
    return connection.ops.adapt_datetimefield_value(value)


def aware(value: Any) -> datetime | None:
    """A datetime read back from either backend, aware and in UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def json_in(value: Any) -> str:
    return json.dumps(value)


def json_out(value: Any) -> Any:
    """A JSON column's value: psycopg2 decodes jsonb itself, SQLite hands back the text."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def one(query: str, params: Sequence[Any] = ()) -> tuple | None:
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchone()


def rows(query: str, params: Sequence[Any] = ()) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall()


def run(query: str, params: Sequence[Any] = ()) -> int:
    """Execute a write; returns the number of rows it touched."""
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.rowcount


def placeholders(n: int) -> str:
    return ", ".join(["%s"] * n)


def columns(model: type[Model], alias: str) -> str:
    """Every concrete column of `model`, qualified by `alias`, in field order (for `instance`)."""
    return ", ".join(f"{alias}.{field.column}" for field in model._meta.concrete_fields)


def instance(model: type[M], values: Sequence[Any]) -> M:
    """A model instance from a row of `columns(model, ...)`: JSON decoded, datetimes aware."""
    decoded = []
    for field, value in zip(model._meta.concrete_fields, values, strict=True):
        if isinstance(field, JSONField):
            value = json_out(value)
        elif isinstance(field, DateTimeField):
            value = aware(value)
        elif isinstance(field, BooleanField) and value is not None:
            value = bool(value)
        decoded.append(value)
    return model.from_db(DEFAULT_DB_ALIAS, None, decoded)
