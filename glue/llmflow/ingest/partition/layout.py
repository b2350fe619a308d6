"""Glyphs into lines: the first step of reading a page from geometry.

Why geometry instead of the PDF's content-stream order: producers write text in any order
(our Korean sample draws the bottom half of the page first) and split lines into pieces.
Lines are built from runs of glyphs that sit side by side in stream order, then merged per
row; :mod:`order` sorts them the way a person reads and :mod:`blocks` forms paragraphs.
Glyphs are characters for PDF text and words for OCR.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Final

SEGMENT_GAP: Final = 1.0  # line heights; a wider gap inside a row splits it into two lines
SPACE_GAP: Final = 0.15  # line heights; a wider gap between glyphs is a word space
SOFT_HYPHEN: Final = "\x02"  # pdfium's marker for a hyphen at the end of a line
_X_ORDER: Final = attrgetter("x0", "index")  # ligature parts share x0; keep stream order


@dataclass(slots=True)
class Glyph:
    """A character (PDF) or word (OCR) with its box in points, y growing downwards."""

    text: str
    x0: float
    top: float
    x1: float
    bottom: float
    space_before: bool | None = None  # None: decide from the gap to the previous glyph
    index: int = -1  # position in the source text page, for font look-ups


@dataclass(slots=True)
class Line:
    """Glyphs on one baseline that do not cross a column gutter."""

    glyphs: list[Glyph]
    x0: float = 0.0
    top: float = 0.0
    x1: float = 0.0
    bottom: float = 0.0
    text: str = ""
    bold: bool = False

    @property
    def height(self) -> float:
        return self.bottom - self.top


def build_lines(glyphs: Sequence[Glyph]) -> list[Line]:
    """Lines from glyphs given in content-stream order.

    First consecutive glyphs that sit side by side on one baseline form runs (this keeps
    superscripts and glyphs of fonts with odd ascents on their line); then runs that touch
    on the same row are merged, for producers that emit a line in pieces and out of order.
    """
    runs = _stream_runs(glyphs)
    lines: list[Line] = []
    for row in _merge_runs(runs):
        lines.extend(_split_row(row))
    return lines


def _overlap(a_top: float, a_bottom: float, b_top: float, b_bottom: float) -> float:
    """Vertical overlap as a share of the shorter of the two extents."""
    shorter = min(a_bottom - a_top, b_bottom - b_top)
    return (min(a_bottom, b_bottom) - max(a_top, b_top)) / shorter if shorter > 0 else 0.0


def _stream_runs(glyphs: Sequence[Glyph]) -> list[list[Glyph]]:
    runs: list[list[Glyph]] = []
    run: list[Glyph] = []
    last: Glyph | None = None
    for glyph in glyphs:  # hot loop: inlined overlap test
        if last is not None:
            l_top, l_bottom, g_top, g_bottom = last.top, last.bottom, glyph.top, glyph.bottom
            h_last, h_glyph = l_bottom - l_top, g_bottom - g_top
            shorter, height = (h_last, h_glyph) if h_last < h_glyph else (h_glyph, h_last)
            overlap = (l_bottom if l_bottom < g_bottom else g_bottom) - (
                l_top if l_top > g_top else g_top
            )
            if (
                overlap >= 0.5 * shorter
                and glyph.x0 >= last.x0 - 0.25 * height
                and glyph.x0 - last.x1 <= SEGMENT_GAP * height
            ):
                run.append(glyph)
                last = glyph
                continue
            runs.append(run)
        run = [glyph]
        last = glyph
    if run:
        runs.append(run)
    return runs


def _merge_runs(runs: list[list[Glyph]]) -> list[list[Glyph]]:
    """Union runs that overlap vertically and touch horizontally (sweep over tops)."""
    boxes = [
        (
            min(g.x0 for g in r),
            _middle([g.top for g in r]),
            max(g.x1 for g in r),
            _middle([g.bottom for g in r]),
        )
        for r in runs
    ]
    order = sorted(range(len(runs)), key=lambda i: boxes[i][1])
    parent = list(range(len(runs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for position, i in enumerate(order):
        x0, top, x1, bottom = boxes[i]
        for j in order[position + 1 :]:
            ox0, otop, ox1, obottom = boxes[j]
            if otop >= bottom:
                break
            height = max(bottom - top, obottom - otop)
            gap = max(x0, ox0) - min(x1, ox1)
            if _overlap(top, bottom, otop, obottom) >= 0.5 and gap <= SEGMENT_GAP * height:
                parent[find(j)] = find(i)
    groups: dict[int, list[Glyph]] = {}
    for i in order:
        groups.setdefault(find(i), []).extend(runs[i])
    return list(groups.values())


def _middle(values: list[float]) -> float:
    """Median without ``statistics`` overhead (called for every line)."""
    values.sort()
    return values[len(values) // 2]


def _split_row(row: list[Glyph]) -> list[Line]:
    row.sort(key=_X_ORDER)
    height = _middle([g.bottom - g.top for g in row])
    lines: list[Line] = []
    current: list[Glyph] = [row[0]]
    reach = row[0].x1  # right edge so far: an accent may sit inside the previous word
    for glyph in row[1:]:
        previous = current[-1]
        if (
            glyph.text == previous.text
            and abs(glyph.x0 - previous.x0) < 0.1 * height
            and abs(glyph.index - previous.index) > 1
        ):
            continue  # the same glyph printed twice (fake bold), not a ligature's parts
        if glyph.x0 - reach > SEGMENT_GAP * height:
            lines.append(_make_line(current, height))
            current, reach = [], glyph.x1
        current.append(glyph)
        reach = max(reach, glyph.x1)
    lines.append(_make_line(current, height))
    return lines


def _make_line(glyphs: list[Glyph], height: float) -> Line:
    parts: list[str] = []
    reach: float | None = None
    for glyph in glyphs:
        if reach is not None and (
            glyph.space_before
            if glyph.space_before is not None
            else glyph.x0 - reach > SPACE_GAP * height
        ):
            parts.append(" ")
        parts.append(glyph.text)
        reach = glyph.x1 if reach is None else max(reach, glyph.x1)
    return Line(
        glyphs=glyphs,
        x0=min(g.x0 for g in glyphs),
        top=_middle([g.top for g in glyphs]),
        x1=max(g.x1 for g in glyphs),
        bottom=_middle([g.bottom for g in glyphs]),
        text="".join(parts).strip(),
    )


def join_lines(texts: Sequence[str]) -> str:
    """Join wrapped lines of a paragraph: undo end-of-line hyphens, no space between CJK."""
    result = ""
    for text in texts:
        if not result:
            result = text
        elif result.endswith(SOFT_HYPHEN):
            stem = result[:-1]
            result = stem + text if text[:1].islower() else stem + "-" + text
        elif _is_cjk(result[-1]) and text and _is_cjk(text[0]):
            result += text
        else:
            result += " " + text
    return result.replace(SOFT_HYPHEN, "-")


def _is_cjk(char: str) -> bool:
    """Chinese/Japanese characters, which are written without spaces (Hangul is not)."""
    code = ord(char)
    return 0x4E00 <= code <= 0x9FFF or 0x3040 <= code <= 0x30FF or 0x3000 <= code <= 0x303F
