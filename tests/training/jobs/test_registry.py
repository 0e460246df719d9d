"""Registering a base model (training/registry.py) from the page, the API and the command: a
good directory becomes a model version after the worker's checks; each bad input is refused with
its reason and nothing is registered."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
import torch
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from labeling.errors import Invalid
from labeling.models import ModelVersion
from tests.factories import api_key
from tests.training.engine.toy_model import build_toy_model
from tests.worker import database_url, purge_queues, start_worker, wait_until
from training import registry, storage
from training.models import ModelRegistration, RegistrationStatus

TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant: "


@pytest.fixture
def roots(settings, tmp_path):
    settings.MODEL_IMPORT_ROOT = tmp_path / "import"
    settings.MODEL_ROOT = tmp_path / "models"
    settings.MODEL_IMPORT_ROOT.mkdir()
    settings.MODEL_ROOT.mkdir()
    return settings.MODEL_IMPORT_ROOT


@pytest.fixture
def toy(roots):
    """A model directory an admin put under the models root."""
    return build_toy_model(roots / "team" / "toy", dropout=0.0)


def _register(project, **kwargs):
    defaults = {"name": "toy", "source_kind": "directory", "source": "team/toy", "send": False}
    return registry.registration_create(project=project, **{**defaults, **kwargs})


@pytest.mark.django_db
def test_a_directory_under_the_root_becomes_a_base_model_a_run_can_load(project, toy):
    registration = _register(project, default_chat_template=TEMPLATE)
    assert registration.status == RegistrationStatus.PENDING
    assert not ModelVersion.objects.filter(project=project, name="toy").exists()

    done = registry.registration_execute(registration_id=registration.pk)

    assert done.status == RegistrationStatus.READY, done.error
    assert done.info["architecture"] == "GPT2LMHeadModel"
    assert done.info["parameters"] > 0 and done.info["dtype"] == "float32"
    version = done.model_version
    assert version.kind == "base" and version.name == "toy"
    path = Path(storage.model_path(version))  # the path every run loads through
    assert path.parent == Path(django_settings.MODEL_ROOT).resolve()
    assert (path / "model.safetensors").is_file()
    assert version.artifact_uri == f"file://{path}" and len(version.sha256) == 64
    assert "model.safetensors" in (path / "manifest.json").read_text(), "published, manifest last"
    assert toy.is_dir(), "the admin's copy stays where it was"
    # A second delivery of the same message changes nothing.
    assert registry.registration_execute(registration_id=registration.pk).model_version == version


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "source", "reason"),
    [
        ("directory", "../outside", "outside the models root"),
        ("directory", "/etc", "outside the models root"),
        ("directory", "team/missing", "No directory"),
        ("directory", "", "Give the model's path"),
        ("directory", "team/\x00toy", "Give the model's path"),
        ("gguf", "team/toy/config.json", "No .gguf file"),
        ("hub", "org/model/extra", "not a hub name"),
        ("hub", "../../etc/passwd", "not a hub name"),
        ("pickle", "team/toy", "The source is one of"),
    ],
)
def test_bad_sources_are_refused_before_anything_is_recorded(project, toy, kind, source, reason):
    with pytest.raises(Invalid, match=reason):
        _register(project, source_kind=kind, source=source)
    assert not ModelRegistration.objects.exists()


@pytest.mark.django_db
def test_a_symlink_out_of_the_root_is_refused(project, roots, tmp_path):
    outside = build_toy_model(tmp_path / "elsewhere", dropout=0.0)
    os.symlink(outside, roots / "sneaky")
    with pytest.raises(Invalid, match="outside the models root"):
        _register(project, source="sneaky")
    assert not ModelRegistration.objects.exists()


@pytest.mark.django_db
def test_a_name_already_taken_is_refused(project, toy):
    ModelVersion.objects.create(project=project, name="toy", kind="base", path="x")
    with pytest.raises(Invalid, match="already has a model named"):
        _register(project)
    ModelVersion.objects.filter(name="toy").delete()
    _register(project, default_chat_template=TEMPLATE)
    with pytest.raises(Invalid, match="already being registered"):
        _register(project)


@pytest.mark.django_db
def test_a_refused_model_is_not_registered_and_leaves_no_files(project, toy):
    (toy / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, toy / "pytorch_model.bin")
    registration = _register(project)

    done = registry.registration_execute(registration_id=registration.pk)

    assert done.status == RegistrationStatus.FAILED
    assert "pickle weights" in done.error
    assert done.model_version is None
    assert not ModelVersion.objects.filter(project=project).exists()
    assert not list(Path(django_settings.MODEL_ROOT).iterdir()), "nothing half-imported stays"
    # Refused names can be tried again once fixed.
    _register(project, default_chat_template=TEMPLATE)


@pytest.mark.django_db
def test_the_command_registers_a_directory_now_and_reports_its_facts(project, toy, capsys):
    (toy / "chat_template.jinja").write_text(TEMPLATE)
    call_command("register_model", project=project.slug, name="toy", dir="team/toy", now=True)
    out = capsys.readouterr().out
    assert "Registered toy: GPT2LMHeadModel" in out and "parameters" in out
    assert ModelVersion.objects.get(project=project, name="toy").kind == "base"


@pytest.mark.django_db
def test_the_command_says_why_a_model_is_refused(project, toy):
    with pytest.raises(CommandError, match="no chat template"):
        call_command("register_model", project=project.slug, name="toy", dir="team/toy", now=True)
    with pytest.raises(CommandError, match="outside the models root"):
        call_command("register_model", project=project.slug, name="x", dir="../x", now=True)
    with pytest.raises(CommandError, match="No project"):
        call_command("register_model", project="nope", name="x", dir="team/toy", now=True)
    assert not ModelVersion.objects.filter(project=project).exists()


# --- the API -------------------------------------------------------------------------------------


def _api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_key(user)}")
    return client


@pytest.mark.django_db
def test_an_admin_registers_through_the_api_and_follows_it(project, personas, toy):
    url = f"/api/v1/projects/{project.pk}/model-registrations/"
    body = {"name": "toy", "source_kind": "directory", "source": "team/toy",
            "default_chat_template": TEMPLATE, "revision": ""}  # blank: as the client sends  # fmt: skip
    response = _api(personas.admin).post(url, body, format="json")
    assert response.status_code == 202, response.content
    created = response.json()
    assert created["status"] == "pending" and created["model_version"] is None

    registry.registration_execute(registration_id=created["id"])  # what the worker does

    detail = _api(personas.admin).get(f"{url}{created['id']}/").json()
    assert detail["status"] == "ready" and detail["info"]["architecture"] == "GPT2LMHeadModel"
    listed = _api(personas.admin).get(url).json()["results"]
    assert [r["id"] for r in listed] == [created["id"]]
    models = _api(personas.reviewer).get(f"/api/v1/projects/{project.pk}/models/").json()
    assert any(m["id"] == detail["model_version"] for m in models["results"])


@pytest.mark.django_db
def test_the_api_refuses_bad_bodies_and_lower_roles(project, personas, toy):
    url = f"/api/v1/projects/{project.pk}/model-registrations/"
    good = {"name": "toy", "source_kind": "directory", "source": "team/toy"}
    assert _api(personas.alice).post(url, good, format="json").status_code == 403
    assert _api(personas.reviewer).get(url).status_code == 403
    assert _api(personas.outsider).post(url, good, format="json").status_code == 404
    for bad, field in [
        ({**good, "source": "../../etc"}, "outside the models root"),
        ({**good, "source_kind": "pickle"}, "source_kind"),
        ({**good, "remote_code": True}, "remote_code"),
        ({**good, "name": ""}, "name"),
    ]:
        response = _api(personas.admin).post(url, bad, format="json")
        assert response.status_code == 400, (bad, response.content)
        assert field in response.content.decode(), (bad, response.content)
    assert _api(personas.admin).get(f"{url}999999/").status_code == 404
    assert not ModelRegistration.objects.exists()


@pytest.mark.django_db
def test_the_schema_documents_the_registration_endpoints(personas, client):
    client.force_login(personas.admin)
    schema = client.get("/api/schema/", {"format": "json"}).json()
    assert "/api/v1/projects/{project_id}/model-registrations/" in schema["paths"]
    assert "/api/v1/projects/{project_id}/models/" in schema["paths"]


# --- the page ------------------------------------------------------------------------------------


def _browser(user) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_an_admin_registers_from_the_page_and_sees_its_facts(project, personas, toy):
    url = f"/p/{project.slug}/models/"
    page = _browser(personas.admin).get(url)
    assert page.status_code == 200 and b'id="register-form"' in page.content
    assert b'data-key-focus="n"' in page.content
    form = {"name": "toy", "source_kind": "directory", "source": "team/toy",
            "default_chat_template": TEMPLATE}  # fmt: skip
    response = _browser(personas.admin).post(url, form)
    assert response.status_code == 302
    registration = ModelRegistration.objects.get(project=project)
    live = _browser(personas.admin).get(url, headers={"HX-Request": "true"})
    assert b"every 2s" in live.content and b"<html" not in live.content  # the fragment, polling

    registry.registration_execute(registration_id=registration.pk)

    page = _browser(personas.admin).get(url).content.decode()
    assert "GPT2LMHeadModel" in page and "float32" in page and "Registered" in page
    assert "every 2s" not in page  # nothing left to follow
    registration.refresh_from_db()
    lineage = _browser(personas.reviewer).get(
        f"/p/{project.slug}/models/{registration.model_version_id}/"
    )
    assert b'id="registration-facts"' in lineage.content
    assert b"GPT2LMHeadModel (gpt2)" in lineage.content


@pytest.mark.django_db
def test_the_page_shows_a_refusal_on_the_field_and_keeps_lower_roles_out(project, personas, toy):
    url = f"/p/{project.slug}/models/"
    bad = {"name": "toy", "source_kind": "directory", "source": "../../etc"}
    response = _browser(personas.admin).post(url, bad)
    assert response.status_code == 200 and "outside the models root" in response.content.decode()
    assert _browser(personas.reviewer).post(url, bad).status_code == 403
    reviewer_page = _browser(personas.reviewer).get(url)
    assert reviewer_page.status_code == 200 and b"register-form" not in reviewer_page.content
    assert _browser(personas.outsider).get(url).status_code == 404
    assert not ModelRegistration.objects.exists()


# --- through a real worker -----------------------------------------------------------------------


@pytest.mark.worker
@pytest.mark.slow
def test_the_worker_registers_a_model_sent_through_the_broker(transactional_db, project, tmp_path):
    """As in production: the request sends a message; the worker copies, checks, registers."""
    folder = f"test-{uuid.uuid4().hex[:8]}"
    source = build_toy_model(Path(django_settings.MODEL_IMPORT_ROOT) / folder, dropout=0.0)
    (source / "chat_template.jinja").write_text(TEMPLATE)
    purge_queues()
    env = dict(os.environ, DATABASE_URL=database_url(connection.settings_dict))
    env.pop("TEST_DATABASE_NAME", None)
    worker = start_worker(env=env, log_path=tmp_path / "worker.log")
    try:
        registration = registry.registration_create(
            project=project, name="toy", source_kind="directory", source=folder
        )
        registry.registration_send(registration.pk)  # no transaction here to commit first
        done = wait_until(
            lambda: ModelRegistration.objects.filter(
                pk=registration.pk, status__in=["ready", "failed"]
            ).first(),
            timeout=120,
        )
    finally:
        worker.stop()
        shutil.rmtree(source, ignore_errors=True)
    assert done.status == "ready", done.error + worker.log()[-3000:]
    assert (Path(storage.model_path(done.model_version)) / "model.safetensors").is_file()
    shutil.rmtree(storage.model_path(done.model_version), ignore_errors=True)


@pytest.mark.django_db
@pytest.mark.slow
def test_the_demo_registers_smollm2_from_its_gguf_file(roots, capsys):
    """seed_demo puts the GGUF under the models root and registers it as an admin would; the
    worker's step dequantises it into a Llama base model with its tokenizer and chat template."""
    call_command("seed_demo", no_real_model=True)
    assert not ModelRegistration.objects.exists()
    call_command("seed_demo")
    registration = ModelRegistration.objects.get(name="smollm2-135m-instruct")
    assert (registration.source_kind, registration.status) == ("gguf", "pending")
    assert (roots / registration.source).is_file()

    done = registry.registration_execute(registration_id=registration.pk)

    assert done.status == "ready", done.error
    assert done.info["architecture"] == "LlamaForCausalLM"
    assert done.info["parameters"] == 134_515_008
    assert done.info["chat_template"] == "model" and done.info["vocab_size"] == 49_152
    call_command("seed_demo")  # idempotent: nothing registered twice
    assert ModelRegistration.objects.filter(name="smollm2-135m-instruct").count() == 1
