"""Parse and validate uploaded prompt and ranking-task files.

Every bad line is reported with its number; the caller imports nothing when any line is bad.
No ORM here: the output is plain rows that services/prompts.py writes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import Invalid, TooLarge
from .models import MAX_K, MAX_PROMPT_CHARS, MAX_RESPONSE_CHARS, Split

PROMPT_FIELDS = {"prompt", "messages", "id", "external_id", "author", "split", "source"}
COMPLETION_FIELDS = {"text", "model", "temperature", "top_p", "max_tokens", "seed", "finished"}
ROLES = {"system", "user", "assistant"}
MAX_ERRORS_REPORTED = 200


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


def _error(line: int, message: str) -> dict[str, Any]:
    return {"line": line, "error": message}


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


def _records(filename: str, data: bytes, max_bytes: int) -> list[tuple[int, Any]]:
    """(line number, parsed object or an error string) for each non-blank line/row."""
    _check_size(data, max_bytes)
    out: list[tuple[int, Any]] = []
    if filename.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(_decode(data)))
        if not reader.fieldnames:
            raise Invalid("The CSV file has no header row.", details=[_error(1, "no header")])
        for row in reader:
            line = reader.line_num
            if None in row:
                out.append((line, "more columns than the header has"))
                continue
            out.append((line, {k.strip(): v for k, v in row.items() if k is not None}))
        return out
    # JSONL: split on b"\n" only, decoding line by line, so that one bad byte is reported on its
    # own line alongside every other bad line, and a raw U+2028 inside a JSON string (valid JSON,
    # which str.splitlines() would break apart) stays in its line.
    data = data.removeprefix(b"\xef\xbb\xbf")
    for number, raw_bytes in enumerate(data.split(b"\n"), start=1):
        try:
            raw = raw_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            out.append((number, f"invalid UTF-8 byte at column {exc.start + 1}"))
            continue
        if not raw.strip():
            continue
        try:
            out.append((number, json.loads(raw)))
        except json.JSONDecodeError as exc:
            out.append((number, f"not valid JSON ({exc.msg} at column {exc.colno})"))
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
    if any("\x00" in m["content"] for m in messages):
        return "prompt contains a NUL character"
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
    rows: list[PromptRow] = []
    errors: list[dict[str, Any]] = []
    seen_hash: dict[str, int] = {}
    seen_id: dict[str, int] = {}
    for line, obj in _records(filename, data, max_bytes):
        row = obj if isinstance(obj, str) else _prompt_row(line, obj)
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
        if kind is int and not float(value).is_integer():
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
    rows: list[RankingTaskRow] = []
    errors: list[dict[str, Any]] = []
    if not filename.lower().endswith((".jsonl", ".json", ".ndjson")):
        raise Invalid("Ranking tasks are imported from JSONL (one task per line).")
    for line, obj in _records(filename, data, max_bytes):
        if isinstance(obj, str):
            errors.append(_error(line, obj))
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
