"""Structure-aware chunking measured in embedding-model tokens.

* A chunk never spans two sections: a ``Title`` closes the running chunk, and so does a
  paragraph that opens an article (``제25조(통상임금) …``), which becomes the last part of the
  chunk's section path.
* Tables stay whole (their HTML travels in the chunk metadata); only a table larger than the
  index field can hold is split by rows, repeating its header row.
* Long paragraphs are split at sentence boundaries, then at token boundaries.
* Overlap: the tail sentences of the previous chunk of the same section, up to
  ``overlap_tokens``.
* Chunk ids are a hash of (document, version, position): the same input gives the same ids.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmflow.ingest.elements import Element

TokenCounter = Callable[[str], int]
_SENTENCE_END = re.compile(r"(?<=[.!?。])\s+|(?<=다\.)\s*|\n+")
_MAX_TABLE_CHARS = 18_000  # 3 bytes per Hangul: stays under Milvus' 64 KiB VARCHAR
# A paragraph that opens an article ("제25조(통상임금) …"): regulations often arrive as plain
# paragraphs without headings, and an article is the unit people cite and ask about.
_ARTICLE_START = re.compile(r"^제\s*\d+\s*조(?:\s*의\s*\d+)?\s*\(([^)]{1,40})\)")


@dataclass(slots=True)
class Chunk:
    chunk_id: str
    index: int
    text: str
    section_path: list[str]
    page: int | None
    element_types: list[str]
    token_count: int
    table_html: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def section(self) -> str:
        return " > ".join(self.section_path)


def chunk_id(document_id: str, version: int, index: int) -> str:
    return hashlib.sha256(f"{document_id}:{version}:{index}".encode()).hexdigest()[:32]


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


@dataclass
class _Draft:
    parts: list[str] = field(default_factory=list)
    tokens: int = 0
    page: int | None = None
    types: list[str] = field(default_factory=list)


class Chunker:
    def __init__(self, count_tokens: TokenCounter, max_tokens: int, overlap_tokens: int) -> None:
        if max_tokens < 16:
            raise ValueError("chunk size must be at least 16 tokens")
        if not 0 <= overlap_tokens < max_tokens // 2:
            raise ValueError("overlap must be non-negative and below half the chunk size")
        self.count = count_tokens
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens

    def _pieces(self, text: str) -> list[tuple[str, int]]:
        """Split text into pieces that each fit into one chunk."""
        n = self.count(text)
        if n <= self.max_tokens:
            return [(text, n)]
        pieces: list[tuple[str, int]] = []
        for sentence in split_sentences(text):
            m = self.count(sentence)
            if m <= self.max_tokens:
                pieces.append((sentence, m))
                continue
            words = sentence.split()
            step = max(1, len(words) * self.max_tokens // (m + 1))
            for i in range(0, len(words), step):
                part = " ".join(words[i : i + step])
                pieces.append((part, self.count(part)))
        return pieces

    def _overlap(self, parts: list[str]) -> list[str]:
        if not self.overlap_tokens:
            return []
        tail: list[str] = []
        budget = self.overlap_tokens
        for sentence in reversed(split_sentences(" ".join(parts))):
            n = self.count(sentence)
            if n > budget:
                break
            tail.insert(0, sentence)
            budget -= n
        return tail

    def split(self, elements: Sequence[Element], document_id: str, version: int) -> list[Chunk]:
        chunks: list[Chunk] = []
        section: list[str] = []
        draft = _Draft()

        def emit(text: str, tokens: int, page: int | None, types: list[str], **extra: Any) -> None:
            idx = len(chunks)
            chunks.append(
                Chunk(
                    chunk_id=chunk_id(document_id, version, idx),
                    index=idx,
                    text=text,
                    section_path=list(section),
                    page=page,
                    element_types=sorted(set(types)),
                    token_count=tokens,
                    **extra,
                )
            )

        def flush(keep_overlap: bool) -> None:
            nonlocal draft
            # A heading alone is no answer: it lives on in the section path (and the
            # embedded header) of the chunks below it.
            if draft.parts and set(draft.types) != {"Title"}:
                emit("\n".join(draft.parts), draft.tokens, draft.page, draft.types)
            carry = self._overlap(draft.parts) if keep_overlap and draft.parts else []
            draft = _Draft()
            if carry:
                draft.parts = carry
                draft.tokens = sum(self.count(c) for c in carry)
                draft.types = ["Overlap"]

        for el in elements:
            text = el.text.strip()
            if not text or el.type in ("PageBreak", "Header", "Footer"):
                continue
            if el.type == "Title":
                flush(keep_overlap=False)
                section = [*el.section_path, text]
                section = section[-4:]
                draft.parts, draft.tokens, draft.page, draft.types = (
                    [text],
                    self.count(text),
                    el.page,
                    ["Title"],
                )
                continue
            if el.section_path and el.section_path != section[: len(el.section_path)]:
                flush(keep_overlap=False)
                section = list(el.section_path)[-4:]
            article = _ARTICLE_START.match(text) if el.type != "Table" else None
            if article:
                flush(keep_overlap=False)
                base = section[:-1] if section and _ARTICLE_START.match(section[-1]) else section
                section = [*base, article.group(0)][-4:]
            if el.type == "Table":
                flush(keep_overlap=False)
                for part_text, part_html in _table_parts(text, el.table_html):
                    emit(part_text, self.count(part_text), el.page, ["Table"], table_html=part_html)
                continue
            for piece, n in self._pieces(text):
                if (
                    draft.tokens + n > self.max_tokens
                    and draft.parts
                    and draft.types != ["Overlap"]
                ):
                    flush(keep_overlap=True)
                if draft.tokens + n > self.max_tokens and draft.types == ["Overlap"]:
                    draft = _Draft()  # overlap would not leave room for the new piece
                if draft.page is None:
                    draft.page = el.page
                draft.parts.append(piece)
                draft.tokens += n
                draft.types.append(el.type)
        only_titles = set(draft.types) == {"Title"}
        if draft.parts and draft.types != ["Overlap"] and (not only_titles or not chunks):
            emit("\n".join(draft.parts), draft.tokens, draft.page, draft.types)
        return chunks


def _table_parts(text: str, html: str | None) -> list[tuple[str, str | None]]:
    """Whole table, or row groups with the header repeated when it is too large to store."""
    if len(text) <= _MAX_TABLE_CHARS and (html is None or len(html) <= 3 * _MAX_TABLE_CHARS):
        return [(text, html)]
    rows = text.splitlines()
    header, body = (rows[0], rows[1:]) if rows else ("", [])
    parts: list[tuple[str, str | None]] = []
    current: list[str] = [header]
    size = len(header)
    for row in body:
        if size + len(row) > _MAX_TABLE_CHARS and len(current) > 1:
            parts.append(("\n".join(current), None))
            current, size = [header], len(header)
        current.append(row)
        size += len(row) + 1
    if len(current) > 1 or not parts:
        parts.append(("\n".join(current), None))
    return parts
