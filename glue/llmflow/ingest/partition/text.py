"""Plain text and delimited text (CSV/TSV) — no library needed beyond the standard one.

Why our own instead of Unstructured's ``partition_text``/``partition_csv``: the text one
classifies every short Korean line as a Title with English heuristics, and the CSV one makes
one Table element of the whole file, which for a 100 000-row export is megabytes of HTML in a
single element. Here CSV becomes tables of :data:`ROWS_PER_TABLE` rows with the header
repeated, so each stays a meaningful, chunkable unit.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Final

from llmflow.ingest.elements import Element
from llmflow.ingest.partition.detect import decode_text
from llmflow.ingest.partition.structure import HEADING_LEVEL, classify_line
from llmflow.ingest.partition.tables import cells_to_html, cells_to_text, rows_to_cells

ROWS_PER_TABLE: Final = 100
_PARAGRAPH_BREAK: Final = re.compile(r"\n\s*\n")


def partition_plain_text(data: bytes) -> list[Element]:
    """Paragraphs (blank-line separated) of a text file; list items start their own element."""
    return text_to_elements(decode_text(data))


def text_to_elements(text: str) -> list[Element]:
    """Elements of a plain-text string (also used for plain-text e-mail bodies)."""
    elements: list[Element] = []
    for block in _PARAGRAPH_BREAK.split(text.replace("\r\n", "\n").replace("\r", "\n")):
        current: list[str] = []
        for line in block.split("\n"):
            stripped = line.strip()
            if not stripped:
                continue
            kind, _ = classify_line(stripped)
            if kind == "ListItem" and current:
                elements.append(_paragraph(current))
                current = []
            current.append(stripped)
        if current:
            elements.append(_paragraph(current))
    return elements


def _paragraph(lines: list[str]) -> Element:
    text = "\n".join(lines)
    kind, level = classify_line(text)
    metadata = {HEADING_LEVEL: level} if kind == "Title" else {}
    return Element(text=text, type=kind, metadata=metadata)


def partition_delimited(data: bytes, delimiter: str | None = None) -> list[Element]:
    """Tables of a CSV/TSV file, :data:`ROWS_PER_TABLE` rows each, header row repeated."""
    text = decode_text(data)
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if any(row)]
    if not rows:
        return []
    header, body = rows[0], rows[1:]
    elements: list[Element] = []
    for start in range(0, max(len(body), 1), ROWS_PER_TABLE):
        chunk = [header, *body[start : start + ROWS_PER_TABLE]]
        cells = rows_to_cells(chunk)
        elements.append(
            Element(
                text=cells_to_text(cells),
                type="Table",
                table_html=cells_to_html(cells),
                metadata={"rows": f"{start + 1}-{start + len(chunk) - 1}"},
            )
        )
    return elements
