"""Shared finishing steps: clean text, guess structure of plain lines, attach section paths.

Every backend emits elements in reading order with ``metadata["heading_level"]`` on titles
(0 = top level); :func:`finalize` turns that into ``section_path`` with a stack, so chunking
and retrieval see one model whatever the source format was.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from llmflow.ingest.elements import Element, ElementType
from llmflow.ingest.partition.language import detect_language

HEADING_LEVEL: Final = "heading_level"

_SPACES: Final = re.compile(r"[ \t\u00a0\u2000-\u200b\u3000]+")
_BLANK_LINES: Final = re.compile(r"\n{3,}")
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")

_BULLET: Final = re.compile(r"^[•·∙▪▫◦●○■□◆◇▶▷►▸※\-–—*+✓✔❍❏](\s|$)")
_ENUMERATED: Final = re.compile(
    r"^(\(?\d{1,3}[.)]|\(?[가-하][.)]|[①-⑳]|\(?[a-zA-Z][.)]|\(?[ivx]{1,4}\))\s*\S"
)
_CHAPTER: Final = re.compile(r"^제\s*\d+\s*(편|장)\b|^(?:PART|CHAPTER)\s+\w+", re.IGNORECASE)
_SECTION: Final = re.compile(r"^제\s*\d+\s*(절|관)\b|^[IVX]{1,4}\.\s|^[Ⅰ-Ⅻ][.\s]")
_NUMBERED_HEADING: Final = re.compile(r"^\d{1,2}(\.\d{1,2}){0,3}\.?\s+\S")
_ARTICLE: Final = re.compile(r"^제\s*\d+\s*조(의\s*\d+)?\s*\(")
# A line ending like a sentence ("...합니다.", "...한다", "...임") is prose, not a heading.
_SENTENCE_END: Final = re.compile(r"([.!?。:;]|[다요함음됨임까죠][.)\]]?)\s*$")


def normalize_text(text: str) -> str:
    """Collapse runs of spaces, strip each line and drop control characters."""
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def is_sentence(text: str) -> bool:
    """True when ``text`` ends like a sentence rather than a heading."""
    return _SENTENCE_END.search(text) is not None


def classify_line(text: str) -> tuple[ElementType, int | None]:
    """Element type and heading level of one paragraph of plain text (HWP, OCR, TXT).

    Korean documents mark structure with numbering rather than styles ("제1장", "Ⅰ.",
    "1. 개정이유", "가. ..."), so the numbering, length and ending decide the type.
    """
    stripped = text.strip()
    short = len(stripped) <= 40 and "\n" not in stripped
    if _BULLET.match(stripped):
        return "ListItem", None
    if short and not is_sentence(stripped):
        if _CHAPTER.match(stripped):
            return "Title", 0
        if _SECTION.match(stripped):
            return "Title", 1
        if _NUMBERED_HEADING.match(stripped) and len(stripped) <= 30:
            depth = stripped.split(None, 1)[0].rstrip(".").count(".")
            return "Title", 2 + depth
        if _ARTICLE.match(stripped):
            return "Title", 3
    if _ENUMERATED.match(stripped):
        return "ListItem", None
    return "NarrativeText", None


def finalize(elements: Iterable[Element]) -> list[Element]:
    """Clean text, drop empty elements, set ``section_path`` and ``language``.

    ``section_path`` is the stack of titles above an element: a title pops every title at
    its own level or deeper, so siblings replace each other and subsections nest.
    """
    stack: list[tuple[int, str]] = []
    result: list[Element] = []
    for element in elements:
        element.text = normalize_text(element.text)
        if not element.text or element.type == "PageBreak":
            continue
        if element.type == "Title":
            level = int(element.metadata.get(HEADING_LEVEL) or 0)
            element.metadata[HEADING_LEVEL] = level
            while stack and stack[-1][0] >= level:
                stack.pop()
            element.section_path = [title for _, title in stack]
            stack.append((level, element.text[:200]))
        elif element.type not in ("Header", "Footer"):
            element.section_path = [title for _, title in stack]
        if element.language is None:
            element.language = detect_language(element.text)
        result.append(element)
    return result
