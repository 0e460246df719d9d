"""The client's dataclasses against the OpenAPI schema the server generates (drf-spectacular, in
this process): a field added to, renamed in or dropped from a response fails here, rather than
reaching scripts as a silently missing attribute."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from drf_spectacular.generators import SchemaGenerator

from instructloop import client

TYPED = [
    cls
    for _, cls in inspect.getmembers(client, inspect.isclass)
    if dataclasses.is_dataclass(cls) and "__schema__" in vars(cls)
]


@pytest.fixture(scope="module")
def components() -> dict:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return schema["components"]["schemas"]


def test_every_dataclass_of_the_client_names_its_schema_component():
    untyped = {
        cls.__name__
        for _, cls in inspect.getmembers(client, inspect.isclass)
        if dataclasses.is_dataclass(cls) and "__schema__" not in vars(cls)
    }
    assert untyped == set(), untyped
    assert len(TYPED) >= 20


@pytest.mark.parametrize("cls", TYPED, ids=lambda c: c.__name__)
def test_a_dataclass_has_exactly_the_fields_of_its_schema_component(cls, components):
    expected = set(components[cls.__schema__]["properties"])
    detail = vars(cls).get("__schema_detail__")
    if detail is not None:  # a run or round read on its own: the detail's other fields too
        name, holder = detail
        expected |= set(components[name]["properties"]) - {holder}
    got = {f.name for f in dataclasses.fields(cls)}
    assert got == expected, (
        f"{cls.__name__} vs {cls.__schema__}: missing {sorted(expected - got)},"
        f" not in the schema {sorted(got - expected)}"
    )


def test_the_client_module_imports_no_django():
    import subprocess
    import sys

    code = (
        "import sys, instructloop.client; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'celery', 'rest_framework'}))"
    )
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=client.__file__.rsplit("/instructloop/", 1)[0],
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
