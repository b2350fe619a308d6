"""Ruled tables on a page: pdfplumber's table finder on PDFium (or image) ruling lines.

pdfplumber's algorithm (snap/join edges, intersections, minimal cells, group cells into
tables) is used as is. Added on top: a table drawn with horizontal rules and inner column
lines but no outer left/right border (common in Korean reports and LaTeX ``booktabs``) gets
its missing borders, otherwise the finder sees no closed cells at all.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pdfplumber.table import (
    cells_to_tables,
    edges_to_intersections,
    intersections_to_cells,
    merge_edges,
)
from pdfplumber.utils.geometry import filter_edges

from llmflow.ingest.partition.layout import Glyph, Line, build_lines, join_lines
from llmflow.ingest.partition.tables import Cell, cells_to_html, cells_to_text

_TOLERANCE: Final = 3.0  # points, pdfplumber's default snap/join/intersection tolerance
_Box = tuple[float, float, float, float]


@dataclass(slots=True)
class TableRegion:
    """A table found on a page: its box, its cells with text, and the glyphs it consumed."""

    bbox: _Box
    cells: list[Cell] = field(default_factory=list)

    @property
    def html(self) -> str:
        return cells_to_html(self.cells)

    @property
    def text(self) -> str:
        return cells_to_text(self.cells)


def find_tables(
    edges: list[dict[str, Any]], glyphs: Sequence[Glyph], *, allow_empty: bool = False
) -> tuple[list[TableRegion], list[Glyph]]:
    """Tables with at least two rows and two columns, and the glyphs outside all of them.

    ``allow_empty`` keeps tables without any glyph inside (OCR fills their cells later).
    """
    if len(edges) < 4:
        return [], list(glyphs)
    merged = merge_edges(edges, _TOLERANCE, _TOLERANCE, _TOLERANCE, _TOLERANCE)
    merged = filter_edges(merged + _missing_borders(merged), min_length=_TOLERANCE)
    intersections = edges_to_intersections(merged, _TOLERANCE, _TOLERANCE)
    tables: list[TableRegion] = []
    remaining = list(glyphs)
    for cell_boxes in cells_to_tables(intersections_to_cells(intersections)):
        region = _region(cell_boxes, remaining, allow_empty)
        if region is None:
            continue
        x0, top, x1, bottom = region.bbox
        remaining = [
            g
            for g in remaining
            if not (x0 <= (g.x0 + g.x1) / 2 <= x1 and top <= (g.top + g.bottom) / 2 <= bottom)
        ]
        tables.append(region)
    return tables, remaining


def _missing_borders(edges: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Left/right borders for stacks of equally long rules that have inner column lines."""
    horizontal = [e for e in edges if e["orientation"] == "h"]
    vertical = [e for e in edges if e["orientation"] == "v"]
    groups: list[list[dict[str, Any]]] = []
    for edge in sorted(horizontal, key=lambda e: (round(e["x0"]), round(e["x1"]), e["top"])):
        for group in groups:
            if (
                abs(group[0]["x0"] - edge["x0"]) <= _TOLERANCE
                and abs(group[0]["x1"] - edge["x1"]) <= _TOLERANCE
            ):
                group.append(edge)
                break
        else:
            groups.append([edge])
    added: list[dict[str, Any]] = []
    for group in groups:
        if len(group) < 3:
            continue
        x0 = min(e["x0"] for e in group)
        x1 = max(e["x1"] for e in group)
        top = min(e["top"] for e in group)
        bottom = max(e["top"] for e in group)
        inner = [
            v
            for v in vertical
            if x0 + _TOLERANCE < v["x0"] < x1 - _TOLERANCE
            and v["top"] < bottom + _TOLERANCE
            and v["bottom"] > top - _TOLERANCE
        ]
        if not inner:
            continue
        for x in (x0, x1):
            if not any(
                abs(v["x0"] - x) <= _TOLERANCE and v["height"] >= 0.8 * (bottom - top)
                for v in vertical
            ):
                added.append(
                    {
                        "orientation": "v",
                        "object_type": "line",
                        "x0": x,
                        "x1": x,
                        "top": top,
                        "bottom": bottom,
                        "doctop": top,
                        "width": 0.0,
                        "height": bottom - top,
                    }
                )
    return added


def _region(
    cell_boxes: list[_Box], glyphs: Sequence[Glyph], allow_empty: bool
) -> TableRegion | None:
    """Place cells on a grid (with spans) and fill them with the glyphs they contain."""
    xs = _boundaries([c[0] for c in cell_boxes] + [c[2] for c in cell_boxes])
    ys = _boundaries([c[1] for c in cell_boxes] + [c[3] for c in cell_boxes])
    if len(xs) < 3 or len(ys) < 3:  # fewer than two columns or two rows: a frame, not a table
        return None
    bbox = (
        min(c[0] for c in cell_boxes),
        min(c[1] for c in cell_boxes),
        max(c[2] for c in cell_boxes),
        max(c[3] for c in cell_boxes),
    )
    inside = [
        g
        for g in glyphs
        if bbox[0] <= (g.x0 + g.x1) / 2 <= bbox[2] and bbox[1] <= (g.top + g.bottom) / 2 <= bbox[3]
    ]
    if not inside and not allow_empty:
        return None
    placed: list[tuple[Cell, list[Line]]] = []
    for x0, top, x1, bottom in cell_boxes:
        mine = [
            g
            for g in inside
            if x0 <= (g.x0 + g.x1) / 2 <= x1 and top <= (g.top + g.bottom) / 2 <= bottom
        ]
        lines = sorted(build_lines(mine), key=lambda ln: (round(ln.top), ln.x0))
        col, row = _index(xs, x0), _index(ys, top)
        cell = Cell(
            row=row,
            col=col,
            text="",
            rowspan=max(1, _index(ys, bottom) - row),
            colspan=max(1, _index(xs, x1) - col),
            bbox=(x0, top, x1, bottom),
        )
        placed.append((cell, lines))
    return TableRegion(bbox=bbox, cells=_split_unruled_rows(placed))


def _split_unruled_rows(placed: list[tuple[Cell, list[Line]]]) -> list[Cell]:
    """Split grid rows that hold several text rows without rules between them.

    Tables often rule only the header and the bottom; then the whole body is one grid row.
    A grid row is split when its cells' lines sit on shared baselines that most of its
    non-empty cells use (wrapped text in one cell does not qualify).
    """
    by_row: dict[int, list[tuple[Cell, list[Line]]]] = {}
    for cell, lines in placed:
        by_row.setdefault(cell.row, []).append((cell, lines))
    if len(by_row) > 3:  # rules between body rows exist; multi-line cells are just wrapped
        return [_filled(cell, lines) for cell, lines in placed]
    spanning = {cell.row for cell, _ in placed if cell.rowspan > 1}
    extra_rows = 0
    result: list[Cell] = []
    for row in sorted(by_row):
        members = by_row[row]
        bands = [] if row in spanning else _baselines([ln for _, lines in members for ln in lines])
        filled = sum(1 for _, lines in members if lines)
        usable = len(bands) >= 2 and all(
            sum(1 for _, lines in members if any(_band_of(bands, ln) == b for ln in lines))
            >= max(2, (filled + 1) // 2)
            for b in range(len(bands))
        )
        for cell, lines in members:
            cell.row += extra_rows
            if not usable:
                result.append(_filled(cell, lines))
                continue
            for b in range(len(bands)):
                texts = [ln.text for ln in lines if _band_of(bands, ln) == b]
                result.append(
                    Cell(
                        row=cell.row + b, col=cell.col, text=join_lines(texts), colspan=cell.colspan
                    )
                )
        if usable:
            extra_rows += len(bands) - 1
    return result


def _filled(cell: Cell, lines: list[Line]) -> Cell:
    cell.text = join_lines([ln.text for ln in lines])
    return cell


def _baselines(lines: list[Line]) -> list[float]:
    """Distinct line positions (tops within half a line height are one band)."""
    bands: list[float] = []
    for line in sorted(lines, key=lambda ln: ln.top):
        if not bands or line.top - bands[-1] > 0.5 * line.height:
            bands.append(line.top)
    return bands


def _band_of(bands: list[float], line: Line) -> int:
    return min(range(len(bands)), key=lambda b: abs(bands[b] - line.top))


def _boundaries(values: list[float]) -> list[float]:
    """Distinct grid lines: values closer than the tolerance are one line."""
    result: list[float] = []
    for value in sorted(values):
        if not result or value - result[-1] > _TOLERANCE:
            result.append(value)
    return result


def _index(boundaries: list[float], value: float) -> int:
    position = bisect.bisect_left(boundaries, value - _TOLERANCE)
    return min(position, len(boundaries) - 1)
