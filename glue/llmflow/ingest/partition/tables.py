"""Tables as HTML plus plain text, shared by the PDF, OCR and HWP backends.

Why HTML: it is the only widely understood text form that keeps merged cells (``rowspan`` /
``colspan``), which Korean forms and reports use everywhere; Markdown cannot express them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape


@dataclass(slots=True)
class Cell:
    """One table cell placed on the table's grid (0-based row/column, spans >= 1)."""

    row: int
    col: int
    text: str
    rowspan: int = 1
    colspan: int = 1
    bbox: tuple[float, float, float, float] | None = None  # where it was found, if known


def cells_to_html(cells: Sequence[Cell]) -> str:
    """HTML ``<table>`` for cells with spans; grid positions without a cell stay empty."""
    if not cells:
        return "<table></table>"
    n_rows = max(c.row + c.rowspan for c in cells)
    by_row: dict[int, list[Cell]] = {}
    for cell in cells:
        by_row.setdefault(cell.row, []).append(cell)
    parts = ["<table>"]
    for row in range(n_rows):
        parts.append("<tr>")
        for cell in sorted(by_row.get(row, []), key=lambda c: c.col):
            attrs = ""
            if cell.rowspan > 1:
                attrs += f' rowspan="{cell.rowspan}"'
            if cell.colspan > 1:
                attrs += f' colspan="{cell.colspan}"'
            text = escape(cell.text).replace("\n", "<br/>")
            parts.append(f"<td{attrs}>{text}</td>")
        parts.append("</tr>")
    parts.append("</table>")
    return "".join(parts)


def rows_to_cells(rows: Sequence[Sequence[str | None]]) -> list[Cell]:
    """Cells of a simple row-major table (``None`` marks a position covered by a span)."""
    cells: list[Cell] = []
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if value is not None:
                cells.append(Cell(row=r, col=c, text=value.strip()))
    return cells


def cells_to_text(cells: Sequence[Cell]) -> str:
    """Plain text of a table: one line per row, cells separated by a space."""
    by_row: dict[int, list[Cell]] = {}
    for cell in cells:
        by_row.setdefault(cell.row, []).append(cell)
    lines = []
    for row in sorted(by_row):
        texts = [" ".join(c.text.split()) for c in sorted(by_row[row], key=lambda c: c.col)]
        line = " ".join(t for t in texts if t)
        if line:
            lines.append(line)
    return "\n".join(lines)
