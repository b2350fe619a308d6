"""One training example, and its two LLaMA-Factory shapes (alpaca and sharegpt).

An :class:`Example` is a conversation: alternating user/assistant turns ending with the
assistant, an optional system prompt, and (for alpaca sources) the ``input`` column kept apart
from the instruction so that an alpaca source exports back to alpaca unchanged.

The file contract is LLaMA-Factory's ``data/README.md``: alpaca rows
``{instruction, input, output, system, history: [[user, assistant], ...]}``; sharegpt rows
``{conversations: [{from, value}], system}`` with ``human`` on odd and ``gpt`` on even
positions and an even number of turns (the loader skips any other row as "abnormal").
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["user", "assistant"]
Format = Literal["alpaca", "sharegpt"]
FORMATS: tuple[Format, ...] = ("alpaca", "sharegpt")

SHAREGPT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "system_tag": "system",
}
_ROLE_NAMES: dict[str, Role] = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
}
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Turn:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Example:
    """One conversation to learn from; ``ref`` says where it came from (row, message id)."""

    turns: tuple[Turn, ...]
    system: str = ""
    input: str = ""
    ref: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def prompt(self) -> str:
        """The last user turn, joined with ``input`` the way LLaMA-Factory joins them."""
        last = self.turns[-2].content if len(self.turns) >= 2 else ""
        return f"{last}\n{self.input}" if self.input else last

    @property
    def response(self) -> str:
        return self.turns[-1].content if self.turns else ""

    def texts(self) -> list[str]:
        """Every text of the example, in a fixed order (PII scrub, lengths, hashing)."""
        return [self.system, self.input, *(t.content for t in self.turns)]

    def with_texts(self, texts: Sequence[str]) -> Example:
        """The same example with its texts replaced (in :meth:`texts` order)."""
        system, input_, *contents = texts
        turns = tuple(Turn(t.role, c) for t, c in zip(self.turns, contents, strict=True))
        return Example(turns, system, input_, self.ref, self.meta)


def role_of(value: Any) -> Role | Literal["system"] | None:
    """A role name of OpenAI (user/assistant/system) or sharegpt (human/gpt/system) style."""
    if not isinstance(value, str):
        return None
    name = value.strip().lower()
    if name == "system":
        return "system"
    return _ROLE_NAMES.get(name)


def normalize(text: str) -> str:
    """The form two texts are compared in for deduplication and diffs: Unicode NFKC (full-
    width and compatibility characters folded, Hangul composed), case-folded, runs of
    whitespace collapsed to one space, trimmed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def content_key(example: Example) -> str:
    """Identity of the whole example after :func:`normalize` (exact-duplicate detection)."""
    parts = [normalize(example.system), normalize(example.input)]
    parts += [f"{t.role}:{normalize(t.content)}" for t in example.turns]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def prompt_key(example: Example) -> str:
    """Identity of everything but the final answer: two versions of a dataset that share a
    prompt key and differ in content hold a *changed* answer to the same question."""
    parts = [normalize(example.system), normalize(example.input)]
    parts += [f"{t.role}:{normalize(t.content)}" for t in example.turns[:-1]]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def to_alpaca(example: Example) -> dict[str, Any]:
    turns = example.turns
    history = [[turns[i].content, turns[i + 1].content] for i in range(0, len(turns) - 2, 2)]
    return {
        "instruction": turns[-2].content,
        "input": example.input,
        "output": turns[-1].content,
        "system": example.system,
        "history": history,
    }


def to_sharegpt(example: Example) -> dict[str, Any]:
    tags = SHAREGPT_TAGS
    conversations = []
    for i, turn in enumerate(example.turns):
        content = turn.content
        if i == len(example.turns) - 2 and example.input:
            content = f"{content}\n{example.input}"
        tag = tags["user_tag"] if turn.role == "user" else tags["assistant_tag"]
        conversations.append({tags["role_tag"]: tag, tags["content_tag"]: content})
    return {"conversations": conversations, "system": example.system}


def from_record(record: Mapping[str, Any], fmt: Format) -> Example:
    """Read back a row this module wrote (``materialize``d files, ``diff``)."""
    if fmt == "alpaca":
        turns: list[Turn] = []
        for user, assistant in record.get("history") or []:
            turns += [Turn("user", user), Turn("assistant", assistant)]
        turns += [Turn("user", record["instruction"]), Turn("assistant", record["output"])]
        return Example(tuple(turns), record.get("system") or "", record.get("input") or "")
    conv = record["conversations"]
    return Example(
        tuple(Turn(_ROLE_NAMES[m["from"]], m["value"]) for m in conv), record.get("system") or ""
    )


def choose_format(examples: Iterable[Example]) -> Format:
    """alpaca when every example is one question and one answer, else sharegpt."""
    return "sharegpt" if any(len(e.turns) > 2 for e in examples) else "alpaca"


def dataset_info(name: str, fmt: Format, files: Mapping[str, str]) -> dict[str, Any]:
    """``dataset_info.json`` for the split files (``{"train": "x_train.json", ...}``): one entry
    per split, named ``<name>_<split>`` (``dataset: x_train``, ``eval_dataset: x_val``)."""
    info: dict[str, Any] = {}
    for split, file_name in files.items():
        entry: dict[str, Any] = {"file_name": file_name, "formatting": fmt}
        if fmt == "alpaca":
            entry["columns"] = {
                "prompt": "instruction",
                "query": "input",
                "response": "output",
                "system": "system",
                "history": "history",
            }
        else:
            entry["columns"] = {"messages": "conversations", "system": "system"}
            entry["tags"] = {k: v for k, v in SHAREGPT_TAGS.items()}
        info[f"{name}_{split}"] = entry
    return info


def check_llamafactory_rows(rows: Sequence[Mapping[str, Any]], entry: Mapping[str, Any]) -> None:
    """Check rows against the loader contract of one ``dataset_info.json`` entry; raises
    ``ValueError`` naming the first row the LLaMA-Factory converter would skip or fail on."""
    columns = entry.get("columns", {})
    for n, row in enumerate(rows):
        if entry.get("formatting", "alpaca") == "alpaca":
            for col in (columns.get("prompt", "instruction"), columns.get("response", "output")):
                if not isinstance(row.get(col), str) or not row[col]:
                    raise ValueError(f"row {n}: {col!r} must be a non-empty string")
            for pair in row.get(columns.get("history", "history")) or []:
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise ValueError(f"row {n}: history items must be [prompt, response]")
            continue
        tags = {**SHAREGPT_TAGS, **entry.get("tags", {})}
        messages = row.get(columns.get("messages", "conversations"))
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"row {n}: messages must be a non-empty list")
        accept = ((tags["user_tag"], "observation"), (tags["assistant_tag"], "function_call"))
        for i, message in enumerate(messages):
            if message.get(tags["role_tag"]) not in accept[i % 2]:
                raise ValueError(f"row {n}: turn {i} has role {message.get(tags['role_tag'])!r}")
            if not isinstance(message.get(tags["content_tag"]), str):
                raise ValueError(f"row {n}: turn {i} content must be a string")
        if len(messages) % 2:
            raise ValueError(f"row {n}: an odd number of turns ({len(messages)})")


def dumps(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """A JSON array as LLaMA-Factory reads it; Korean kept readable, not escaped."""
    return (json.dumps(list(rows), ensure_ascii=False, indent=1) + "\n").encode()
