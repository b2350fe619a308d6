"""Tabular sources: CSV, JSON / JSONL and Parquet files, mapped to :class:`Example` rows.

File-level problems (corrupt file, wrong encoding, missing column, over a cap) raise
:class:`DatasetFormatError` / :class:`DatasetTooLarge` before anything is stored; row-level
problems (an empty answer, a number where text belongs, a broken conversation) reject that
row with a reason that the quality report lists.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmflow.training.datasets.errors import DatasetFormatError, DatasetTooLarge
from llmflow.training.datasets.examples import Example, Turn, role_of

SourceKind = Literal["csv", "jsonl", "json", "parquet"]
SOURCE_KINDS: tuple[SourceKind, ...] = ("csv", "jsonl", "json", "parquet")
_SUFFIXES: dict[str, SourceKind] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}
MESSAGE_COLUMNS = ("messages", "conversations")
"""Columns that hold a whole conversation, tried in this order when no mapping names one."""
ALIASES = {
    "instruction": ("instruction", "prompt", "question", "query", "질문"),
    "input": ("input", "context"),
    "output": ("output", "response", "answer", "completion", "답변"),
    "system": ("system",),
    "history": ("history",),
}
"""Column names recognised without a mapping (first match wins)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """A source row that did not become an example, and why (stable ``reason`` codes)."""

    ref: str
    reason: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"ref": self.ref, "reason": self.reason, "detail": self.detail}


@dataclass
class ColumnMapping:
    """Which source column feeds which part of an example. ``messages`` (a list of
    ``{role, content}`` or ``{from, value}``) takes precedence over instruction/output."""

    instruction: str | None = None
    input: str | None = None
    output: str | None = None
    system: str | None = None
    history: str | None = None
    messages: str | None = None

    @classmethod
    def parse(cls, pairs: list[str]) -> ColumnMapping:
        """``["instruction=질문", "output=답변"]`` as given on the command line."""
        mapping = cls()
        for pair in pairs:
            target, sep, column = pair.partition("=")
            target = target.strip()
            if not sep or not column.strip() or target not in cls.__dataclass_fields__:
                fields = ", ".join(cls.__dataclass_fields__)
                raise DatasetFormatError(
                    f"column mapping {pair!r}: use FIELD=COLUMN with FIELD one of {fields}"
                )
            setattr(mapping, target, column.strip())
        return mapping

    def resolve(self, columns: list[str]) -> ColumnMapping:
        """Fill unmapped fields from well-known column names; check named columns exist."""
        present = set(columns)
        named = {k: v for k, v in vars(self).items() if v is not None}
        missing = sorted(v for v in named.values() if v not in present)
        if missing:
            raise DatasetFormatError(
                f"column(s) {', '.join(map(repr, missing))} not in the source; "
                f"it has: {', '.join(columns) or '(no columns)'}"
            )
        out = ColumnMapping(**named)
        if out.messages is None and out.instruction is None and out.output is None:
            out.messages = next((c for c in MESSAGE_COLUMNS if c in present), None)
        if out.messages is None:
            for target, aliases in ALIASES.items():
                if getattr(out, target) is None:
                    setattr(out, target, next((a for a in aliases if a in present), None))
            if out.instruction is None or out.output is None:
                raise DatasetFormatError(
                    "no instruction/output (or messages) columns found; the source has: "
                    f"{', '.join(columns) or '(no columns)'}. Map them, e.g. "
                    "--map instruction=질문 --map output=답변"
                )
        return out


@dataclass
class SourceRows:
    """What a source yielded: examples in source order and the rows rejected."""

    examples: list[Example] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    total: int = 0


def detect_kind(name: str) -> SourceKind:
    kind = _SUFFIXES.get(Path(name).suffix.lower())
    if kind is None:
        raise DatasetFormatError(
            f"{name}: cannot tell the format from the extension; use .csv, .jsonl, .json or "
            ".parquet, or pass the format explicitly"
        )
    return kind


def _text(value: Any, column: str, max_chars: int) -> str:
    """A text cell; raises ``_RowError`` for the wrong type or an oversized value."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _RowError("wrong_type", f"{column!r} is {type(value).__name__}, expected text")
    if not isinstance(value, str):
        raise _RowError("wrong_type", f"{column!r} is a number ({value!r}), expected text")
    if len(value) > max_chars:
        raise _RowError("field_too_long", f"{column!r} has {len(value)} characters")
    return value


class _RowError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _messages(value: Any, column: str, max_chars: int) -> tuple[str, list[Turn]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)  # CSV cells hold a JSON list
        except json.JSONDecodeError as exc:
            raise _RowError("wrong_type", f"{column!r} is not a JSON list of messages") from exc
    if hasattr(value, "tolist"):  # numpy arrays from Parquet list columns
        value = value.tolist()
    if not isinstance(value, list):
        raise _RowError("wrong_type", f"{column!r} is {type(value).__name__}, expected a list")
    system, turns = "", list[Turn]()
    for i, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise _RowError("wrong_type", f"{column!r} item {i} is not an object")
        role = role_of(message.get("role", message.get("from")))
        content = message.get("content", message.get("value"))
        if role is None:
            raise _RowError("bad_role", f"{column!r} item {i} has an unknown role")
        text = _text(content, f"{column}[{i}]", max_chars)
        if role == "system":
            if turns:
                raise _RowError("bad_role", f"{column!r}: a system message after turn {i}")
            system = text
        else:
            turns.append(Turn(role, text))
    return system, turns


def _history(value: Any, column: str, max_chars: int) -> list[Turn]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise _RowError("wrong_type", f"{column!r} is not a JSON list of pairs") from exc
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list):
        raise _RowError("wrong_type", f"{column!r} is {type(value).__name__}, expected a list")
    turns: list[Turn] = []
    for pair in value:
        pair = pair.tolist() if hasattr(pair, "tolist") else pair
        if not isinstance(pair, list) or len(pair) != 2:
            raise _RowError("wrong_type", f"{column!r} items must be [prompt, response]")
        turns += [
            Turn("user", _text(pair[0], column, max_chars)),
            Turn("assistant", _text(pair[1], column, max_chars)),
        ]
    return turns


def check_turns(turns: list[Turn]) -> None:
    """User first, alternating, ending with the assistant, no empty turn (else a
    ``_RowError`` that rejects the row)."""
    if not turns:
        raise _RowError("empty", "no messages")
    for i, turn in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if turn.role != expected:
            raise _RowError("bad_order", f"turn {i} is {turn.role}, expected {expected}")
        if not turn.content.strip():
            raise _RowError(
                "empty_output" if turn.role == "assistant" else "empty_instruction",
                f"turn {i} ({turn.role}) is empty",
            )
    if len(turns) % 2:
        raise _RowError("bad_order", "the conversation does not end with an answer")


def row_to_example(
    row: Mapping[str, Any], mapping: ColumnMapping, ref: str, max_chars: int
) -> Example:
    """One source row through the resolved mapping (``_RowError`` when it is unusable)."""
    if mapping.messages is not None:
        system, turns = _messages(row.get(mapping.messages), mapping.messages, max_chars)
        if mapping.system:
            system = _text(row.get(mapping.system), mapping.system, max_chars) or system
        check_turns(turns)
        return Example(tuple(turns), system, "", ref)
    assert mapping.instruction is not None and mapping.output is not None
    turns = (
        _history(row.get(mapping.history), mapping.history, max_chars) if mapping.history else []
    )
    turns += [
        Turn("user", _text(row.get(mapping.instruction), mapping.instruction, max_chars)),
        Turn("assistant", _text(row.get(mapping.output), mapping.output, max_chars)),
    ]
    check_turns(turns)
    system = _text(row.get(mapping.system), mapping.system, max_chars) if mapping.system else ""
    input_ = _text(row.get(mapping.input), mapping.input, max_chars) if mapping.input else ""
    return Example(tuple(turns), system, input_, ref)


def _csv_rows(data: bytes, name: str) -> tuple[list[str], Iterator[dict[str, Any]]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(
            f"{name} is not UTF-8 (byte {exc.start}); Korean Excel saves CP949 by default: "
            "save as 'CSV UTF-8' or convert with iconv -f cp949 -t utf-8"
        ) from exc
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        columns = list(reader.fieldnames or [])
    except csv.Error as exc:
        raise DatasetFormatError(f"{name}: corrupt CSV header ({exc})") from exc

    def rows() -> Iterator[dict[str, Any]]:
        try:
            for row in reader:
                if None in row:
                    extra = row.pop(None)
                    row["\0extra"] = extra
                yield row
        except csv.Error as exc:
            raise DatasetFormatError(
                f"{name}: corrupt CSV at line {reader.line_num} ({exc})"
            ) from exc

    return columns, rows()


def _jsonl_rows(data: bytes, name: str) -> tuple[list[str], Iterator[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetFormatError(f"{name}: line {n} is not valid JSON ({exc})") from exc
        if not isinstance(value, dict):
            raise DatasetFormatError(f"{name}: line {n} is {type(value).__name__}, not an object")
        rows.append(value)
    return _columns(rows), iter(rows)


def _json_rows(data: bytes, name: str) -> tuple[list[str], Iterator[dict[str, Any]]]:
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{name} is not valid JSON ({exc})") from exc
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        value = value["data"]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise DatasetFormatError(f"{name}: expected a JSON array of objects")
    return _columns(value), iter(value)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _parquet_rows(
    data: bytes, name: str, max_rows: int
) -> tuple[list[str], Iterator[dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise DatasetFormatError(f"{name} is not a readable Parquet file ({exc})") from exc
    if pf.metadata.num_rows > max_rows:
        raise DatasetTooLarge(
            f"{name} has {pf.metadata.num_rows} rows; the cap is {max_rows} "
            "(Settings.datasets.max_rows)"
        )

    def rows() -> Iterator[dict[str, Any]]:
        try:
            for batch in pf.iter_batches(batch_size=2048):
                yield from batch.to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise DatasetFormatError(f"{name}: corrupt Parquet data ({exc})") from exc

    return list(pf.schema_arrow.names), rows()


def read_rows(
    data: bytes,
    name: str,
    kind: SourceKind | None,
    *,
    max_bytes: int,
    max_rows: int,
) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """Columns and rows of a tabular source held in memory."""
    if len(data) > max_bytes:
        raise DatasetTooLarge(
            f"{name} is {len(data)} bytes; the cap is {max_bytes} "
            "(Settings.datasets.max_file_bytes)"
        )
    kind = kind or detect_kind(name)
    if kind == "csv":
        return _csv_rows(data, name)
    if kind == "jsonl":
        return _jsonl_rows(data, name)
    if kind == "json":
        return _json_rows(data, name)
    return _parquet_rows(data, name, max_rows)


def load_examples(
    data: bytes,
    name: str,
    kind: SourceKind | None,
    mapping: ColumnMapping,
    *,
    max_bytes: int,
    max_rows: int,
    max_field_chars: int,
    progress: Callable[[int], None] | None = None,
) -> SourceRows:
    """Examples of a tabular source; row numbers (1-based, data rows) are the refs."""
    columns, rows = read_rows(data, name, kind, max_bytes=max_bytes, max_rows=max_rows)
    resolved = mapping.resolve(columns)
    out = SourceRows()
    for n, row in enumerate(rows, 1):
        if n > max_rows:
            raise DatasetTooLarge(
                f"{name} has more than {max_rows} rows (Settings.datasets.max_rows)"
            )
        out.total = n
        ref = f"row {n}"
        try:
            if "\0extra" in row:
                raise _RowError("wrong_type", "more cells than header columns")
            out.examples.append(row_to_example(row, resolved, ref, max_field_chars))
        except _RowError as exc:
            out.rejected.append(Rejection(ref, exc.reason, exc.detail))
        if progress is not None and n % 200 == 0:
            progress(200)
    if progress is not None:
        progress(out.total % 200)
    return out


__all__ = [
    "SOURCE_KINDS",
    "ColumnMapping",
    "Rejection",
    "SourceKind",
    "SourceRows",
    "check_turns",
    "detect_kind",
    "load_examples",
    "read_rows",
]
