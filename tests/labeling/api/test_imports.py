"""Prompt and ranking-task imports: all or nothing, every bad line reported with its number."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from labeling.models import Completion, Prompt, Task
from tests.factories import PromptFactory

pytestmark = pytest.mark.django_db


def _upload(client, project, name, data, kind="prompts"):
    return client.post(
        f"/api/v1/projects/{project.pk}/{kind}/import/",
        {"file": SimpleUploadedFile(name, data)},
        format="multipart",
    )


def _line(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


@pytest.fixture
def no_test_split(project):
    project.valid_percent = project.test_percent = 0
    project.save()
    return project


def test_a_jsonl_with_bad_lines_lists_every_one_and_imports_nothing(project, personas, client_for):
    PromptFactory(project=project, text="Already here.")
    before = (Prompt.objects.count(), Task.objects.count())
    lines = [
        _line({"prompt": "Good one."}),  # 1
        _line({"prompt": "Wrong field.", "labeler": 5}),  # 2
        b'{"prompt": "unterminated',  # 3
        _line({"prompt": "   "}),  # 4
        _line({"prompt": "Good one."}),  # 5 duplicate of line 1
        b'{"prompt": "caf\xe9"}',  # 6 Latin-1, not UTF-8
        _line({"prompt": "x" * (10 * 1024 * 1024)}),  # 7 a 10 MB string
        _line({"prompt": "Already here."}),  # 8 already in the project
        _line({"messages": [{"role": "user", "content": "Fine too."}]}),  # 9
    ]
    response = _upload(client_for(personas.admin), project, "prompts.jsonl", b"\n".join(lines))
    assert response.status_code == 400
    body = response.json()
    assert "nothing was imported" in body["detail"]
    assert [e["line"] for e in body["errors"]] == [2, 3, 4, 5, 6, 7]
    assert (Prompt.objects.count(), Task.objects.count()) == before


def test_a_prompt_already_in_the_project_is_reported_by_line(project, personas, client_for):
    PromptFactory(project=project, text="Already here.")
    data = b"\n".join([_line({"prompt": "New."}), _line({"prompt": "Already here."})])
    response = _upload(client_for(personas.admin), project, "p.jsonl", data)
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"line": 2, "error": "this prompt is already in the project"}
    ]
    assert Prompt.objects.filter(project=project).count() == 1


def test_a_good_jsonl_import_creates_prompts_and_demonstration_tasks(
    no_test_split, personas, client_for
):
    project = no_test_split
    data = "\n".join(
        json.dumps(r)
        for r in [
            {"prompt": "Explain tides.", "author": "u1", "id": "p-1"},
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi?"},
                ]
            },
            {"prompt": "A line with a raw \u2028 separator inside."},
        ]
    ).encode()
    response = _upload(client_for(personas.admin), project, "prompts.jsonl", data)
    assert response.status_code == 201
    assert response.json() == {
        "created": 3,
        "tasks_created": 3,
        "splits": {"train": 3, "valid": 0, "test": 0},
    }
    assert set(Prompt.objects.filter(project=project).values_list("text", flat=True)) == {
        "Explain tides.",
        "Hi?",
        "A line with a raw \u2028 separator inside.",
    }
    assert Task.objects.filter(project=project, kind="demonstration").count() == 3


def test_a_csv_import_creates_prompts(no_test_split, personas, client_for):
    data = b'prompt,author,id\n"Write a haiku, please.",u1,a\nSummarise this.,u2,b\n'
    response = _upload(client_for(personas.admin), no_test_split, "prompts.csv", data)
    assert response.status_code == 201 and response.json()["created"] == 2
    assert Prompt.objects.get(external_id="a").text == "Write a haiku, please."


def test_a_csv_with_a_bad_row_imports_nothing(project, personas, client_for):
    data = b"prompt,author\nGood.,u1\n,u2\nAlso good.,u3\n"
    response = _upload(client_for(personas.admin), project, "prompts.csv", data)
    assert response.status_code == 400
    assert [e["line"] for e in response.json()["errors"]] == [3]
    assert not Prompt.objects.filter(project=project).exists()


def test_records_in_a_json_body_import_like_lines_of_a_file(no_test_split, personas, client_for):
    admin = client_for(personas.admin)
    url = f"/api/v1/projects/{no_test_split.pk}/prompts/import/"
    bad = admin.post(url, {"records": [{"prompt": "ok"}, {"prompt": ""}, "text"]}, format="json")
    assert bad.status_code == 400
    assert [e["line"] for e in bad.json()["errors"]] == [2, 3]
    good = admin.post(
        url, {"records": [{"prompt": "ok"}], "collect_demonstrations": False}, format="json"
    )
    assert good.status_code == 201 and good.json()["tasks_created"] == 0


def test_a_file_over_the_import_limit_is_a_413(project, personas, client_for, settings):
    settings.IMPORT_MAX_BYTES = 2048
    data = _line({"prompt": "y" * 4096})
    response = _upload(client_for(personas.admin), project, "big.jsonl", data)
    assert response.status_code == 413
    assert not Prompt.objects.filter(project=project).exists()


def test_ranking_tasks_import_creates_k_way_tasks_whose_models_labelers_never_see(
    project, personas, client_for
):
    rows = [
        {
            "prompt": f"Question {n}?",
            "completions": [
                {"text": f"Answer {n}.{i}", "model": f"secret-model-{i % 2}", "temperature": 0.7}
                for i in range(project.k)
            ],
        }
        for n in range(2)
    ]
    data = "\n".join(json.dumps(r) for r in rows).encode()
    response = _upload(client_for(personas.admin), project, "tasks.jsonl", data, "ranking-tasks")
    assert response.status_code == 201
    answer = response.json()
    assert (answer["created"], answer["tasks_created"], sum(answer["splits"].values())) == (2, 2, 2)
    assert Completion.objects.filter(prompt__project=project).count() == 2 * project.k
    offered = client_for(personas.alice).post(
        f"/api/v1/projects/{project.pk}/next/", {"kind": "ranking"}, format="json"
    )
    assert offered.status_code == 200
    assert len(offered.json()["completions"]) == project.k
    assert "secret-model" not in offered.content.decode()


def test_a_ranking_task_with_the_wrong_number_of_completions_imports_nothing(
    project, personas, client_for
):
    good = {"prompt": "Q?", "completions": [{"text": f"A{i}", "model": "m"} for i in range(4)]}
    short = {"prompt": "Q2?", "completions": [{"text": "A", "model": "m"}]}
    data = b"\n".join([_line(good), _line(short)])
    response = _upload(client_for(personas.admin), project, "t.jsonl", data, "ranking-tasks")
    assert response.status_code == 400
    assert [e["line"] for e in response.json()["errors"]] == [2]
    assert not Task.objects.filter(project=project).exists()


def test_an_import_needs_exactly_one_of_file_or_records(project, personas, client_for):
    response = client_for(personas.admin).post(
        f"/api/v1/projects/{project.pk}/prompts/import/", {}, format="json"
    )
    assert response.status_code == 400


# --- lines that made the import a 500 -------------------------------------------------------


def _errors(response) -> dict[int, str]:
    assert response.status_code == 400, response.content
    assert "nothing was imported" in response.json()["detail"]
    return {e["line"]: e["error"] for e in response.json()["errors"]}


def test_a_line_nested_50k_deep_is_reported_on_its_line(project, personas, client_for):
    """Before: json.loads ran past Python's recursion limit, a 500."""
    data = b"\n".join([_line({"prompt": "Fine."}), b"[" * 50_000 + b"]" * 50_000])
    errors = _errors(_upload(client_for(personas.admin), project, "p.jsonl", data))
    assert errors == {2: "not valid JSON (nested too deeply)"}
    tasks = b"\n".join([b'{"prompt": "Q", "completions": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"])
    errors = _errors(
        _upload(client_for(personas.admin), project, "t.jsonl", tasks, "ranking-tasks")
    )
    assert errors == {1: "not valid JSON (nested too deeply)"}
    assert not Prompt.objects.filter(project=project).exists()


def test_a_record_nested_nearly_as_deep_as_the_parser_allows_is_reported_on_its_line(
    project, personas, client_for
):
    """Parsed from the body, then written out again to be checked, deeper in the stack: that
    second pass ran past the recursion limit. Now records are judged as the parser read them.
    (The deepest body the parser takes depends on the stack it runs on: found by trying.)"""
    url = f"/api/v1/projects/{project.pk}/prompts/import/"
    for depth in range(1000, 500, -10):
        body = '{"records": [{"prompt": "Fine."}, ' + "[" * depth + "]" * depth + "]}"
        response = client_for(personas.admin).generic("POST", url, body, "application/json")
        if "nested too deeply" not in response.json()["detail"]:
            break
    assert _errors(response) == {2: "each line must be a JSON object"}


NUL, SURROGATE = "\x00", "\ud800"


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ({"prompt": "Hi.", "author": f"ann{NUL}"}, '"author" contains a NUL character'),
        ({"prompt": "Hi.", "id": f"p-1{NUL}"}, '"id" contains a NUL character'),
        ({"prompt": "Hi.", "external_id": f"p{NUL}"}, '"external_id" contains a NUL character'),
        ({"prompt": f"Hi{NUL}."}, "prompt contains a NUL character"),
        ({"prompt": f"Hi{SURROGATE}."}, "prompt contains an unpaired surrogate"),
        ({"prompt": "Hi.", "author": SURROGATE}, '"author" contains an unpaired surrogate'),
    ],
    ids=[
        "author-nul",
        "id-nul",
        "external-id-nul",
        "text-nul",
        "text-surrogate",
        "author-surrogate",
    ],
)
def test_unstorable_text_in_a_prompt_is_reported_on_its_line_from_a_file_or_a_body(
    project, personas, client_for, record, error
):
    """PostgreSQL text holds neither a NUL nor an unpaired surrogate: the insert failed, a 500."""
    admin = client_for(personas.admin)
    line = json.dumps(record).encode()  # ASCII escapes, as a client writes them
    assert _errors(_upload(admin, project, "p.jsonl", _line({"prompt": "Ok."}) + b"\n" + line)) == {
        2: error
    }
    url = f"/api/v1/projects/{project.pk}/prompts/import/"
    body = json.dumps({"records": [{"prompt": "Ok."}, record]})
    assert _errors(admin.generic("POST", url, body, "application/json")) == {2: error}
    assert not Prompt.objects.filter(project=project).exists()


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("text", f"An answer{NUL}", 'completion 2: "text" contains a NUL character'),
        ("model", f"gpt{NUL}", 'completion 2: "model" contains a NUL character'),
        ("text", f"An answer{SURROGATE}", 'completion 2: "text" contains an unpaired surrogate'),
    ],
    ids=["text-nul", "model-nul", "text-surrogate"],
)
def test_unstorable_text_in_an_imported_completion_is_reported_on_its_line(
    project, personas, client_for, field, value, error
):
    completions = [{"text": f"Answer {i}.", "model": "m"} for i in range(project.k)]
    completions[1][field] = value
    data = json.dumps({"prompt": "Q?", "completions": completions}).encode()
    response = _upload(client_for(personas.admin), project, "t.jsonl", data, "ranking-tasks")
    assert _errors(response) == {1: error}
    assert not Completion.objects.exists()


def test_a_nul_in_a_csv_cell_is_reported_on_its_line(project, personas, client_for):
    data = b"prompt,author\nGood.,u1\nAlso good.,u\x002\n"
    response = _upload(client_for(personas.admin), project, "p.csv", data)
    assert _errors(response) == {3: '"author" contains a NUL character'}


def test_a_csv_cell_over_the_field_limit_is_reported_on_its_line(project, personas, client_for):
    """The csv module refuses a cell over 131,072 characters with an exception: before, a 500.
    Reading stops there (the module no longer knows where rows start); nothing is imported."""
    data = b"prompt,author\nGood.,u1\n" + b"x" * 131_073 + b",u2\nAfter.,u3\n"
    errors = _errors(_upload(client_for(personas.admin), project, "p.csv", data))
    assert list(errors) == [3]
    assert errors[3].startswith("not valid CSV (field larger than field limit (131072))")
    assert not Prompt.objects.filter(project=project).exists()


def test_numbers_beyond_what_python_reads_or_a_float_holds_are_reported_on_their_line(
    project, personas, client_for
):
    """A 5,000-digit number is over Python's int-parsing limit (a ValueError json.loads raises
    outside JSONDecodeError); a 400-digit seed overflowed float(): both were 500s."""
    completions = [{"text": f"Answer {i}.", "model": "m"} for i in range(project.k)]
    huge_seed = json.dumps({"prompt": "Q?", "completions": completions}).replace(
        '"model": "m"}', '"model": "m", "seed": ' + "9" * 400 + "}", 1
    )
    data = b"\n".join([b'{"prompt": "Q2?", "seed": ' + b"1" * 5000 + b"}", huge_seed.encode()])
    errors = _errors(_upload(client_for(personas.admin), project, "t.jsonl", data, "ranking-tasks"))
    assert errors[1].startswith("not valid JSON (Exceeds the limit (4300 digits)")
    assert errors[2] == 'completion 1: "seed" is out of range'


def test_an_import_says_how_many_prompts_went_to_the_test_split_and_got_no_task(
    project, personas, client_for
):
    """An author's prompts share a split (split_for keys on the author): with test_percent 100,
    all of them are held out for A/B and none gets a demonstration task; the answer says so."""
    project.valid_percent, project.test_percent = 0, 100
    project.save()
    rows = [{"prompt": f"Held out {i}?", "author": "alice"} for i in range(3)]
    answer = client_for(personas.admin).post(
        f"/api/v1/projects/{project.pk}/prompts/import/", {"records": rows}, format="json"
    )
    assert answer.status_code == 201
    assert answer.json() == {
        "created": 3,
        "tasks_created": 0,
        "splits": {"train": 0, "valid": 0, "test": 3},
    }
