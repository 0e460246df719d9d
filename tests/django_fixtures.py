"""The Django side's shared fixtures: the test database's teardown, fast password hashing, `now`,
a project with named personas, and the real Celery worker (tests/worker.py).

A pytest plugin that tests/conftest.py loads only when pytest-django is active, so that the
engine's tests run without Django (`pytest tests/training/engine -p no:django`).
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from labeling.models import Role

from .factories import ProjectFactory, member
from .worker import celery_worker  # noqa: F401 - a fixture for every test module


@pytest.fixture(scope="session", autouse=True)
def _no_stray_connections_at_teardown(django_db_setup, django_db_blocker):
    """Live-server and worker threads can leave a session open; the test DB is then not dropped."""
    yield
    from django.db import connection

    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    # PBKDF2 at production strength costs ~0.3 s a user; tests make hundreds of users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def project(db):
    return ProjectFactory(k=4, overlap=1)


@pytest.fixture
def personas(project):
    """Named people: admin, reviewer, two labelers, and an outsider with a project of their own."""

    class P:
        admin = member(project, "ada_admin", Role.ADMIN)
        reviewer = member(project, "rita_reviewer", Role.REVIEWER)
        alice = member(project, "alice_labeler")
        bob = member(project, "bob_labeler")
        other_project = ProjectFactory()
        outsider = member(other_project, "oscar_outsider", Role.ADMIN)

    return P
