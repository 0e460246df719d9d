"""The root of the test tree. It imports no Django: the Django fixtures (tests/django_fixtures.py)
are loaded only when pytest-django is active, so `pytest tests/training/engine -p no:django`
collects and runs without Django settings or a database."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    if not pluginmanager.has_plugin("django"):
        # pyproject's DJANGO_SETTINGS_MODULE is pytest-django's; without it, known and unused.
        parser.addini("DJANGO_SETTINGS_MODULE", "read by pytest-django (not active)")


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.has_plugin("django"):
        config.pluginmanager.import_plugin("tests.django_fixtures")
