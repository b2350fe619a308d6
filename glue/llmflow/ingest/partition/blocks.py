"""Paragraphs from lines in reading order, and list-item detection.

A paragraph continues while the next line sits right below (or beside) the previous one in
the same size; a change from a short bold line to body text, a wider gap than the
paragraph's own line spacing, or a bullet/numbered line starts a new block.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from llmflow.ingest.partition.layout import Line, join_lines


@dataclass(slots=True)
class Block:
    """Consecutive lines of one paragraph (or the slot of one table) in reading order."""

    lines: list[Line] = field(default_factory=list)

    @property
    def text(self) -> str:
        return join_lines([line.text for line in self.lines])

    @property
    def height(self) -> float:
        return statistics.median(line.height for line in self.lines)


def group_blocks(lines: Sequence[Line]) -> list[Block]:
    """Paragraphs from lines in reading order: a block continues while the next line sits
    right below (or beside) the previous one in the same font size and weight."""
    blocks: list[Block] = []
    current = Block()
    for line in lines:
        if current.lines and _continues(current, line):
            current.lines.append(line)
            continue
        if current.lines:
            blocks.append(current)
        current = Block([line])
    if current.lines:
        blocks.append(current)
    return blocks


def _continues(block: Block, line: Line) -> bool:
    previous = block.lines[-1]
    height = previous.height
    if abs(line.height - height) > 0.2 * height:
        return False
    if (
        previous.bold
        and not line.bold
        and all(ln.bold for ln in block.lines)
        and (previous.x1 < line.x1 - height or len(block.lines) == 1)
    ):
        return False  # a bold heading line followed by body text
    if line.bold and not previous.bold and line.x1 < previous.x1 - 2 * height:
        return False  # a short bold line after body text is the next heading
    if abs(line.top - previous.top) < 0.3 * height and line.x0 >= previous.x1:
        return True  # the rest of the same row, split off at a wide space
    gap = line.top - previous.bottom
    allowed = 0.5 * height
    if len(block.lines) >= 2:  # paragraphs are separated by more than their line spacing
        first_gap = block.lines[1].top - block.lines[0].bottom
        allowed = min(allowed, max(first_gap, 0.0) + 0.25 * height)
    if not -0.3 * height <= gap <= allowed:
        return False
    if line.x0 >= previous.x1 or line.x1 <= previous.x0:
        return False
    right = max(ln.x1 for ln in block.lines)
    ended = previous.x1 < right - 2 * height and previous.text.endswith((".", "!", "?", "다"))
    return not ended and not starts_list_item(line.text)


_BULLETS: Final = frozenset("•·∙▪▫◦●○■□◆◇▶▷►▸※-–*+✓✔❍❏①②③④⑤⑥⑦⑧⑨⑩")


def starts_list_item(text: str) -> bool:
    """True for a line that opens a list item (bullet or "1." / "1)" / "가." numbering)."""
    if not text:
        return False
    if text[0] in _BULLETS:
        return True
    head = text.split(" ", 1)[0]
    if not 1 < len(head) <= 5 or head[-1] not in ".)":
        return False
    label = head[1:-1] if head[0] == "(" and head[-1] == ")" else head[:-1]
    if label.isdigit():
        return len(label) <= 2  # "1)" opens an item, "1999)" closes a citation
    return len(label) == 1 and (label.isalpha() or label in _KO_ORDINALS)


_KO_ORDINALS: Final = frozenset("가나다라마바사아자차카타파하")
