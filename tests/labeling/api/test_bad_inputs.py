"""Bad input answers 400 (or 404), never 500: ids beyond bigint, bodies nested 100k deep, an
unpaired surrogate echoed in an error."""

from __future__ import annotations

import json

import pytest

from labeling.models import Lease

from .conftest import entries_for

pytestmark = pytest.mark.django_db

BEYOND = [2**63, 2**64, 10**30]  # bigint's largest is 2**63 - 1
NESTED = "[" * 100_000 + "]" * 100_000  # 200 kB: under the body cap, past the recursion limit


@pytest.fixture
def api(client_for):
    """An API client that answers a server error as a response, as a real server does."""

    def make(user):
        client = client_for(user)
        client.raise_request_exception = False
        return client

    return make


@pytest.mark.parametrize("big", BEYOND)
@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("GET", "/api/v1/projects/{big}/"),
        ("POST", "/api/v1/projects/{big}/next/"),
        ("POST", "/api/v1/leases/{big}/ranking/"),
        ("GET", "/api/v1/leases/{big}/"),
        ("POST", "/api/v1/leases/{big}/heartbeat/"),
        ("POST", "/api/v1/leases/{big}/draft/"),
        ("GET", "/api/v1/projects/{big}/rankings/"),
        ("DELETE", "/api/v1/projects/{project}/members/{big}/"),
    ],
)
def test_an_id_beyond_bigint_in_the_path_is_a_404_before_any_sql_runs(
    project, personas, alice_leases, api, method, template, big
):
    """Before: PostgreSQL failed the hand-written statements on it ("bigint out of range")."""
    url = template.format(big=big, project=project.pk)
    body = {"kind": "ranking"} if url.endswith("next/") else {"text": "draft"}
    if url.endswith("ranking/"):
        body = {"entries": entries_for(alice_leases.ranking, [1, 2, 3, 4])}
    response = api(personas.admin if "members" in url else personas.alice).generic(
        method, url, json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"  # no route matched: handler404


@pytest.mark.parametrize(
    "path", ["/api/v1/leases/abc/", "/api/v1/projects/-1/runs/", "/api/v1/no-such-thing/"]
)
def test_an_api_path_that_matches_no_route_is_a_json_404(personas, api, path):
    """Before: Django's HTML "Not Found" page, on an API whose errors are JSON (schemathesis)."""
    response = api(personas.admin).get(path)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_a_page_that_matches_no_route_is_still_an_html_404(personas, client):
    client.force_login(personas.admin)
    response = client.get("/p/no-such-page/at/all/")
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")


def test_the_largest_bigint_is_still_an_id_and_simply_not_found(project, personas, api):
    response = api(personas.alice).post(
        f"/api/v1/projects/{2**63 - 1}/next/", {"kind": "ranking"}, format="json"
    )
    assert response.status_code == 404 and response.json() == {"detail": "No such project."}


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/projects/{project}/next/",
        "/api/v1/leases/{ranking}/ranking/",
        "/api/v1/leases/{demonstration}/draft/",
        "/api/v1/projects/",
        "/api/v1/projects/{project}/prompts/import/",
        "/api/v1/auth/token/",
    ],
)
def test_a_body_nested_100k_deep_is_a_400_saying_so(project, personas, alice_leases, api, url):
    """Before: json.load ran past Python's recursion limit, which DRF's parser does not catch."""
    url = url.format(
        project=project.pk,
        ranking=alice_leases.ranking.pk,
        demonstration=alice_leases.demonstration.pk,
    )
    who = personas.alice if "leases" in url or "next" in url else personas.admin
    response = api(who).generic("POST", url, NESTED, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"detail": "JSON parse error - the body is nested too deeply."}
    assert Lease.objects.filter(status="submitted").count() == 0


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("projects/{project}/next/", '{"kind": "\\ud800"}'),
        ("projects/{project}/next/", '{"kind": "ranking", "\\udfff": 1}'),
        (
            "leases/{ranking}/ranking/",
            '{"entries": [{"completion": "\\ud83d", "rank": 1, "likert": 1}]}',
        ),
    ],
    ids=["in-a-value", "in-a-field-name", "as-a-slot-letter"],
)
def test_an_unpaired_surrogate_echoed_in_an_error_is_a_json_400(
    project, personas, alice_leases, api, url, body
):
    """JSON may escape one; echoed back in the error, the answer's UTF-8 encode failed: a 500."""
    url = "/api/v1/" + url.format(project=project.pk, ranking=alice_leases.ranking.pk)
    response = api(personas.alice).generic("POST", url, body, content_type="application/json")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.content.isascii() and response.json()  # escaped: valid JSON, and ASCII


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("leases/{demonstration}/draft/", {"text": 5}, "text"),
        ("leases/{demonstration}/demonstration/", {"text": 12.5}, "text"),
        ("leases/{demonstration}/skip/", {"reason": 7}, "reason"),
        ("projects/{project}/", {"guidelines": 7}, "guidelines"),
    ],
)
def test_a_number_where_text_goes_is_a_400_naming_the_field(
    project, personas, alice_leases, api, path, body, field
):
    """Before: DRF stored the number's digits as the text (schemathesis, issue 16)."""
    url = "/api/v1/" + path.format(demonstration=alice_leases.demonstration.pk, project=project.pk)
    user = personas.admin if path.startswith("projects") else personas.alice
    method = "PATCH" if path.startswith("projects") else "POST"
    response = api(user).generic(method, url, json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {field: ["Not a valid string."]}
    lease = Lease.objects.get(pk=alice_leases.demonstration.pk)
    assert lease.status == "active"
    project.refresh_from_db()
    assert project.guidelines != "7"


def test_a_number_among_a_rankings_flags_is_a_400(personas, alice_leases, api):
    entry = {"completion": "A", "rank": 1, "likert": 4, "flags": [0]}
    response = api(personas.alice).post(
        f"/api/v1/leases/{alice_leases.ranking.pk}/ranking/",
        json.dumps({"entries": [entry]}),
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json() == {"entries": {"0": {"flags": ["Not a valid string."]}}}
