"""Create, or top up, the demo project: one account per role, prompts, tasks, the tiny base model.

Idempotent: a second run finds everything in place and creates nothing. Prompts and ranking tasks
go through the same import path as an admin's JSONL upload (labeling.imports + services).
Refuses to run in production: the demo accounts have published passwords.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from labeling import services
from labeling.imports import messages_hash, parse_prompts, parse_ranking_tasks
from labeling.models import ModelVersion, Project, Prompt, Role, Task
from training import registry, storage
from training.demo import families, smollm2
from training.models import ModelRegistration

SLUG = "demo"
PROMPTS = 40
RANKING_TASKS = 8
TINY_BASE = "tiny-base"  # under the model root; `python -m training.demo.base_model` builds it
SMOL_NAME = "smollm2-135m-instruct"
SMOL_IMPORT = f"demo/{smollm2.GGUF_FILE}"  # under the models root (settings.MODEL_IMPORT_ROOT)

# (username, password, project role, Django superuser)
ACCOUNTS = [
    ("admin", "demo-admin-pw", Role.ADMIN, True),
    ("reviewer", "demo-reviewer-pw", Role.REVIEWER, False),
    ("labeler1", "demo-labeler1-pw", Role.LABELER, False),
    ("labeler2", "demo-labeler2-pw", Role.LABELER, False),
]

GUIDELINES = """\
# Demo guidelines

Write the answer a careful, helpful assistant would give.

- **Follow the instruction exactly**: the number of items, the format, the words asked for.
- **Be truthful**: do not make things up. If the prompt cannot be answered, say so.
- **Be brief**: no filler sentences around the answer.

When ranking, put the most helpful answer first. Ties are allowed when two answers are
equally good. Rate each answer 1-7 and tick the flags that apply.
"""


def _prompt_texts() -> list[str]:
    return families.sample_prompts(PROMPTS, seed=0)


def _completions(prompt: str, index: int) -> list[dict[str, str]]:
    """Four distinct answers of mixed quality, so a ranking has something to decide."""
    texts = [
        families.gold_response(prompt),
        families.flawed_response(prompt, seed=index),
        families.flawed_response(prompt, seed=index + 1000),
        families.gold_response(prompt) + " " + families.filler_sentence(seed=index),
    ]
    # The demo families may produce two equal flawed answers; the import refuses duplicates.
    unique = list(dict.fromkeys(texts))
    while len(unique) < 4:
        unique.append(f"Answer variant {len(unique) + 1}: {texts[0]}")
    return [{"text": text, "model": "demo-canned"} for text in unique[:4]]


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


class Command(BaseCommand):
    help = "Create or top up the demo project with accounts for each role (idempotent)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--no-real-model",
            action="store_true",
            help="Do not register SmolLM2 (its dequantising keeps a worker busy for a minute).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PRODUCTION:
            raise CommandError("seed_demo creates accounts with published passwords: not here.")
        with transaction.atomic():
            users = self._accounts()
            project = self._project(creator=users["admin"])
            for username, _, role, _ in ACCOUNTS:
                services.membership_set(project=project, user=users[username], role=role)
            self._base_model(project)
            if not options["no_real_model"]:
                self._real_model(project, creator=users["admin"])
            self._prompts(project)
            self._ranking_tasks(project)
        self._report(project)

    def _accounts(self) -> dict[str, Any]:
        User = get_user_model()
        users = {}
        for username, password, _, superuser in ACCOUNTS:
            user, created = User.objects.get_or_create(username=username)
            if created:
                user.set_password(password)
                user.is_staff = user.is_superuser = superuser
                user.save()
            users[username] = user
        return users

    def _project(self, *, creator: Any) -> Project:
        project = Project.objects.filter(slug=SLUG).first()
        if project is not None:
            return project
        return services.project_create(
            name="Demo: instruction following",
            slug=SLUG,
            creator=creator,
            guidelines=GUIDELINES,
            k=4,
            overlap=2,
            demo_overlap=1,
        )

    def _base_model(self, project: Project) -> None:
        base, _ = ModelVersion.objects.get_or_create(
            project=project,
            name=TINY_BASE,
            defaults={"kind": ModelVersion.Kind.BASE, "path": TINY_BASE},
        )
        if project.base_model_id != base.pk:
            project.base_model = base
            project.save(update_fields=["base_model"])
        path = storage.model_root() / TINY_BASE
        if not path.is_dir():
            self.stdout.write(
                f"Note: {path} does not exist yet; build it with "
                f"`python -m training.demo.base_model --out {path}`."
            )
        elif settings.ARTIFACTS and storage.model_adopt(version=base):
            self.stdout.write(f"Published {TINY_BASE} to {base.artifact_uri}.")

    def _real_model(self, project: Project, *, creator: Any) -> None:
        """SmolLM2-135M-Instruct, registered the way an admin registers a GGUF file: copied under
        the models root, then dequantised and checked by the worker (the tiny model stays the
        default base: tests and CPU speed)."""
        if (
            ModelRegistration.objects.filter(project=project, name=SMOL_NAME)
            .exclude(status=ModelRegistration.Status.FAILED)
            .exists()
        ):
            return
        try:
            source = smollm2.gguf_path()
        except FileNotFoundError as exc:
            self.stdout.write(f"Note: no SmolLM2 in the demo: {exc}")
            return
        target = registry.import_root() / SMOL_IMPORT
        if not target.is_file() or target.stat().st_size != source.stat().st_size:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target.with_suffix(".partial"))
            target.with_suffix(".partial").replace(target)
        registry.registration_create(
            project=project,
            name=SMOL_NAME,
            source_kind=ModelRegistration.SourceKind.GGUF,
            source=SMOL_IMPORT,
            created_by=creator,
        )
        self.stdout.write(f"{SMOL_NAME}: registered; the worker dequantises and checks it.")

    def _prompts(self, project: Project) -> None:
        known = set(Prompt.objects.filter(project=project).values_list("content_hash", flat=True))
        new = [
            {"prompt": text}
            for text in _prompt_texts()
            if messages_hash([{"role": "user", "content": text}]) not in known
        ]
        if not new:
            return
        rows = parse_prompts("demo.jsonl", _jsonl(new), max_bytes=settings.IMPORT_MAX_BYTES)
        services.prompts_import(project=project, rows=rows, source="seed_demo")

    def _ranking_tasks(self, project: Project) -> None:
        ranked = set(
            Task.objects.filter(project=project, kind=Task.Kind.RANKING).values_list(
                "prompt__text", flat=True
            )
        )
        chosen = _prompt_texts()[:RANKING_TASKS]
        records = [
            {"prompt": text, "completions": _completions(text, i)}
            for i, text in enumerate(chosen)
            if text not in ranked
        ]
        if not records:
            return
        rows = parse_ranking_tasks(
            "demo.jsonl", _jsonl(records), k=project.k, max_bytes=settings.IMPORT_MAX_BYTES
        )
        services.ranking_tasks_import(project=project, rows=rows, source="seed_demo")

    def _report(self, project: Project) -> None:
        tasks = Task.objects.filter(project=project)
        self.stdout.write(
            f"Demo project '{project.name}' (/p/{project.slug}/): "
            f"{project.prompts.count()} prompts, "
            f"{tasks.filter(kind=Task.Kind.DEMONSTRATION).count()} demonstration tasks, "
            f"{tasks.filter(kind=Task.Kind.RANKING).count()} ranking tasks (K={project.k})."
        )
        self.stdout.write("Demo accounts (username / password / role):")
        for username, password, role, _ in ACCOUNTS:
            self.stdout.write(f"  {username:<9} / {password:<17} / {role}")
