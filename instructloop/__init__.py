"""The project package. `celery_app` is resolved on first use (PEP 562), not at import, so that a
script can `import instructloop.client` without Celery or Django; every Django process still
creates the Celery app as it boots, since the settings module imports it (instructloop/settings.py,
last lines), as `from .celery import app` here used to."""

from typing import Any

__all__ = ("celery_app",)


def __getattr__(name: str) -> Any:
    if name == "celery_app":
        from .celery import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
