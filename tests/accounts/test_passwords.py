"""Passwords are hashed with Argon2; a password stored with an older hasher is re-hashed on login."""

from __future__ import annotations

import pytest
from django.contrib.auth.hashers import make_password
from django.test import Client

from instructloop import settings as project_settings
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def real_hashers(settings):
    # tests/django_fixtures.py swaps in a fast hasher for every test; this one needs the real list.
    settings.PASSWORD_HASHERS = project_settings.PASSWORD_HASHERS


def test_argon2_is_the_first_hasher():
    assert project_settings.PASSWORD_HASHERS[0].endswith("Argon2PasswordHasher")


def test_a_new_password_is_hashed_with_argon2id(real_hashers):
    user = UserFactory(username="nora_new")
    user.set_password("a long new password")
    assert user.password.startswith("argon2$argon2id$")


def test_a_pbkdf2_password_is_upgraded_to_argon2_at_the_next_login(real_hashers):
    user = UserFactory(username="olga_old")
    user.password = make_password("an old password", hasher="pbkdf2_sha256")
    user.save()
    response = Client().post(
        "/accounts/login/", {"username": "olga_old", "password": "an old password"}
    )
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.password.startswith("argon2$")
    assert user.check_password("an old password")
