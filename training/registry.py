"""Registering a base model: the admin's request is checked at once (name, a path that stays
under the models root, a hub name's shape), then a worker brings the model in and checks it
(training/engine/model_files.py). Only a model that passes becomes a ModelVersion."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from kombu.exceptions import KombuError

from labeling.errors import Invalid
from labeling.models import ModelVersion, Project

from . import storage
from .models import ModelRegistration, RegistrationStatus, SourceKind

REGISTER_TASK = "training.tasks.register_model"
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")
logger = logging.getLogger(__name__)


def _invalid(message: str, key: str) -> Invalid:
    return Invalid(message, details=[{"key": key, "error": message}])


def import_root() -> Path:
    return settings.MODEL_IMPORT_ROOT


def source_path(*, kind: str, source: str) -> Path:
    """The file or directory a registration names, refused if it leaves the models root (`..`,
    an absolute path, a symlink out) or is not there."""
    root = import_root().resolve()
    raw = source.strip()
    if not raw or "\x00" in raw:
        raise _invalid("Give the model's path under the models root.", "source")
    candidate = (root / raw).resolve()
    if candidate != root and not str(candidate).startswith(str(root) + "/"):
        raise _invalid(
            f"{raw!r} is outside the models root ({root}); only models there can be registered.",
            "source",
        )
    if kind == SourceKind.DIRECTORY and not candidate.is_dir():
        raise _invalid(f"No directory {raw!r} under the models root ({root}).", "source")
    if kind == SourceKind.GGUF and not (candidate.is_file() and candidate.suffix == ".gguf"):
        raise _invalid(f"No .gguf file {raw!r} under the models root ({root}).", "source")
    return candidate


def registration_create(
    *,
    project: Project,
    name: str,
    source_kind: str,
    source: str,
    revision: str = "",
    default_chat_template: str = "",
    created_by: Any = None,
    send: bool = True,
) -> ModelRegistration:
    """Record the request and send it to a worker once committed. Bad input is refused here,
    with nothing recorded."""
    name = name.strip()
    if not name:
        raise _invalid("Name the model.", "name")
    if source_kind not in SourceKind.values:
        raise _invalid(
            f"The source is one of {', '.join(SourceKind.values)}, not {source_kind!r}.",
            "source_kind",
        )
    source = source.strip()
    if source_kind == SourceKind.HUB:
        if not HUB_NAME.match(source):
            raise _invalid(f"{source!r} is not a hub name like 'org/model'.", "source")
    else:
        source_path(kind=source_kind, source=source)  # refuse now, not in the worker
    if ModelVersion.objects.filter(project=project, name=name).exists():
        raise _invalid(f"The project already has a model named {name!r}.", "name")
    try:
        with transaction.atomic():
            registration = ModelRegistration.objects.create(
                project=project,
                name=name,
                source_kind=source_kind,
                source=source,
                revision=revision.strip(),
                default_chat_template=default_chat_template,
                created_by=created_by,
            )
    except IntegrityError as exc:
        raise _invalid(f"{name!r} is already being registered.", "name") from exc
    if send:
        transaction.on_commit(lambda: registration_send(registration.pk))
    return registration


def registration_send(registration_id: int) -> bool:
    """Put the registration on the gpu queue (the worker that will load the model checks it).
    A broker that cannot be reached leaves it pending with the reason shown."""
    try:
        current_app.send_task(REGISTER_TASK, args=(registration_id,))
    except (KombuError, OSError) as exc:
        logger.warning("registration %s not sent: %s", registration_id, exc)
        ModelRegistration.objects.filter(pk=registration_id).update(
            error=f"Not sent yet: the broker could not be reached ({exc})."
        )
        return False
    ModelRegistration.objects.filter(pk=registration_id, error__startswith="Not sent").update(
        error=""
    )
    return True


def registrations_unsent() -> list[int]:
    return list(
        ModelRegistration.objects.filter(
            status=RegistrationStatus.PENDING, error__startswith="Not sent"
        ).values_list("pk", flat=True)
    )


def _target(registration: ModelRegistration) -> tuple[Path, str]:
    name = f"base-{registration.pk}-{registration.created_at:%Y%m%d%H%M%S%f}"
    return settings.MODEL_ROOT / name, name


def registration_execute(*, registration_id: int) -> ModelRegistration | None:
    """Worker side: claim the registration, bring the model in, check it, register it or say why
    not. Idempotent: a redelivered message finds it claimed or finished."""
    from training.engine import model_files  # torch: only on the worker

    claimed = ModelRegistration.objects.filter(
        pk=registration_id, status=RegistrationStatus.PENDING
    ).update(status=RegistrationStatus.VALIDATING, error="")
    registration = ModelRegistration.objects.filter(pk=registration_id).first()
    if registration is None or not claimed:
        return registration  # deleted with its project, or claimed by another delivery
    target, relative = _target(registration)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    source = registration.source
    try:
        if registration.source_kind != SourceKind.HUB:
            source = str(source_path(kind=registration.source_kind, source=source))
        info = model_files.import_model(
            registration.source_kind,
            source,
            partial,
            default_chat_template=registration.default_chat_template,
            revision=registration.revision,
        )
    except (model_files.ModelRejected, Invalid) as exc:
        return _fail(registration, str(exc))
    except Exception as exc:  # noqa: BLE001 - anything else is still a refusal with its reason
        logger.exception("registration %s failed", registration_id)
        return _fail(registration, f"{type(exc).__name__}: {exc}")
    try:
        published = storage.model_store().publish(
            partial, relative, move=True, cache=settings.ARTIFACT_CACHE
        )
    except Exception as exc:  # noqa: BLE001 - the store could not take it (a bucket unreachable)
        logger.exception("registration %s not published", registration_id)
        shutil.rmtree(partial, ignore_errors=True)
        return _fail(registration, f"Not stored: {type(exc).__name__}: {exc}")
    try:
        with transaction.atomic():
            version = ModelVersion.objects.create(
                project=registration.project,
                name=registration.name,
                kind=ModelVersion.Kind.BASE,
                path=published.key,
                artifact_uri=published.uri,
                sha256=published.sha256,
                metrics={"registered_from": f"{registration.source_kind}:{registration.source}"},
            )
            registration.status = RegistrationStatus.READY
            registration.info = info
            registration.model_version = version
            registration.finished_at = timezone.now()
            registration.save()
    except IntegrityError:
        storage.model_unpublish(key=published.key)
        return _fail(registration, f"The project already has a model named {registration.name!r}.")
    return registration


def _fail(registration: ModelRegistration, reason: str) -> ModelRegistration:
    registration.status = RegistrationStatus.FAILED
    registration.error = reason[:4000]
    registration.finished_at = timezone.now()
    registration.save(update_fields=["status", "error", "finished_at"])
    return registration
