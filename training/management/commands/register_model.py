"""Register a base model from the command line: the same checks as the page and the API.

    manage.py register_model --project demo --name llama --dir llama-3.2-1b
    manage.py register_model --project demo --name smol --gguf smol/SmolLM2.Q4_1.gguf --now
    manage.py register_model --project demo --name qwen --hub Qwen/Qwen2.5-0.5B-Instruct

Paths are relative to the models root (settings.MODEL_IMPORT_ROOT). Without --now the worker
does the copying and checking; with --now this process does it and reports the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling.errors import Invalid
from labeling.models import Project
from training import registry
from training.models import RegistrationStatus


class Command(BaseCommand):
    help = "Register a base model (a directory or GGUF file under the models root, or a hub name)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="The project's slug.")
        parser.add_argument("--name", required=True, help="The model version's name.")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--dir", help="A model directory under the models root.")
        source.add_argument("--gguf", help="A .gguf file under the models root.")
        source.add_argument("--hub", help="A hub name, downloaded by the worker.")
        parser.add_argument("--revision", default="", help="Hub revision.")
        parser.add_argument(
            "--chat-template-file",
            type=Path,
            help="A Jinja chat template, used when the model's tokenizer has none.",
        )
        parser.add_argument(
            "--now", action="store_true", help="Copy and check it here instead of on a worker."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"No project with the slug {options['project']!r}.")
        kind, source = next(
            (kind, options[option])
            for kind, option in (("directory", "dir"), ("gguf", "gguf"), ("hub", "hub"))
            if options[option]
        )
        template = ""
        if options["chat_template_file"]:
            try:
                template = options["chat_template_file"].read_text()
            except OSError as exc:
                raise CommandError(f"The chat template could not be read: {exc}") from exc
        try:
            registration = registry.registration_create(
                project=project,
                name=options["name"],
                source_kind=kind,
                source=source,
                revision=options["revision"],
                default_chat_template=template,
                send=not options["now"],
            )
        except Invalid as exc:
            raise CommandError(exc.message) from exc
        if not options["now"]:
            self.stdout.write(f"Registration {registration.pk} sent to a worker.")
            return
        done = registry.registration_execute(registration_id=registration.pk)
        if done is None or done.status != RegistrationStatus.READY:
            raise CommandError(f"Refused: {done.error if done else 'deleted meanwhile'}")
        info = done.info
        self.stdout.write(
            f"Registered {done.name}: {info['architecture']}, "
            f"{info['parameters']:,} parameters, {info['dtype']}, "
            f"{info['size_bytes'] / 2**20:,.0f} MiB."
        )
