"""`manage.py artifacts_publish`: publish the model versions from before the artifact store (their
folders under MODEL_ROOT, no sha256) into the store settings.ARTIFACTS names, so that workers on
other hosts can load them. Run it on a host that has var/models/, after pointing
INSTRUCTLOOP_ARTIFACTS at the bucket. Idempotent; hub names and missing folders are listed and
left as they are."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from labeling.models import ModelVersion
from training import storage


class Command(BaseCommand):
    help = __doc__.split("\n\n")[0]

    def handle(self, *args: Any, **options: Any) -> None:
        store = storage.model_store()
        for version in ModelVersion.objects.filter(sha256="").order_by("pk"):
            if storage.model_adopt(version=version):
                self.stdout.write(f"published {version.name}: {version.artifact_uri}")
            else:
                self.stdout.write(
                    f"left as it is: {version.name} ({version.path!r} is no folder here)"
                )
        self.stdout.write(f"Model versions are in {store.url}.")
