"""The `<id:...>` URL converter: a row id that fits PostgreSQL's bigint.

Django's `<int:...>` takes any run of digits. The hand-written statements (labeling/sql/) bind a
path's id as a bigint parameter, and an id of 2**63 or more made PostgreSQL fail the statement
("bigint out of range"): a 500. Such an id names no row, so it is no match here, a 404, before
any SQL runs.
"""

from __future__ import annotations

from django.urls import register_converter

MAX_ID = 2**63 - 1  # PostgreSQL bigint, the type of every id (BigAutoField)


class IdConverter:
    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > MAX_ID:
            raise ValueError(f"{value} is beyond any id")  # Django answers no match: 404
        return number

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(IdConverter, "id")
