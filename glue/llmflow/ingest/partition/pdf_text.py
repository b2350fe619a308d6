"""Characters and ruling lines of a PDF page, read with PDFium (``pypdfium2``).

Why PDFium and not pdfminer (pdfplumber's reader): pdfminer needs 65-160 ms per page to
produce characters, which alone breaks the ingest budget of 20 text pages/s on two cores;
PDFium gives the same characters with boxes in 5-15 ms. pdfplumber's table algorithm is
still used, on the ruling lines extracted here (see ``pdf_tables``).
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import threading
from dataclasses import dataclass
from typing import Any, Final

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from llmflow.ingest.partition.layout import SOFT_HYPHEN, SPACE_GAP, Glyph

_SPACES: Final = frozenset({0x20, 0xA0, 0x3000, 0x09, 0x0D, 0x0A, 0x2002, 0x2003, 0x2009})
_MAX_PATH_SEGMENTS: Final = 20_000  # vector drawings (maps, charts) are not tables
_RULE_THICKNESS: Final = 2.5  # points; a filled rectangle thinner than this is a rule
_BOLD_WEIGHT: Final = 600

#: PDFium keeps global state and is not thread-safe; hold this around every PDFium call.
PDFIUM_LOCK: Final = threading.RLock()


@dataclass(slots=True, frozen=True)
class PageFrame:
    """Maps PDF user space (y up, origin at the media box) to top-down crop-box points."""

    left: float
    top: float
    width: float
    height: float

    def to_box(
        self, x0: float, y0: float, x1: float, y1: float
    ) -> tuple[float, float, float, float]:
        return (
            min(x0, x1) - self.left,
            self.top - max(y0, y1),
            max(x0, x1) - self.left,
            self.top - min(y0, y1),
        )

    def contains(self, x: float, y: float) -> bool:
        return -1 <= x <= self.width + 1 and -1 <= y <= self.height + 1


def page_frame(page: pdfium.PdfPage) -> PageFrame:
    left, bottom, right, top = page.get_cropbox()
    return PageFrame(left=left, top=top, width=right - left, height=top - bottom)


def extract_glyphs(textpage: pdfium.PdfTextPage, frame: PageFrame) -> tuple[list[Glyph], str]:
    """Upright words on the page, and the text of rotated glyphs (margin stamps) in order.

    Loose boxes (font ascent to descent) are used so that all glyphs of a line share one
    height, which makes line grouping independent of the letters' shapes.
    """
    raw = textpage.raw
    count = pdfium_c.FPDFText_CountChars(raw)
    get_unicode, get_box, get_angle = _fast_functions()
    handle = ctypes.cast(raw, ctypes.c_void_p).value
    rect = pdfium_c.FS_RECTF()
    rect_ref = ctypes.addressof(rect)
    left, page_top = frame.left, frame.top
    max_x, max_y = frame.width + 1, frame.height + 1
    glyphs: list[Glyph] = []
    rotated: list[str] = []
    pending_space = False
    word: Glyph | None = None
    last_x0 = 0.0
    # Hot loop (every character of every page): locals only, no helper calls.
    for index in range(count):
        code = get_unicode(handle, index)
        if code in _SPACES:
            pending_space = True
            continue
        if code == 2:
            text = SOFT_HYPHEN
        elif code < 32 or 0xD800 <= code <= 0xDFFF or code in (0xFFFE, 0xFFFF):
            continue
        else:
            text = chr(code)
        if not get_box(handle, index, rect_ref):
            continue
        x0, x1 = rect.left - left, rect.right - left
        top, bottom = page_top - rect.top, page_top - rect.bottom
        cx, cy = (x0 + x1) / 2, (top + bottom) / 2
        if bottom <= top or not (-1 <= cx <= max_x and -1 <= cy <= max_y):
            continue  # clipped off the visible page
        # Only a box wider than tall can be a rotated glyph; skip the call for the rest.
        if x1 - x0 > 1.05 * (bottom - top) and 0.05 < get_angle(handle, index) < 6.23:
            rotated.append((" " if pending_space else "") + text)
            pending_space, word = False, None
            continue
        # Characters that continue a word (same line box, no gap) extend the previous glyph:
        # five times fewer objects for every later step, and words never straddle cells.
        if (
            word is not None
            and not pending_space
            and abs(top - word.top) < 0.1
            and abs(bottom - word.bottom) < 0.1
            and x0 >= last_x0 - 0.01
            and x0 - word.x1 <= SPACE_GAP * (bottom - top)
        ):
            word.text += text
            if x1 > word.x1:
                word.x1 = x1
        else:
            word = Glyph(text, x0, top, x1, bottom, pending_space or None, index)
            glyphs.append(word)
        last_x0 = x0
        pending_space = False
    return glyphs, "".join(rotated).strip()


@functools.cache
def _fast_functions() -> tuple[Any, Any, Any]:
    """GetUnicode/GetLooseCharBox/GetCharAngle taking plain addresses.

    pypdfium2's bindings type-check structure pointers on every call; on the loop over every
    character of every page that doubles the cost, so these prototypes take integers.
    """

    def c_function(name: str, restype: Any, *argtypes: Any) -> Any:
        address = ctypes.cast(getattr(pdfium_c, name), ctypes.c_void_p).value
        if address is None:  # pragma: no cover - the symbol is part of every PDFium build
            raise RuntimeError(f"PDFium has no {name}")
        return ctypes.CFUNCTYPE(restype, *argtypes)(address)

    return (
        c_function("FPDFText_GetUnicode", ctypes.c_uint, ctypes.c_void_p, ctypes.c_int),
        c_function(
            "FPDFText_GetLooseCharBox", ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p
        ),
        c_function("FPDFText_GetCharAngle", ctypes.c_float, ctypes.c_void_p, ctypes.c_int),
    )


def is_bold(textpage: pdfium.PdfTextPage, index: int) -> bool:
    """Whether the font of the character at ``index`` is bold (weight or font name)."""
    raw = textpage.raw
    if pdfium_c.FPDFText_GetFontWeight(raw, index) >= _BOLD_WEIGHT:
        return True
    flags = ctypes.c_int()
    size = pdfium_c.FPDFText_GetFontInfo(raw, index, None, 0, ctypes.byref(flags))
    if size <= 0:
        return False
    buffer = ctypes.create_string_buffer(size)
    pdfium_c.FPDFText_GetFontInfo(raw, index, buffer, size, ctypes.byref(flags))
    return b"bold" in buffer.value.lower() or bool(flags.value & (1 << 18))  # ForceBold


def count_images(page: pdfium.PdfPage) -> int:
    return sum(1 for _ in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=3))


def scan_dpi(page: pdfium.PdfPage) -> float | None:
    """Resolution of the largest image on the page (the scan), in pixels per inch."""
    best: tuple[float, float] | None = None
    for image in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=3):
        left, bottom, right, top = image.get_bounds()
        width_px, _ = image.get_px_size()
        area = (right - left) * (top - bottom)
        if right - left > 1 and (best is None or area > best[0]):
            best = (area, width_px / ((right - left) / 72))
    return best[1] if best else None


def ruling_edges(page: pdfium.PdfPage, frame: PageFrame) -> list[dict[str, Any]]:
    """Horizontal and vertical ruling lines as pdfplumber edge dicts (top-down points).

    Stroked straight segments count, and so do filled rectangles thinner than
    :data:`_RULE_THICKNESS` (many producers draw rules that way). Large filled areas are
    backgrounds and shading, not rules, so they do not create table cells.
    """
    edges: list[dict[str, Any]] = []
    budget = [_MAX_PATH_SEGMENTS]
    raw = page.raw
    for i in range(pdfium_c.FPDFPage_CountObjects(raw)):
        _collect(pdfium_c.FPDFPage_GetObject(raw, i), (1, 0, 0, 1, 0, 0), frame, edges, budget)
    return edges


_Matrix = tuple[float, float, float, float, float, float]


def _compose(inner: _Matrix, outer: _Matrix) -> _Matrix:
    a, b, c, d, e, f = inner
    A, B, C, D, E, F = outer
    return (
        a * A + b * C,
        a * B + b * D,
        c * A + d * C,
        c * B + d * D,
        e * A + f * C + E,
        e * B + f * D + F,
    )


def _collect(
    obj: Any, parent: _Matrix, frame: PageFrame, edges: list[dict[str, Any]], budget: list[int]
) -> None:
    kind = pdfium_c.FPDFPageObj_GetType(obj)
    m = pdfium_c.FS_MATRIX()
    if not pdfium_c.FPDFPageObj_GetMatrix(obj, ctypes.byref(m)):
        return
    matrix = _compose((m.a, m.b, m.c, m.d, m.e, m.f), parent)
    if kind == pdfium_c.FPDF_PAGEOBJ_FORM:
        for i in range(pdfium_c.FPDFFormObj_CountObjects(obj)):
            _collect(pdfium_c.FPDFFormObj_GetObject(obj, i), matrix, frame, edges, budget)
        return
    if kind != pdfium_c.FPDF_PAGEOBJ_PATH:
        return
    fill_mode, stroke = ctypes.c_int(), ctypes.c_int()
    pdfium_c.FPDFPath_GetDrawMode(obj, ctypes.byref(fill_mode), ctypes.byref(stroke))
    filled = fill_mode.value != pdfium_c.FPDF_FILLMODE_NONE
    if not filled and not stroke.value:
        return
    n = pdfium_c.FPDFPath_CountSegments(obj)
    budget[0] -= n
    if n <= 0 or budget[0] < 0:
        return
    for sub in _subpaths(obj, n, matrix):
        if stroke.value:
            for (x0, y0), (x1, y1) in itertools.pairwise(sub):
                _add_edge(frame.to_box(x0, y0, x1, y1), edges, frame)
        elif len(sub) >= 3:
            xs, ys = [p[0] for p in sub], [p[1] for p in sub]
            box = frame.to_box(min(xs), min(ys), max(xs), max(ys))
            if min(box[2] - box[0], box[3] - box[1]) <= _RULE_THICKNESS:
                _add_edge(box, edges, frame)


def _subpaths(obj: Any, n: int, matrix: _Matrix) -> list[list[tuple[float, float]]]:
    """Straight polylines of a path (Bézier pieces break a polyline), closed where closed."""
    a, b, c, d, e, f = matrix
    subpaths: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    x, y = ctypes.c_float(), ctypes.c_float()
    for i in range(n):
        segment = pdfium_c.FPDFPath_GetPathSegment(obj, i)
        pdfium_c.FPDFPathSegment_GetPoint(segment, ctypes.byref(x), ctypes.byref(y))
        point = (a * x.value + c * y.value + e, b * x.value + d * y.value + f)
        kind = pdfium_c.FPDFPathSegment_GetType(segment)
        if kind == pdfium_c.FPDF_SEGMENT_MOVETO or kind != pdfium_c.FPDF_SEGMENT_LINETO:
            if len(current) > 1:
                subpaths.append(current)
            current = [point]
        else:
            current.append(point)
        if pdfium_c.FPDFPathSegment_GetClose(segment) and current:
            current.append(current[0])
    if len(current) > 1:
        subpaths.append(current)
    return subpaths


def _add_edge(
    box: tuple[float, float, float, float], edges: list[dict[str, Any]], frame: PageFrame
) -> None:
    x0, top, x1, bottom = box
    width, height = x1 - x0, bottom - top
    if width >= 3 and height <= _RULE_THICKNESS:
        y = (top + bottom) / 2
        edges.append(
            {
                "orientation": "h",
                "object_type": "line",
                "x0": x0,
                "x1": x1,
                "top": y,
                "bottom": y,
                "doctop": y,
                "width": width,
                "height": 0.0,
            }
        )
    elif height >= 3 and width <= _RULE_THICKNESS:
        x = (x0 + x1) / 2
        edges.append(
            {
                "orientation": "v",
                "object_type": "line",
                "x0": x,
                "x1": x,
                "top": top,
                "bottom": bottom,
                "doctop": top,
                "width": 0.0,
                "height": height,
            }
        )


def is_invisible(textpage: pdfium.PdfTextPage, index: int) -> bool:
    """Whether the character is drawn invisibly: the OCR text layer of a scanned page."""
    obj = pdfium_c.FPDFText_GetTextObject(textpage.raw, index)
    if not obj:
        return False
    mode = pdfium_c.FPDFTextObj_GetTextRenderMode(obj)
    return bool(mode == pdfium_c.FPDF_TEXTRENDERMODE_INVISIBLE)
