"""Parse and validate uploaded prompt and ranking-task files, or the same records in a JSON body.

Every bad line is reported with its number; the caller imports nothing when any line is bad.
No ORM here: the output is plain rows that services/prompts.py writes. Whatever a line holds,
the answer is its line's report, never a 500: text PostgreSQL cannot store (a NUL, an unpaired
surrogate that JSON may escape), a line nested deeper than Python's recursion limit, a CSV cell
over the csv module's field limit.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import Invalid, TooLarge
from .models import MAX_K, MAX_PROMPT_CHARS, MAX_RESPONSE_CHARS, Split

PROMPT_FIELDS = {"prompt", "messages", "id", "external_id", "author", "split", "source"}
COMPLETION_FIELDS = {"text", "model", "temperature", "top_p", "max_tokens", "seed", "finished"}
ROLES = {"system", "user", "assistant"}
MAX_ERRORS_REPORTED = 200
# PostgreSQL text and jsonb hold neither a NUL nor a lone UTF-16 surrogate (which JSON may write
# as "\ud800"; no UTF-8 encoder takes it): the insert fails.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class PromptRow:
    line: int
    messages: list[dict[str, str]]
    text: str
    content_hash: str
    external_id: str = ""
    author: str = ""
    split: str = ""


@dataclass(frozen=True)
class CompletionRow:
    text: str
    model: str
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    finished: bool | None = None


@dataclass(frozen=True)
class RankingTaskRow:
    line: int
    prompt: PromptRow
    completions: list[CompletionRow] = field(default_factory=list)


def messages_hash(messages: list[dict[str, str]]) -> str:
    canonical = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Unreadable:
    """A line that is no record at all (not UTF-8, not JSON, not CSV); `message` says why."""

    message: str


Record = tuple[int, Any]  # (line number, the parsed object or Unreadable)


def _error(line: int, message: str) -> dict[str, Any]:
    return {"line": line, "error": message}


def unstorable(value: str) -> str | None:
    """Why `value` cannot be stored as text (a NUL, an unpaired surrogate), or None."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    return "a NUL character" if found.group() == "\x00" else "an unpaired surrogate"


def _check_size(data: bytes, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise TooLarge(f"The file is {len(data):,} bytes; the limit is {max_bytes:,}.")


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        bad = []
        for number, raw in enumerate(data.split(b"\n"), start=1):
            try:
                raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                bad.append(_error(number, f"invalid UTF-8 byte at column {exc.start + 1}"))
        raise Invalid("The file is not UTF-8 text.", details=bad[:MAX_ERRORS_REPORTED]) from None


def _records(filename: str, data: bytes, max_bytes: int) -> list[Record]:
    """(line number, parsed object or Unreadable) for each non-blank line/row."""
    _check_size(data, max_bytes)
    if filename.lower().endswith(".csv"):
        return _csv_records(_decode(data))
    out: list[Record] = []
    # JSONL: split on b"\n" only, decoding line by line, so that one bad byte is reported on its
    # own line alongside every other bad line, and a raw U+2028 inside a JSON string (valid JSON,
    # which str.splitlines() would break apart) stays in its line.
    data = data.removeprefix(b"\xef\xbb\xbf")
    for number, raw_bytes in enumerate(data.split(b"\n"), start=1):
        try:
            raw = raw_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            out.append((number, Unreadable(f"invalid UTF-8 byte at column {exc.start + 1}")))
            continue
        if not raw.strip():
            continue
        try:
            out.append((number, json.loads(raw)))
        except json.JSONDecodeError as exc:
            out.append((number, Unreadable(f"not valid JSON ({exc.msg} at column {exc.colno})")))
        except ValueError as exc:  # a number of more than 4,300 digits (Python's int limit)
            out.append((number, Unreadable(f"not valid JSON ({exc})")))
        except RecursionError:  # deeper than Python's recursion limit (about 1,000 levels)
            out.append((number, Unreadable("not valid JSON (nested too deeply)")))
    return out


def _csv_records(text: str) -> list[Record]:
    """A CSV file's rows by line. The first row the csv module cannot read (a cell over its field
    limit of 131,072 characters) is reported and ends the reading: after it the module's notion
    of where a row starts is no longer the file's, so later lines could only be misreported."""
    reader = csv.DictReader(io.StringIO(text))
    out: list[Record] = []
    try:
        if not reader.fieldnames:
            raise Invalid("The CSV file has no header row.", details=[_error(1, "no header")])
        for row in reader:
            line = reader.line_num
            if None in row:
                out.append((line, Unreadable("more columns than the header has")))
                continue
            out.append((line, {k.strip(): v for k, v in row.items() if k is not None}))
    except csv.Error as exc:
        # line_num counts the lines read before the one the reader failed on.
        message = f"not valid CSV ({exc}); the lines after it were not read"
        out.append((reader.line_num + 1, Unreadable(message)))
    return out


def _prompt_row(line: int, obj: Any) -> PromptRow | str:
    if not isinstance(obj, dict):
        return "each line must be a JSON object"
    unknown = set(obj) - PROMPT_FIELDS
    if unknown:
        return f"unknown field(s): {', '.join(sorted(unknown))}"
    if ("prompt" in obj) == ("messages" in obj):
        return 'give exactly one of "prompt" or "messages"'
    if "prompt" in obj:
        prompt = obj["prompt"]
        if not isinstance(prompt, str):
            return '"prompt" must be a string'
        messages = [{"role": "user", "content": prompt.strip()}]
    else:
        messages = obj["messages"]
        if not isinstance(messages, list) or not messages:
            return '"messages" must be a non-empty list'
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or set(message) != {"role", "content"}:
                return f'message {i + 1} must have exactly "role" and "content"'
            if message["role"] not in ROLES or not isinstance(message["content"], str):
                return f"message {i + 1} has an unknown role or non-text content"
        if messages[-1]["role"] != "user":
            return "the last message must be the user's"
        messages = [{"role": m["role"], "content": m["content"].strip()} for m in messages]
    if any(not m["content"] for m in messages if m["role"] != "system"):
        return "empty prompt"
    total = sum(len(m["content"]) for m in messages)
    if total > MAX_PROMPT_CHARS:
        return f"prompt is {total:,} characters; the limit is {MAX_PROMPT_CHARS:,}"
    for m in messages:
        problem = unstorable(m["content"])
        if problem is not None:
            return f"prompt contains {problem}"
    extras = {}
    for key in ("id", "external_id", "author", "split"):
        value = obj.get(key, "")
        if value is None:
            value = ""
        if not isinstance(value, str | int) or isinstance(value, bool):
            return f'"{key}" must be a string'
        extras[key] = str(value).strip()
        if len(extras[key]) > 200:
            return f'"{key}" is longer than 200 characters'
        problem = unstorable(extras[key])
        if problem is not None:
            return f'"{key}" contains {problem}'
    if extras["split"] and extras["split"] not in Split.values:
        return f'"split" must be one of {", ".join(Split.values)}'
    return PromptRow(
        line=line,
        messages=messages,
        text=messages[-1]["content"],
        content_hash=messages_hash(messages),
        external_id=extras["external_id"] or extras["id"],
        author=extras["author"],
        split=extras["split"],
    )


def parse_prompts(filename: str, data: bytes, *, max_bytes: int) -> list[PromptRow]:
    """Validate a JSONL or CSV prompt file. Raises Invalid listing every bad line."""
    return _prompt_rows(_records(filename, data, max_bytes))


def parse_prompt_records(records: Sequence[Any]) -> list[PromptRow]:
    """Validate prompts sent as a JSON body's records, record N as line N of a file."""
    return _prompt_rows(enumerate(records, start=1))


def _prompt_rows(records: Iterable[Record]) -> list[PromptRow]:
    rows: list[PromptRow] = []
    errors: list[dict[str, Any]] = []
    seen_hash: dict[str, int] = {}
    seen_id: dict[str, int] = {}
    for line, obj in records:
        row = obj.message if isinstance(obj, Unreadable) else _prompt_row(line, obj)
        if isinstance(row, str):
            errors.append(_error(line, row))
            continue
        if row.content_hash in seen_hash:
            errors.append(
                _error(line, f"duplicate of the prompt on line {seen_hash[row.content_hash]}")
            )
            continue
        if row.external_id and row.external_id in seen_id:
            errors.append(_error(line, f"duplicate id of line {seen_id[row.external_id]}"))
            continue
        seen_hash[row.content_hash] = line
        if row.external_id:
            seen_id[row.external_id] = line
        rows.append(row)
    if errors:
        raise Invalid(
            f"{len(errors)} bad line(s); nothing was imported.",
            details=errors[:MAX_ERRORS_REPORTED],
        )
    if not rows:
        raise Invalid("The file holds no prompts.")
    return rows


def _completion_row(obj: Any, index: int) -> CompletionRow | str:
    where = f"completion {index + 1}"
    if not isinstance(obj, dict):
        return f"{where} must be an object"
    unknown = set(obj) - COMPLETION_FIELDS
    if unknown:
        return f"{where} has unknown field(s): {', '.join(sorted(unknown))}"
    text, model = obj.get("text"), obj.get("model")
    if not isinstance(text, str) or not text.strip():
        return f"{where} has an empty text"
    if len(text) > MAX_RESPONSE_CHARS:
        return f"{where} is longer than {MAX_RESPONSE_CHARS:,} characters"
    if not isinstance(model, str) or not model.strip() or len(model) > 120:
        return f'{where} needs a "model" name (at most 120 characters)'
    for name, given in (("text", text), ("model", model)):
        problem = unstorable(given)
        if problem is not None:
            return f'{where}: "{name}" contains {problem}'
    numbers: dict[str, Any] = {}
    for key, kind, low, high in (
        ("temperature", float, 0.0, 100.0),
        ("top_p", float, 1e-9, 1.0),
        ("max_tokens", int, 1, 1_000_000),
        ("seed", int, -(2**63), 2**63 - 1),
    ):
        value = obj.get(key)
        if value is None:
            numbers[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f'{where}: "{key}" must be a number'
        # (an int as it is: float() of one with 309 digits or more overflows)
        if kind is int and not (isinstance(value, int) or value.is_integer()):
            return f'{where}: "{key}" must be a whole number'
        if not low <= value <= high:
            return f'{where}: "{key}" is out of range'
        numbers[key] = kind(value)
    finished = obj.get("finished")
    if finished is not None and not isinstance(finished, bool):
        return f'{where}: "finished" must be true or false'
    return CompletionRow(text=text, model=model.strip(), finished=finished, **numbers)


def parse_ranking_tasks(
    filename: str, data: bytes, *, k: int, max_bytes: int
) -> list[RankingTaskRow]:
    """Validate a JSONL file of ranking tasks: {"prompt"|"messages", "completions": [K objects]}."""
    if not filename.lower().endswith((".jsonl", ".json", ".ndjson")):
        raise Invalid("Ranking tasks are imported from JSONL (one task per line).")
    return _ranking_task_rows(_records(filename, data, max_bytes), k=k)


def parse_ranking_task_records(records: Sequence[Any], *, k: int) -> list[RankingTaskRow]:
    """Validate ranking tasks sent as a JSON body's records, record N as line N of a file."""
    return _ranking_task_rows(enumerate(records, start=1), k=k)


def _ranking_task_rows(records: Iterable[Record], *, k: int) -> list[RankingTaskRow]:
    rows: list[RankingTaskRow] = []
    errors: list[dict[str, Any]] = []
    for line, obj in records:
        if isinstance(obj, Unreadable):
            errors.append(_error(line, obj.message))
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("completions"), list):
            errors.append(_error(line, 'each line needs a "completions" list'))
            continue
        completions_raw = obj["completions"]
        prompt = _prompt_row(line, {key: v for key, v in obj.items() if key != "completions"})
        if isinstance(prompt, str):
            errors.append(_error(line, prompt))
            continue
        if len(completions_raw) != k:
            errors.append(
                _error(line, f"has {len(completions_raw)} completions; this project ranks {k}")
            )
            continue
        completions = [_completion_row(c, i) for i, c in enumerate(completions_raw)]
        bad = next((c for c in completions if isinstance(c, str)), None)
        if bad is not None:
            errors.append(_error(line, bad))
            continue
        texts = [c.text for c in completions]  # type: ignore[union-attr]
        if len(set(texts)) != len(texts):
            errors.append(_error(line, "two completions have the same text"))
            continue
        rows.append(RankingTaskRow(line=line, prompt=prompt, completions=completions))  # type: ignore[arg-type]
    if errors:
        raise Invalid(
            f"{len(errors)} bad line(s); nothing was imported.",
            details=errors[:MAX_ERRORS_REPORTED],
        )
    if not rows:
        raise Invalid("The file holds no ranking tasks.")
    if k > MAX_K:
        raise Invalid(f"K={k} is over {MAX_K}.")
    return rows
