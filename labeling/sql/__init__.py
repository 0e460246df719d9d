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

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
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
    """A JSON column's value, decoded. Both backends hand back the JSON text through Django's
    cursor (Django registers jsonb with psycopg2 as text, for JSONField to decode), so a JSON
    string arrives quoted and decodes right; NULL stays None."""
    return None if value is None else json.loads(value)


# A statement sent before a query in its round trip (`pg_first`): (a name to prepare it under,
# or None to send it as it is, such as a SET LOCAL; the SQL; its parameters).
First = tuple[str | None, str, Sequence[Any]]


def _prepared(cursor: Any, name: str, query: str, n_params: int) -> str:
    """`EXECUTE name (...)` for `query`, prepared on this connection first if it is not yet."""
    # This thread's connection wrapper (`connection` is a proxy shared by all threads); a name is
    # prepared on the raw connection it is stored with, again after a reconnect.
    wrapper = connections[DEFAULT_DB_ALIAS]
    prepared = wrapper.__dict__.setdefault("_instructloop_prepared", {})
    if prepared.get(name) is not wrapper.connection:
        parts = query.split("%s")
        numbered = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))
        cursor.execute(f"PREPARE {name} AS {numbered}")
        prepared[name] = wrapper.connection
    return f"EXECUTE {name} ({placeholders(n_params)})"


def _execute(
    cursor: Any,
    query: str,
    params: Sequence[Any],
    name: str | None,
    pg_first: Sequence[First] = (),
) -> None:
    """Run `query`; on PostgreSQL, a `name`d one as a prepared statement of this connection, and
    the `pg_first` statements (PostgreSQL-only: a SET LOCAL, a lock) in the same round trip just
    before it. SQLite runs `query` alone.

    Planning the claim's candidate query costs PostgreSQL more than running it (0.9 ms against
    0.4 ms); a statement prepared once per connection is planned once, or re-planned only when
    PostgreSQL judges a custom plan worth it. (Not for a transaction-pooling proxy such as
    PgBouncer in transaction mode: prepared statements live on one server connection.) The
    statements of one round trip run one after the other, each with a snapshot of its own (READ
    COMMITTED), so `query` sees what committed while a `pg_first` lock was awaited.
    """
    if not postgres():
        cursor.execute(query, params)
        return
    texts: list[str] = []
    values: list[Any] = []
    for first_name, first_query, first_params in (*pg_first, (name, query, params)):
        if first_name is not None:
            first_query = _prepared(cursor, first_name, first_query, len(first_params))
        texts.append(first_query)
        values.extend(first_params)
    cursor.execute("; ".join(texts), values)


def one(
    query: str,
    params: Sequence[Any] = (),
    *,
    name: str | None = None,
    pg_first: Sequence[First] = (),
) -> tuple | None:
    with connection.cursor() as cursor:
        _execute(cursor, query, params, name, pg_first)
        return cursor.fetchone()


def value(query: str, params: Sequence[Any] = (), *, name: str | None = None) -> Any:
    """The first column of the one row a statement always returns (a COUNT, an INSERT's
    RETURNING id)."""
    with connection.cursor() as cursor:
        _execute(cursor, query, params, name)
        return cursor.fetchone()[0]


def rows(query: str, params: Sequence[Any] = (), *, name: str | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        _execute(cursor, query, params, name)
        return cursor.fetchall()


def rows_planned(plans: str, query: str, params: Sequence[Any] = ()) -> list[tuple]:
    """`rows`, with PostgreSQL's planner settings `plans` (SET LOCAL ...) for this query alone:
    they hold inside a transaction (a savepoint when the caller has one open) and end with it.
    SQLite has no such settings and runs the query as it is."""
    if not postgres():
        return rows(query, params)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(plans)
        cursor.execute(query, params)
        return cursor.fetchall()


def run(query: str, params: Sequence[Any] = (), *, name: str | None = None) -> int:
    """Execute a write; returns the number of rows it touched."""
    with connection.cursor() as cursor:
        _execute(cursor, query, params, name)
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
    # No field names: Django reads them only when some columns are missing (deferred ones), and
    # `values` holds every concrete field (the zip above is strict).
    return model.from_db(DEFAULT_DB_ALIAS, None, decoded)  # type: ignore[arg-type]
