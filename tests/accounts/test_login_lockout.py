"""Failed logins: N wrong passwords on any of the three login surfaces lock the client address and
the account out, with a 429 and Retry-After, the right password included, until the cool-off
has passed (django-axes, configured in settings; accounts/lockout.py). Each test says what it
tried; on the code before the lockout every one of these tries was simply answered again."""

from __future__ import annotations

import logging

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import F
from django.test import RequestFactory
from rest_framework.test import APIClient

from accounts import lockout
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-tests-123"
SURFACES = {
    "login page": "/accounts/login/",
    "django admin": "/django-admin/login/",
    "api token": "/api/v1/auth/token/",
}
LIMIT = settings.AXES_FAILURE_LIMIT
COOLOFF = int(settings.AXES_COOLOFF_TIME.total_seconds())


@pytest.fixture
def staff(db):
    return UserFactory(username="sam_staff", is_staff=True)


@pytest.fixture
def bob(db):
    return UserFactory(username="bob_labeler")


def attempt(surface: str, username: str, password: str, address: str = "198.51.100.7"):
    url = SURFACES[surface]
    client = APIClient()
    if surface == "api token":
        return client.post(
            url, {"username": username, "password": password}, format="json", REMOTE_ADDR=address
        )
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def logged_in(surface: str, response) -> bool:
    if surface == "api token":
        return response.status_code == 200 and "token" in response.json()
    return response.status_code == 302  # to the next page; a refused form is a 200 page


def locked_out(response) -> bool:
    return response.status_code == 429 and 0 < int(response["Retry-After"]) <= COOLOFF


def cool_off_passes() -> None:
    """Every failure ages past the cool-off (as if COOLOFF seconds had gone by)."""
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - settings.AXES_COOLOFF_TIME)


@pytest.mark.parametrize("surface", SURFACES)
def test_n_wrong_passwords_lock_out_even_the_right_one_until_the_cool_off(surface, staff):
    answers = [attempt(surface, "sam_staff", f"wrong-{i}") for i in range(LIMIT)]
    assert not any(locked_out(a) or logged_in(surface, a) for a in answers[:-1])
    assert locked_out(answers[-1])
    assert COOLOFF - 5 <= int(answers[-1]["Retry-After"]) <= COOLOFF

    right = attempt(surface, "sam_staff", PASSWORD)
    assert locked_out(right) and not logged_in(surface, right)
    # More tries while locked out do not push the end of the lockout back.
    assert AccessAttempt.objects.get().failures_since_start == LIMIT

    cool_off_passes()
    assert logged_in(surface, attempt(surface, "sam_staff", PASSWORD))


def test_the_locked_out_login_page_says_so_and_how_long_to_wait(staff):
    for i in range(LIMIT):
        response = attempt("login page", "sam_staff", f"wrong-{i}")
    assert response.status_code == 429
    assert b"Too many failed log-ins" in response.content
    assert f"Try again in {COOLOFF // 60} minutes".encode() in response.content


def test_the_locked_out_token_endpoint_answers_json_with_retry_after(staff):
    for i in range(LIMIT):
        response = attempt("api token", "sam_staff", f"wrong-{i}")
    assert response.status_code == 429
    assert "Too many failed log-ins" in response.json()["detail"]
    assert "token" not in response.json()


def test_failures_on_many_accounts_from_one_address_lock_that_address(staff, bob):
    """Password spraying: one wrong password each for N accounts from one address."""
    accounts = [UserFactory(username=f"sprayed{i}").username for i in range(LIMIT)]
    answers = [attempt("api token", name, "Winter2026!", "203.0.113.9") for name in accounts]
    assert [a.status_code for a in answers] == [400] * (LIMIT - 1) + [429]
    # The address is locked for every account, bob's right password included ...
    assert locked_out(attempt("login page", "bob_labeler", PASSWORD, "203.0.113.9"))
    # ... and none of the accounts is: each had one failure.
    assert logged_in("api token", attempt("api token", accounts[0], PASSWORD, "192.0.2.1"))


def test_failures_on_one_account_from_many_addresses_lock_that_account(staff, bob):
    """A botnet: N wrong passwords for one account, each from a different address."""
    answers = [
        attempt("login page", "bob_labeler", f"wrong-{i}", f"192.0.2.{i + 1}") for i in range(LIMIT)
    ]
    assert [a.status_code for a in answers] == [200] * (LIMIT - 1) + [429]
    fresh = "198.18.0.1"
    assert locked_out(attempt("api token", "bob_labeler", PASSWORD, fresh))
    assert locked_out(attempt("django admin", "bob_labeler", PASSWORD, fresh))
    # The fresh address is not locked: another account logs in from it.
    assert logged_in("django admin", attempt("django admin", "sam_staff", PASSWORD, fresh))


def test_failures_on_the_three_surfaces_add_up(staff):
    surfaces = list(SURFACES)
    answers = [attempt(surfaces[i % 3], "sam_staff", f"wrong-{i}") for i in range(LIMIT)]
    assert locked_out(answers[-1]) and not any(locked_out(a) for a in answers[:-1])


def test_fewer_than_n_failures_then_the_right_password_logs_in(staff):
    for i in range(LIMIT - 1):
        attempt("login page", "sam_staff", f"wrong-{i}")
    assert logged_in("login page", attempt("login page", "sam_staff", PASSWORD))


def test_a_lockout_is_logged_with_the_account_and_address(staff, caplog):
    caplog.set_level(logging.WARNING)
    for i in range(LIMIT):
        attempt("api token", "sam_staff", f"wrong-{i}", "203.0.113.77")
    attempt("login page", "sam_staff", PASSWORD, "203.0.113.77")
    refused = [r.getMessage() for r in caplog.records if r.name == "accounts.lockout"]
    assert len(refused) == 2
    assert "surface=api token" in refused[0] and "surface=login page" in refused[1]
    assert all("'sam_staff'" in m and "203.0.113.77" in m for m in refused)
    assert any("Locking out" in r.getMessage() for r in caplog.records if r.name.startswith("axes"))


def test_a_forged_x_forwarded_for_does_not_change_the_address_without_a_trusted_proxy(staff):
    """Rotating X-Forwarded-For on every try, straight to the app (TRUSTED_PROXIES=0)."""
    client = APIClient()
    for i in range(LIMIT):
        response = client.post(
            SURFACES["api token"],
            {"username": f"nobody{i}", "password": "x"},
            format="json",
            REMOTE_ADDR="203.0.113.50",
            HTTP_X_FORWARDED_FOR=f"10.0.0.{i}",
        )
    assert response.status_code == 429


@pytest.mark.parametrize(
    ("proxies", "forwarded", "address"),
    [
        (0, "10.9.9.9", "192.0.2.10"),  # no trusted proxy: the header is the client's word
        (1, "10.9.9.9, 203.0.113.4", "203.0.113.4"),  # our proxy appended the real address
        (2, "10.9.9.9, 203.0.113.4, 172.16.0.2", "203.0.113.4"),
        (1, "", "192.0.2.10"),  # no header: the connection's address
        (2, "203.0.113.4", "192.0.2.10"),  # shorter than the proxy chain: not trusted
        (1, "not-an-address", "192.0.2.10"),  # garbage is not stored as an address
        (1, "203.0.113.4\x00", "192.0.2.10"),
    ],
)
def test_the_client_address_is_taken_from_trusted_proxies_only(
    settings, proxies, forwarded, address
):
    settings.TRUSTED_PROXIES = proxies
    request = RequestFactory().get("/", REMOTE_ADDR="192.0.2.10", HTTP_X_FORWARDED_FOR=forwarded)
    assert lockout.client_ip(request) == address


def test_behind_a_trusted_proxy_failures_count_against_the_clients_address(settings, staff):
    settings.TRUSTED_PROXIES = 1
    client = APIClient()

    def via_proxy(client_address: str, password: str):
        return client.post(
            SURFACES["api token"],
            {"username": "sam_staff", "password": password},
            format="json",
            REMOTE_ADDR="172.17.0.1",  # the proxy
            HTTP_X_FORWARDED_FOR=f"10.6.6.6, {client_address}",  # the left one is forged
        )

    for i in range(LIMIT):
        via_proxy("203.0.113.200", f"wrong-{i}")
    stored = set(AccessAttempt.objects.values_list("ip_address", flat=True))
    assert stored == {"203.0.113.200"}  # the client's address, not the proxy's
