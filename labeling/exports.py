"""Database → plain records in the shapes TRL and `datasets` read. No ORM object leaves here.

- SFT: {"messages": [...prompt turns, {"role": "assistant", "content": demonstration}]}
- Preferences: conversational {"prompt": [...], "chosen": [assistant msg], "rejected": [...]},
  one record per strictly ordered pair of a ranking (all C(K,2) pairs, ties dropped).
- Rankings: one record per labeler ranking with all metadata, and the K-way shape the reward
  model trains on ({"prompt", "completions", "ranks"}).

Records are read with hand-written statements (labeling/sql/statements.py, "the exports" says
why) in keyset pages of PAGE rows in id order, so an export of 10^6 rankings holds one page in
memory, and `after` resumes one: the records after that id (`id` of an SFT record, `ranking_id`
of a ranking or a preference pair; a preference export resumes at a ranking boundary). The plain
ORM reading they replace is the reference in tests/labeling/test_exports.py.

Written out as JSON lines (orjson) or as a Parquet file (pyarrow, row groups of ROW_GROUP
records) that `datasets.load_dataset("parquet", ...)` reads, both streamed as they are made.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from functools import cache
from itertools import combinations, groupby, islice
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import orjson
from django.contrib.auth import get_user_model

from . import sql
from .models import Project
from .sql import statements

if TYPE_CHECKING:
    import pyarrow as pa

# Rows per keyset page: big enough that a statement's round trip and planning are noise next to
# its rows (a few µs a row), small enough that a page of rankings stays a few MB.
PAGE = 1000
# Records per Parquet row group: memory holds one group (as records, then as Arrow columns).
ROW_GROUP = 20_000


def _pages(
    statement: str,
    *,
    project: Project,
    split: str | None,
    after: int,
    ids: Iterable[int] | None,
    **names: str,
) -> Iterator[list[tuple]]:
    """The rows of `statement` in pages of at most PAGE, in id order from the first id > `after`
    (the first column of each row is its id). With `ids` (a training run's frozen dataset), only
    those: the same pages over the span of the ids, filtered here. An `IN` list of a page's ids
    led PostgreSQL's planner to walk a whole index per page; the span costs one read of the
    project's rows in it, and a frozen dataset is most of a project's rows."""
    query = statement.format(filters=statements.EXPORT_SPLIT if split else "", **names)
    by_split = [split] if split else []
    wanted = None if ids is None else set(ids)
    if wanted is not None:
        if not wanted:
            return
        after, last = max(after, min(wanted) - 1), max(wanted)
    while True:
        page = sql.rows(query, [project.pk, after, *by_split, PAGE])
        rows = page if wanted is None else [row for row in page if row[0] in wanted]
        if rows:
            yield rows
        if len(page) < PAGE or (wanted is not None and page[-1][0] >= last):
            return
        after = page[-1][0]


def _grouped(statement: str, page: list[tuple]) -> dict[int, list[tuple]]:
    """The rows of `statement` (ranking id first) for the rankings of `page`, by ranking id."""
    ids = [row[0] for row in page]
    query = statement.format(ids=sql.placeholders(len(ids)))
    rows = sql.rows(query, [ids[0], ids[-1], *ids])
    return {ranking_id: list(group) for ranking_id, group in groupby(rows, key=itemgetter(0))}


def sft_records(
    *,
    project: Project,
    split: str | None = None,
    ids: Iterable[int] | None = None,
    after: int = 0,
) -> Iterator[dict[str, Any]]:
    pages = _pages(
        statements.EXPORT_DEMONSTRATIONS,
        project=project,
        split=split,
        after=after,
        ids=ids,
    )
    for page in pages:
        for pk, prompt_id, prompt_split, messages, text in page:
            yield {
                "messages": [*orjson.loads(messages), {"role": "assistant", "content": text}],
                "id": pk,
                "prompt_id": prompt_id,
                "split": prompt_split,
            }


def ranking_records(
    *,
    project: Project,
    split: str | None = None,
    ids: Iterable[int] | None = None,
    after: int = 0,
) -> Iterator[dict[str, Any]]:
    pages = _pages(
        statements.EXPORT_RANKINGS,
        project=project,
        split=split,
        after=after,
        ids=ids,
        user_table=get_user_model()._meta.db_table,
    )
    for page in pages:
        entries_of = _grouped(statements.EXPORT_RANKING_ENTRIES, page)
        for row in page:
            (pk, task_id, prompt_id, prompt_split, labeler_id, username, messages) = row[:7]
            (none_acceptable, notes, time_spent_ms, shown_order, created_at) = row[7:]
            entries = entries_of.get(pk, [])
            yield {
                "ranking_id": pk,
                "task_id": task_id,
                "prompt_id": prompt_id,
                "split": prompt_split,
                "labeler_id": labeler_id,
                "labeler": username,
                "prompt": orjson.loads(messages),
                "completions": [e[2] for e in entries],
                "ranks": [e[3] for e in entries],
                "likert": [e[4] for e in entries],
                "flags": [orjson.loads(e[5]) for e in entries],
                "completion_ids": [e[1] for e in entries],
                "model_versions": [e[6] for e in entries],
                "none_acceptable": bool(none_acceptable),  # SQLite answers 0/1
                "notes": notes,
                "time_spent_ms": time_spent_ms,
                "shown_order": orjson.loads(shown_order),
                "created_at": sql.aware(created_at).isoformat(),  # type: ignore[union-attr]
            }


def preference_pairs(
    *,
    project: Project,
    split: str | None = None,
    ids: Iterable[int] | None = None,
    after: int = 0,
) -> Iterator[dict[str, Any]]:
    pages = _pages(
        statements.EXPORT_RANKING_PROMPTS,
        project=project,
        split=split,
        after=after,
        ids=ids,
    )
    for page in pages:
        entries_of = _grouped(statements.EXPORT_RANKING_TEXTS, page)
        for pk, messages in page:
            prompt = orjson.loads(messages)
            for (_, text_a, rank_a), (_, text_b, rank_b) in combinations(entries_of.get(pk, []), 2):
                if rank_a == rank_b:
                    continue  # ties carry no preference (InstructGPT drops them)
                chosen, rejected = (text_a, text_b) if rank_a < rank_b else (text_b, text_a)
                yield {
                    "prompt": prompt,
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                    "ranking_id": pk,
                }


EXPORTS = {
    "sft": sft_records,
    "preferences": preference_pairs,
    "rankings": ranking_records,
}


def jsonl_chunks(records: Iterable[dict[str, Any]], lines: int = PAGE) -> Iterator[bytes]:
    """JSON lines, `lines` to a chunk: one write to the client per chunk, not per record."""
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    chunk: list[bytes] = []
    for record in records:
        chunk.append(dumps(record, option=newline))
        if len(chunk) == lines:
            yield b"".join(chunk)
            chunk = []
    if chunk:
        yield b"".join(chunk)


# --- Parquet ------------------------------------------------------------------------------------

# pyarrow is imported when a Parquet file is asked for, not with this module: it costs a web
# worker about 0.4 s of start-up and 50 MB, and the JSON exports and the labeler loop never use it.


@cache
def parquet_schema(kind: str) -> pa.Schema:
    """The Parquet schema of an export, declared rather than inferred: every row group of a file
    must agree, and an empty export is still a file with its columns. Same fields, in the same
    order, as the JSON records."""
    import pyarrow as pa

    messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    ints, texts = pa.list_(pa.int64()), pa.list_(pa.string())
    fields = {
        "sft": [
            ("messages", messages),
            ("id", pa.int64()),
            ("prompt_id", pa.int64()),
            ("split", pa.string()),
        ],
        "preferences": [
            ("prompt", messages),
            ("chosen", messages),
            ("rejected", messages),
            ("ranking_id", pa.int64()),
        ],
        "rankings": [
            ("ranking_id", pa.int64()),
            ("task_id", pa.int64()),
            ("prompt_id", pa.int64()),
            ("split", pa.string()),
            ("labeler_id", pa.int64()),
            ("labeler", pa.string()),
            ("prompt", messages),
            ("completions", texts),
            ("ranks", ints),
            ("likert", ints),
            ("flags", pa.list_(texts)),
            ("completion_ids", ints),
            ("model_versions", texts),
            ("none_acceptable", pa.bool_()),
            ("notes", pa.string()),
            ("time_spent_ms", pa.int64()),
            ("shown_order", ints),
            ("created_at", pa.string()),  # the JSON export's ISO 8601 text, as it is
        ],
    }
    return pa.schema(fields[kind])


class _Drain(io.RawIOBase):
    """A write-only sink for ParquetWriter that hands back what was written since last asked."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def drain(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def parquet_chunks(
    kind: str, records: Iterable[dict[str, Any]], row_group: int = ROW_GROUP
) -> Iterator[bytes]:
    """`records` of `kind` as a Parquet file, streamed: the magic bytes, then each row group of
    `row_group` records as soon as it is written, then the footer (Parquet writes its index
    last, so a file can be sent as it is made). Records become Arrow columns a page at a time:
    memory holds one row group as Arrow data and one page as Python objects (a row group of
    20,000 rankings as dicts took 180 MB)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema(kind)
    sink, it, written = _Drain(), iter(records), 0
    with pq.ParquetWriter(sink, schema) as writer:
        group: list[pa.RecordBatch] = []
        while chunk := list(islice(it, min(PAGE, row_group - sum(b.num_rows for b in group)))):
            group.append(pa.RecordBatch.from_pylist(chunk, schema=schema))
            if sum(b.num_rows for b in group) == row_group:
                writer.write_table(pa.Table.from_batches(group), row_group_size=row_group)
                written, group = written + row_group, []
                yield sink.drain()
        if group or not written:  # the last group; an empty export still gets its columns
            table = pa.Table.from_batches(group, schema=schema)
            writer.write_table(table, row_group_size=max(table.num_rows, 1))
    yield sink.drain()
