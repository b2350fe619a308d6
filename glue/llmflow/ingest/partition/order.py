"""Reading order by recursive XY-cut over line and table boxes.

A person reads a page by its whitespace: sections separated by wide horizontal gaps,
columns by vertical gutters. The recursive XY-cut follows that, with two refinements:

* a horizontal gap much taller than a line (a section break) is cut before columns, so a
  full-width band above a two-column body is read first;
* a vertical gap is a column gutter only if it does not merely separate the label and value
  cells of aligned rows (a borderless table), which must be read row by row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

SECTION_GAP: Final = 2.5  # line heights; a taller horizontal gap separates sections
COLUMN_GAP: Final = 0.6  # line heights; the narrowest vertical gap taken as a gutter

T = TypeVar("T")


@dataclass(slots=True)
class _Box(Generic[T]):
    item: T
    x0: float
    top: float
    x1: float
    bottom: float


def reading_order(
    items: Sequence[T], box: Callable[[T], tuple[float, float, float, float]], line_height: float
) -> list[T]:
    """Items (lines, tables) sorted the way a person reads the page; see module docstring."""
    boxes = [_Box(item, *box(item)) for item in items]
    out: list[T] = []
    _xy_cut(boxes, max(line_height, 1.0), out)
    return out


def _gaps(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Empty intervals between the union of ``spans`` (start, end) along one axis."""
    spans = sorted(spans)
    gaps: list[tuple[float, float]] = []
    reach = spans[0][1]
    for start, end in spans[1:]:
        if start > reach:
            gaps.append((reach, start))
        reach = max(reach, end)
    return gaps


def _xy_cut(boxes: list[_Box[T]], line_height: float, out: list[T]) -> None:
    if len(boxes) <= 1:
        out.extend(b.item for b in boxes)
        return
    h_gaps = _gaps([(b.top, b.bottom) for b in boxes])
    widest_h = max(h_gaps, key=lambda g: g[1] - g[0], default=None)
    if widest_h and widest_h[1] - widest_h[0] >= SECTION_GAP * line_height:
        _cut(boxes, widest_h, vertical=False, line_height=line_height, out=out)
        return
    v_gaps = [
        g for g in _gaps([(b.x0, b.x1) for b in boxes]) if g[1] - g[0] >= COLUMN_GAP * line_height
    ]
    if v_gaps:
        gap = max(v_gaps, key=lambda g: g[1] - g[0])
        if not (h_gaps and _is_row_table(boxes, gap, line_height)):
            _cut(boxes, gap, vertical=True, line_height=line_height, out=out)
            return
    if h_gaps:
        widest = widest_h[1] - widest_h[0] if widest_h else 0.0
        cuts = [g for g in h_gaps if g[1] - g[0] >= 0.9 * widest]
        for band in _bands(boxes, cuts):
            _xy_cut(band, line_height, out)
        return
    out.extend(b.item for b in sorted(boxes, key=lambda b: (b.top, b.x0)))


def _cut(
    boxes: list[_Box[T]],
    gap: tuple[float, float],
    *,
    vertical: bool,
    line_height: float,
    out: list[T],
) -> None:
    middle = (gap[0] + gap[1]) / 2
    if vertical:
        first = [b for b in boxes if b.x1 <= middle]
        second = [b for b in boxes if b.x1 > middle]
    else:
        first = [b for b in boxes if b.bottom <= middle]
        second = [b for b in boxes if b.bottom > middle]
    _xy_cut(first, line_height, out)
    _xy_cut(second, line_height, out)


def _bands(boxes: list[_Box[T]], cuts: list[tuple[float, float]]) -> list[list[_Box[T]]]:
    edges = sorted((a + b) / 2 for a, b in cuts)
    bands: list[list[_Box[T]]] = [[] for _ in range(len(edges) + 1)]
    for b in boxes:
        index = sum(1 for e in edges if b.bottom > e)
        bands[index].append(b)
    return [band for band in bands if band]


def _is_row_table(boxes: list[_Box[T]], gap: tuple[float, float], line_height: float) -> bool:
    """True when the gap separates short label cells from values on the same rows.

    Two text columns have lines that fill their column; a label/value table has a narrow
    side whose entries sit on the same baselines as entries on the other side.
    """
    middle = (gap[0] + gap[1]) / 2
    left = [b for b in boxes if b.x1 <= middle]
    right = [b for b in boxes if b.x1 > middle]
    if not left or not right:
        return False
    left_width = max(b.x1 for b in left) - min(b.x0 for b in left)
    right_width = max(b.x1 for b in right) - min(b.x0 for b in right)
    total = max(b.x1 for b in boxes) - min(b.x0 for b in boxes)
    if min(left_width, right_width) > 0.35 * total:
        return False
    narrow, wide = (left, right) if left_width <= right_width else (right, left)
    aligned = sum(1 for n in narrow if any(abs(n.top - w.top) < 0.3 * line_height for w in wide))
    return aligned >= 0.8 * len(narrow)
