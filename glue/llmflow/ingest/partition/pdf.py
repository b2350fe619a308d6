"""PDF: our own text path (PDFium glyphs + geometry), OCR for pages without a text layer.

Why not Unstructured for PDF: its ``fast`` strategy downloads an NLP model at run time and
keeps the content-stream order, which scrambles Korean reading order on mixed-font pages;
``hi_res`` needs layout models from the Hugging Face hub. Here each page goes through
:mod:`layout` (lines), :mod:`order` (XY-cut reading order), :mod:`blocks` (paragraphs) and
:mod:`pdf_tables` (ruled tables as HTML); titles are found afterwards from font size and
weight relative to the document's body text, running heads and page numbers by position.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Final

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

from llmflow.ingest.elements import CorruptDocument, Element, ElementType, EncryptedDocument
from llmflow.ingest.partition.blocks import group_blocks, starts_list_item
from llmflow.ingest.partition.layout import Line, build_lines
from llmflow.ingest.partition.order import reading_order
from llmflow.ingest.partition.pdf_tables import TableRegion, find_tables
from llmflow.ingest.partition.pdf_text import (
    PDFIUM_LOCK,
    count_images,
    extract_glyphs,
    is_bold,
    is_invisible,
    page_frame,
    ruling_edges,
    scan_dpi,
)
from llmflow.ingest.partition.structure import HEADING_LEVEL, is_sentence

OCR_DPI: Final = 300
_TITLE_RATIO: Final = 1.15  # a paragraph this much taller than body text is a heading
_PAGE_NUMBER: Final = re.compile(r"^[-–—\s]*(page\s*)?\d{1,4}(\s*(/|of)\s*\d{1,4})?[-–—\s]*$", re.I)
_HAS_LETTER: Final = re.compile(r"[^\W\d_]")
_RUNNING_NUMBER: Final = re.compile(r"^\d{1,4}\s+\S.*\D$|^\D.*\S\s+\d{1,4}$")
_DIGITS: Final = re.compile(r"\d+")


@dataclass(slots=True)
class _Paragraph:
    text: str
    page: int
    bbox: tuple[float, float, float, float]
    height: float
    bold: bool
    lines: int
    kind: ElementType | None = None
    table: TableRegion | None = None
    zone: str | None = None
    page_height: float = 0.0
    ocr_layer: bool = False  # invisible text over a scan: its box sizes say nothing of style


def partition_pdf(
    data: bytes, filename: str, *, ocr_languages: str, ocr_min_text_chars: int
) -> list[Element]:
    """Elements of a PDF in reading order; scanned pages are OCR'd with Tesseract.

    PDFium is not thread-safe and callers partition in worker threads, so every PDFium call
    runs under :data:`PDFIUM_LOCK`; Tesseract (a subprocess) runs outside it.
    """
    with PDFIUM_LOCK:
        try:
            document = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            if getattr(exc, "err_code", None) == pdfium_c.FPDF_ERR_PASSWORD:
                raise EncryptedDocument(
                    f"{filename} is protected with an open password. Save an unprotected copy "
                    "(print to PDF, or remove the password in the PDF editor) and upload that."
                ) from exc
            raise CorruptDocument(f"{filename} is not a readable PDF ({exc}).") from exc
        pages = len(document)
    paragraphs: list[_Paragraph] = []
    ocr_elements: dict[int, list[Element]] = {}
    try:
        for index in range(pages):
            scan: tuple[Image.Image, int] | None = None
            with PDFIUM_LOCK:
                page = document[index]
                try:
                    page_paragraphs = _page_paragraphs(page, index + 1)
                    letters = sum(len(p.text) for p in page_paragraphs if p.kind != "Header")
                    if letters < ocr_min_text_chars and _worth_ocr(page):
                        scan = _render_scan(page)
                    else:
                        paragraphs.extend(page_paragraphs)
                finally:
                    page.close()
            if scan is not None:
                ocr_elements[index + 1] = _ocr_page(*scan, index + 1, ocr_languages)
    finally:
        with PDFIUM_LOCK:
            document.close()
    elements = _classify(paragraphs)
    for page_number, page_elements in sorted(ocr_elements.items()):
        position = next(
            (i for i, e in enumerate(elements) if (e.page or 0) > page_number), len(elements)
        )
        elements[position:position] = page_elements
    return elements


def _page_paragraphs(page: pdfium.PdfPage, number: int) -> list[_Paragraph]:
    frame = page_frame(page)
    textpage = page.get_textpage()
    try:
        glyphs, rotated = extract_glyphs(textpage, frame)
        if not glyphs and not rotated:
            return []
        tables, glyphs = find_tables(ruling_edges(page, frame), glyphs)
        lines = build_lines(glyphs)
        ocr_layer = bool(glyphs) and is_invisible(textpage, glyphs[0].index)
        for line in lines:
            first = line.glyphs[0].index
            line.bold = not ocr_layer and first >= 0 and is_bold(textpage, first)
    finally:
        textpage.close()
    heights = [ln.height for ln in lines]
    line_height = sorted(heights)[len(heights) // 2] if heights else 10.0
    items: list[Line | TableRegion] = [*lines, *tables]
    ordered = reading_order(items, _box, line_height)
    paragraphs: list[_Paragraph] = []
    run: list[Line] = []
    for item in [*ordered, None]:
        if isinstance(item, Line):
            run.append(item)
            continue
        for block in group_blocks(run):
            box = (
                min(ln.x0 for ln in block.lines),
                min(ln.top for ln in block.lines),
                max(ln.x1 for ln in block.lines),
                max(ln.bottom for ln in block.lines),
            )
            paragraphs.append(
                _Paragraph(
                    text=block.text,
                    page=number,
                    bbox=box,
                    height=block.height,
                    bold=all(ln.bold for ln in block.lines),
                    lines=len(block.lines),
                    zone=_zone(box, frame.height),
                    page_height=frame.height,
                    ocr_layer=ocr_layer,
                )
            )
        run = []
        if isinstance(item, TableRegion):
            paragraphs.append(
                _Paragraph(
                    text=item.text,
                    page=number,
                    bbox=item.bbox,
                    height=line_height,
                    bold=False,
                    lines=0,
                    kind="Table",
                    table=item,
                )
            )
    if rotated:
        paragraphs.append(
            _Paragraph(
                text=rotated,
                page=number,
                bbox=(0, 0, 0, 0),
                height=line_height,
                bold=False,
                lines=1,
                kind="Header",
            )
        )
    return paragraphs


def _box(item: Line | TableRegion) -> tuple[float, float, float, float]:
    if isinstance(item, TableRegion):
        return item.bbox
    return item.x0, item.top, item.x1, item.bottom


def _zone(box: tuple[float, float, float, float], page_height: float) -> str | None:
    """ "top"/"bottom" for paragraphs in the page margins, where running heads live."""
    if box[3] <= 0.15 * page_height:
        return "top"
    if box[1] >= 0.85 * page_height:
        return "bottom"
    return None


def _margin_kinds(paragraphs: list[_Paragraph], body: float) -> None:
    """Mark running headers, footers and page numbers as Header/Footer.

    A margin paragraph is one if it is a page number, repeats on other pages (digits
    ignored), sits at the very edge, or is a small "2 Z. Shen et al." style running head.
    """

    def key(p: _Paragraph) -> str:
        return _DIGITS.sub("#", p.text.lower())

    repeated = Counter(key(p) for p in paragraphs if p.zone and p.kind is None)
    for p in paragraphs:
        if p.zone is None or p.kind is not None or len(p.text) > 100:
            continue
        edge = p.bbox[3] <= 0.06 * p.page_height or p.bbox[1] >= 0.94 * p.page_height
        running = (
            _RUNNING_NUMBER.search(p.text) is not None and not p.bold and p.height <= 1.05 * body
        )
        if _PAGE_NUMBER.match(p.text) or repeated[key(p)] >= 2 or edge or running:
            p.kind = "Header" if p.zone == "top" else "Footer"


def _worth_ocr(page: pdfium.PdfPage) -> bool:
    """A page without (enough) text is worth OCR only if it shows an image or drawings."""
    if count_images(page) > 0:
        return True
    return sum(1 for _ in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_PATH], max_depth=2)) >= 50


def _render_scan(page: pdfium.PdfPage) -> tuple[Image.Image, int]:
    """The page as a greyscale image for OCR, and its resolution in dpi.

    Rendered at the scan's own resolution (within 100-300 dpi): upsampling a 72 dpi scan to
    300 dpi makes letters too large for Tesseract, and more than 300 dpi only costs time.
    """
    dpi = min(max(scan_dpi(page) or OCR_DPI, 100.0), OCR_DPI)
    return page.render(scale=dpi / 72, grayscale=True).to_pil(), round(dpi)


def _ocr_page(image: Image.Image, dpi: int, number: int, languages: str) -> list[Element]:
    from llmflow.ingest.partition.ocr import ocr_image

    elements = ocr_image(image, languages=languages, dpi=dpi)
    for element in elements:
        element.page = number
        element.metadata["ocr"] = True
    return elements


def _classify(paragraphs: list[_Paragraph]) -> list[Element]:
    """Decide Title/ListItem/NarrativeText with the document's body text size as reference."""
    sizes: Counter[float] = Counter()
    for p in paragraphs:
        if p.kind is None and not p.ocr_layer:
            sizes[round(p.height * 2) / 2] += len(p.text)
    body = sizes.most_common(1)[0][0] if sizes else 10.0
    _margin_kinds(paragraphs, body)
    all_bold = all(p.bold for p in paragraphs if p.kind is None)
    candidates: list[tuple[_Paragraph, bool]] = []
    for p in paragraphs:
        if (
            p.kind is not None
            or p.ocr_layer
            or p.lines > 3
            or len(p.text) > 150
            or not _HAS_LETTER.search(p.text)
        ):
            continue
        if starts_list_item(p.text):
            continue
        if p.height >= _TITLE_RATIO * body:
            candidates.append((p, True))
        elif (
            p.bold
            and not all_bold
            and p.lines <= 2
            and len(p.text) <= 100
            and not is_sentence(p.text)
        ):
            candidates.append((p, False))
    levels = _size_levels([p.height for p, by_size in candidates if by_size])
    titles = {
        id(p): _level(levels, p.height) if by_size else len(levels) for p, by_size in candidates
    }
    elements: list[Element] = []
    for p in paragraphs:
        kind: ElementType
        metadata: dict[str, object] = {}
        if p.kind is not None:
            kind = p.kind
        elif id(p) in titles:
            kind = "Title"
            metadata[HEADING_LEVEL] = titles[id(p)]
        elif starts_list_item(p.text):
            kind = "ListItem"
        else:
            kind = "NarrativeText"
        elements.append(
            Element(
                text=p.text,
                type=kind,
                page=p.page,
                coordinates=p.bbox if p.lines or p.table else None,
                table_html=p.table.html if p.table else None,
                metadata=metadata,
            )
        )
    return elements


def _size_levels(heights: list[float]) -> list[float]:
    """Distinct heading sizes, largest first (sizes within 5 % are one level)."""
    levels: list[float] = []
    for height in sorted(heights, reverse=True):
        if not levels or height < levels[-1] * 0.95:
            levels.append(height)
    return levels


def _level(levels: list[float], height: float) -> int:
    return min(range(len(levels)), key=lambda i: abs(levels[i] - height))
