"""The export endpoints: resuming an interrupted download from the last complete line, the 400s
of a bad cursor, Parquet files, and who may export."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest

from tests.labeling.test_exports import PLAIN, build_world

pytestmark = pytest.mark.django_db

KINDS = ["sft", "rankings", "preferences"]
PARQUET = "application/vnd.apache.parquet"


@pytest.fixture
def world(project, personas, now):
    return build_world(project, personas, now)


def _url(project, kind: str) -> str:
    return f"/api/v1/projects/{project.pk}/export/{kind}/"


def _body(response) -> bytes:
    assert response.status_code == 200, response.content
    # Reading it to the end closes it (the test client's wrapper), as a server would.
    return b"".join(response.streaming_content)


def _lines(body: bytes) -> list[dict]:
    return [json.loads(line) for line in body.split(b"\n") if line]


def _resume_after(kind: str, received: list[dict]) -> tuple[list[dict], int]:
    """What a client keeps of the complete lines it received, and the `after` to ask for next
    (the rule ExportView's docstring gives)."""
    if not received:
        return [], 0
    if kind == "sft":
        return received, received[-1]["id"]
    if kind == "rankings":
        return received, received[-1]["ranking_id"]
    # Preferences: the last ranking's pairs may be incomplete; resume at the ranking before it.
    last = received[-1]["ranking_id"]
    kept = [r for r in received if r["ranking_id"] != last]
    return kept, kept[-1]["ranking_id"] if kept else 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cut", [0.1, 0.5, 0.93])
def test_an_export_cut_mid_line_resumes_from_the_last_complete_line(
    world, personas, client_for, kind, cut
):
    reviewer = client_for(personas.reviewer)
    full = _body(reviewer.get(_url(world, kind)))
    end = int(len(full) * cut)
    while full[end - 1 : end] == b"\n":  # the cut falls inside a line
        end -= 1
    received = full[:end]
    complete = received[: received.rindex(b"\n") + 1] if b"\n" in received else b""
    kept, after = _resume_after(kind, _lines(complete))
    rest = _lines(_body(reviewer.get(_url(world, kind), {"after": after})))
    assert kept + rest == _lines(full) == PLAIN[kind](project=world)
    assert len(kept) > 0 or cut < 0.2


@pytest.mark.parametrize("kind", KINDS)
def test_a_split_export_resumes_within_its_split(world, personas, client_for, kind):
    reviewer = client_for(personas.reviewer)
    full = _lines(_body(reviewer.get(_url(world, kind), {"split": "train"})))
    kept, after = _resume_after(kind, full[: len(full) // 2])
    rest = _lines(_body(reviewer.get(_url(world, kind), {"split": "train", "after": after})))
    assert kept + rest == full and kept and rest
    assert {r.get("split", "train") for r in rest} == {"train"}


def test_an_export_resumed_after_its_last_id_is_empty(world, personas, client_for):
    reviewer = client_for(personas.reviewer)
    last = _lines(_body(reviewer.get(_url(world, "rankings"))))[-1]["ranking_id"]
    response = reviewer.get(_url(world, "rankings"), {"after": last})
    assert _body(response) == b""
    assert f"-after-{last}.jsonl" in response["Content-Disposition"]


@pytest.mark.parametrize(
    ("after", "says"),
    [
        ("-1", "0 or more"),
        ("abc", "a whole number"),
        ("1.5", "a whole number"),
        ("1e3", "a whole number"),
        (str(2**63), "larger than any id"),
    ],
)
@pytest.mark.parametrize("fmt", [None, "parquet"])
def test_a_bad_cursor_is_a_400_that_says_what_after_must_be(
    project, personas, client_for, after, says, fmt
):
    query = {"after": after, **({"format": fmt} if fmt else {})}
    response = client_for(personas.reviewer).get(_url(project, "rankings"), query)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"  # an error is no Parquet file
    [message] = response.json()["after"]
    assert says in message and "`after`" in message


def test_exports_stay_reviewer_only_whatever_the_format_or_cursor(world, personas, client_for):
    url = _url(world, "rankings")
    for params in ({"format": "parquet"}, {"after": 1}, {"after": "bad"}):
        assert client_for(personas.alice).get(url, params).status_code == 403
        assert client_for(personas.outsider).get(url, params).status_code == 404
        assert client_for(None).get(url, params).status_code in (401, 403)
    assert client_for(personas.admin).get(url, {"format": "parquet"}).status_code == 200


@pytest.mark.parametrize("kind", KINDS)
def test_a_parquet_export_holds_the_json_records(world, personas, client_for, kind):
    reviewer = client_for(personas.reviewer)
    response = reviewer.get(_url(world, kind), {"format": "parquet", "split": "valid"})
    assert response["Content-Type"] == PARQUET
    assert response["Content-Disposition"] == (
        f'attachment; filename="{world.slug}-{kind}-valid.parquet"'
    )
    table = pq.read_table(io.BytesIO(_body(response)))
    expected = _lines(_body(reviewer.get(_url(world, kind), {"split": "valid"})))
    assert table.to_pylist() == expected and expected


def test_a_client_asking_for_parquet_by_accept_type_gets_it_and_can_resume(
    world, personas, client_for
):
    reviewer = client_for(personas.reviewer)
    full = PLAIN["rankings"](project=world)
    after = full[4]["ranking_id"]
    response = reviewer.get(_url(world, "rankings"), {"after": after}, HTTP_ACCEPT=PARQUET)
    assert response["Content-Type"] == PARQUET
    assert pq.read_table(io.BytesIO(_body(response))).to_pylist() == full[5:]


def test_an_unknown_format_is_a_404(project, personas, client_for):
    response = client_for(personas.reviewer).get(_url(project, "sft"), {"format": "xml"})
    assert response.status_code == 404
