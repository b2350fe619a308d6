"""OCR of images and scanned PDF pages with the Tesseract CLI (``kor+eng``).

Why the CLI with both ``tsv`` and ``txt`` output: the TSV gives word boxes and Tesseract's
own block/paragraph/line structure, but for Korean it lists each syllable of a word as a
separate "word"; the plain-text rendering of the same run spaces Korean correctly. We take
the structure from TSV and the spacing from the text, and fall back to joining runs of
single Hangul syllables when the two do not line up. ``OMP_THREAD_LIMIT=1`` because
Tesseract's OpenMP threads make it five times slower on a two-core machine, and callers
already parallelise across documents. Ruled tables in the image become Table elements.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image, ImageOps

from llmflow.ingest.elements import CorruptDocument, Element, UnsupportedFormat
from llmflow.ingest.partition.layout import Glyph, build_lines, join_lines
from llmflow.ingest.partition.pdf_tables import find_tables
from llmflow.ingest.partition.structure import HEADING_LEVEL, classify_line, is_sentence
from llmflow.ingest.partition.tables import Cell

_TIMEOUT_S: Final = 300
_MAX_PIXELS: Final = 40_000_000  # ~A3 at 400 dpi; larger images are scaled down first
_HANGUL_SINGLES: Final = re.compile(r"(?<![가-힣])([가-힣])(?: ([가-힣])(?![가-힣]))+")
_DARK: Final = 140  # grey level below which a pixel belongs to a ruling line
_MAX_RULE_RUNS: Final = 3000
_CELL_GAP: Final = 40  # white pixels around each table cell in the cell sheet


@dataclass(slots=True)
class _Word:
    key: tuple[int, int, int]  # block, paragraph, line
    glyph: Glyph


def partition_image(data: bytes, filename: str, *, languages: str) -> list[Element]:
    """OCR every frame of an image file (multi-page TIFFs give one page per frame)."""
    try:
        image = Image.open(io.BytesIO(data))
        frames = getattr(image, "n_frames", 1)
        elements: list[Element] = []
        for frame in range(frames):
            image.seek(frame)
            dpi = image.info.get("dpi", (0, 0))[0] or None
            page = ocr_image(image.copy(), languages=languages, dpi=int(dpi) if dpi else None)
            for element in page:
                element.page = frame + 1 if frames > 1 else None
                element.metadata["ocr"] = True
            elements.extend(page)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptDocument(f"{filename} is not a readable image ({exc}).") from exc
    return elements


def ocr_image(image: Image.Image, *, languages: str, dpi: int | None) -> list[Element]:
    """Elements of one page image: Tesseract's paragraphs in its reading order, plus tables."""
    image = _prepare(image)
    words = _run_tesseract(image, languages, dpi)
    if not words:
        return []
    heights = sorted(w.glyph.bottom - w.glyph.top for w in words)
    scale = 12.0 / max(heights[len(heights) // 2], 1.0)  # normalise so body text is ~12 pt
    for word in words:
        g = word.glyph
        g.x0, g.top, g.x1, g.bottom = g.x0 * scale, g.top * scale, g.x1 * scale, g.bottom * scale
    tables, kept = find_tables(
        _ruling_edges(image, scale), [w.glyph for w in words], allow_empty=True
    )
    if tables:
        _ocr_cells(image, [cell for t in tables for cell in t.cells], scale, languages, dpi)
    kept_ids = {id(g) for g in kept}
    paragraphs: dict[tuple[int, int], list[_Word]] = {}
    for word in words:
        if id(word.glyph) in kept_ids:
            paragraphs.setdefault(word.key[:2], []).append(word)
    elements: list[tuple[float, Element]] = []
    for members in paragraphs.values():
        lines: dict[int, list[Glyph]] = {}
        for word in members:
            lines.setdefault(word.key[2], []).append(word.glyph)
        texts = [" ".join(ln.text for ln in build_lines(glyphs)) for glyphs in lines.values()]
        text = join_lines([t for t in texts if t])
        top = min(w.glyph.top for w in members)
        height = sorted(w.glyph.bottom - w.glyph.top for w in members)[len(members) // 2]
        elements.append((top, _paragraph(text, height / 12.0, len(lines))))
    for table in tables:
        element = Element(text=table.text, type="Table", table_html=table.html)
        position = next(
            (i for i, (top, _) in enumerate(elements) if top > table.bbox[1]), len(elements)
        )
        elements.insert(position, (table.bbox[1], element))
    return [element for _, element in elements]


def _ocr_cells(
    image: Image.Image, cells: list[Cell], scale: float, languages: str, dpi: int | None
) -> None:
    """Re-read table cells one by one, stacked into one image for a single Tesseract run.

    Whole-page OCR misses short cell contents (lone digits) and text on shaded header
    cells; a cell on its own, contrast-stretched, with white space around it, reads well.
    """
    crops: list[tuple[Cell, Image.Image]] = []
    for cell in cells:
        if cell.bbox is None:
            continue
        x0, top, x1, bottom = (v / scale for v in cell.bbox)
        inset = max(3.0, 0.05 * min(x1 - x0, bottom - top))
        if x1 - x0 <= 3 * inset or bottom - top <= 3 * inset:
            continue
        crop = image.crop((int(x0 + inset), int(top + inset), int(x1 - inset), int(bottom - inset)))
        crops.append((cell, ImageOps.autocontrast(crop)))
    start = 0
    while start < len(crops):
        batch: list[tuple[Cell, Image.Image]] = []
        height = _CELL_GAP
        while start < len(crops) and (not batch or height + crops[start][1].height < 30_000):
            batch.append(crops[start])
            height += crops[start][1].height + _CELL_GAP
            start += 1
        width = max(crop.width for _, crop in batch) + 2 * _CELL_GAP
        sheet = Image.new("L", (width, height), 255)
        ranges: list[tuple[Cell, int, int]] = []
        y = _CELL_GAP
        for cell, crop in batch:
            sheet.paste(crop, (_CELL_GAP, y))
            ranges.append((cell, y, y + crop.height))
            y += crop.height + _CELL_GAP
        words = _run_tesseract(sheet, languages, dpi, psm=6)
        for cell, y0, y1 in ranges:
            mine = [w.glyph for w in words if y0 <= (w.glyph.top + w.glyph.bottom) / 2 <= y1]
            lines = sorted(build_lines(mine), key=lambda ln: (round(ln.top), ln.x0))
            text = join_lines([ln.text for ln in lines])
            if text:
                cell.text = text


def _paragraph(text: str, relative_height: float, n_lines: int) -> Element:
    """Type an OCR paragraph: numbering patterns, then size and capitals for headings."""
    kind, level = classify_line(text)
    short_heading = n_lines <= 2 and len(text) <= 80 and not is_sentence(text)
    if kind == "NarrativeText" and short_heading and (relative_height >= 1.3 or text.isupper()):
        kind, level = "Title", 0 if relative_height >= 1.3 else 1
    return Element(text=text, type=kind, metadata={HEADING_LEVEL: level} if kind == "Title" else {})


def _prepare(image: Image.Image) -> Image.Image:
    """Greyscale on white (transparent PNGs OCR as black), bounded size, upright by EXIF."""
    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, "white")
        image = Image.alpha_composite(background, image)
    image = image.convert("L")
    pixels = image.width * image.height
    if pixels > _MAX_PIXELS:
        factor = (_MAX_PIXELS / pixels) ** 0.5
        image = image.resize((int(image.width * factor), int(image.height * factor)))
    return image


def _run_tesseract(
    image: Image.Image, languages: str, dpi: int | None, psm: int = 3
) -> list[_Word]:
    with tempfile.TemporaryDirectory(prefix="llmflow-ocr-") as tmp:
        source, base = Path(tmp) / "page.png", Path(tmp) / "out"
        image.save(source)
        command = [
            "tesseract",
            str(source),
            str(base),
            "-l",
            languages,
            "--psm",
            str(psm),
            "-c",
            "preserve_interword_spaces=1",
        ]
        if dpi:
            command += ["--dpi", str(dpi)]
        command += ["txt", "tsv"]
        env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        try:
            result = subprocess.run(
                command, capture_output=True, timeout=_TIMEOUT_S, env=env, check=False
            )
        except FileNotFoundError as exc:
            raise UnsupportedFormat(
                "Images and scanned PDFs need the Tesseract OCR engine, which is not installed "
                "on this server (Debian packages tesseract-ocr, tesseract-ocr-kor)."
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise CorruptDocument(f"OCR of a page took longer than {_TIMEOUT_S} s.") from exc
        if result.returncode != 0 or not (base.with_suffix(".tsv")).exists():
            message = result.stderr.decode("utf-8", "replace").strip().splitlines()
            raise UnsupportedFormat(
                f"OCR failed ({message[-1] if message else 'tesseract error'}); check that the "
                f"Tesseract language data for '{languages}' is installed."
            )
        tsv = base.with_suffix(".tsv").read_text("utf-8", "replace")
        txt = base.with_suffix(".txt").read_text("utf-8", "replace")
    return _words(tsv, txt)


def _words(tsv: str, txt: str) -> list[_Word]:
    """Words from the TSV, with ``space_before`` taken from the aligned text rendering."""
    lines: dict[tuple[int, int, int], list[_Word]] = {}
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5" or not cols[11].strip() or float(cols[10]) < 0:
            continue
        left, top, width, height = (int(c) for c in cols[6:10])
        key = (int(cols[2]), int(cols[3]), int(cols[4]))
        glyph = Glyph(cols[11].strip(), left, top, left + width, top + height, space_before=True)
        lines.setdefault(key, []).append(_Word(key, glyph))
    rendered = [line for line in txt.splitlines() if line.strip()]
    aligned = len(rendered) == len(lines)
    for index, words in enumerate(lines.values()):
        line_text = rendered[index] if aligned else ""
        if aligned and line_text.replace(" ", "") == "".join(w.glyph.text for w in words):
            position = 0
            for word in words:
                start = line_text.index(word.glyph.text[0], position)
                word.glyph.space_before = start > position or position == 0
                position = start + len(word.glyph.text)
        else:  # rejoin Korean words that Tesseract split into single syllables
            joined = _HANGUL_SINGLES.sub(
                lambda m: m.group(0).replace(" ", ""), " ".join(w.glyph.text for w in words)
            )
            position = 0
            for word in words:
                start = joined.index(word.glyph.text[0], position)
                word.glyph.space_before = start > position or position == 0
                position = start + len(word.glyph.text)
    return [word for words in lines.values() for word in words]


def _ruling_edges(image: Image.Image, scale: float) -> list[dict[str, float | str]]:
    """Long dark horizontal/vertical pixel runs (table rules), as edges in scaled units."""
    dark = np.asarray(image) < _DARK
    edges: list[dict[str, float | str]] = []
    for orientation, grid in (("h", dark), ("v", dark.T)):
        min_run = max(40, grid.shape[1] // 25)
        padded = np.zeros((grid.shape[0], grid.shape[1] + 2), dtype=np.int8)
        padded[:, 1:-1] = grid
        diff = np.diff(padded, axis=1)
        starts_r, starts_c = np.nonzero(diff == 1)
        _, ends_c = np.nonzero(diff == -1)
        for row, start, end in zip(starts_r, starts_c, ends_c, strict=True):
            if end - start < min_run:
                continue
            a, b, pos = start * scale, end * scale, row * scale
            if orientation == "h":
                edges.append(
                    {
                        "orientation": "h",
                        "object_type": "line",
                        "x0": a,
                        "x1": b,
                        "top": pos,
                        "bottom": pos,
                        "doctop": pos,
                        "width": b - a,
                        "height": 0.0,
                    }
                )
            else:
                edges.append(
                    {
                        "orientation": "v",
                        "object_type": "line",
                        "x0": pos,
                        "x1": pos,
                        "top": a,
                        "bottom": b,
                        "doctop": a,
                        "width": 0.0,
                        "height": b - a,
                    }
                )
    # Photos and dark fills give thousands of runs; they are not tables and would make the
    # intersection search quadratic.
    return edges if len(edges) <= _MAX_RULE_RUNS else []
