"""HWP 5 and HWPX (Hancom Office) through ``hwp-hwpx-parser`` (Apache-2.0, pure Python).

Why this library: it needs no JVM and is not AGPL (pyhwp is, and must never be used here).
It gives plain paragraphs with Markdown tables inline plus the tables as cell rows; we turn
the Markdown blocks back into Table elements (HTML from the rows) in reading order.

Distribution documents (배포용 문서) keep their body AES-encrypted in ``ViewText`` with the key
stored in the file itself; the library only sees the "upgrade your viewer" notice in
``BodyText``, so we decrypt ``ViewText`` following Hancom's published format description.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
from collections.abc import Iterator
from typing import Any, Final

import olefile
from hwp_hwpx_parser import ExtractOptions, HWP5Reader, HWPXReader, ImageMarkerStyle, TableStyle

from llmflow.ingest.elements import CorruptDocument, Element, EncryptedDocument
from llmflow.ingest.partition.structure import HEADING_LEVEL, classify_line
from llmflow.ingest.partition.tables import cells_to_html, cells_to_text, rows_to_cells

_FLAG_PASSWORD: Final = 0x02
_FLAG_DISTRIBUTION: Final = 0x04
_TAG_DISTRIBUTE_DOC_DATA: Final = 0x10 + 12  # HWPTAG_BEGIN + 12
_MD_SEPARATOR: Final = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+$")
_MD_CELL_SPLIT: Final = re.compile(r"(?<!\\)\|")
_NOTE_MARKER: Final = re.compile(r"\[\^e?\d+\]")


class _Hwp5FromBytes(HWP5Reader):  # type: ignore[misc]
    """HWP5 reader over bytes in memory that also reads distribution documents."""

    def __init__(self, data: bytes) -> None:
        super().__init__("document.hwp")
        self._data = data
        self._distribution = False

    def _open(self) -> Any:
        current: Any = getattr(self, "_ole", None)
        if current is None:
            current = olefile.OleFileIO(self._data)
            header = current.openstream("FileHeader").read(40)
            flags = struct.unpack_from("<I", header, 36)[0] if len(header) >= 40 else 0
            self._distribution = bool(flags & _FLAG_DISTRIBUTION)
            self._ole = current
        return current

    def _iter_sections(self) -> Iterator[int]:
        ole = self._open()
        if not self._distribution:
            yield from super()._iter_sections()
            return
        index = 0
        while ole.exists(f"ViewText/Section{index}"):
            yield index
            index += 1

    def _read_section(self, section_idx: int) -> bytes:
        ole = self._open()
        if not self._distribution:
            data: bytes = super()._read_section(section_idx)
            return data
        raw = ole.openstream(f"ViewText/Section{section_idx}").read()
        decompressed: bytes = self._decompress(_decrypt_view_text(raw))
        return decompressed


class _HwpxFromBytes(HWPXReader):  # type: ignore[misc]
    """HWPX reader over bytes in memory."""

    def __init__(self, data: bytes) -> None:
        super().__init__("document.hwpx")
        self._data = data

    def _open(self) -> Any:
        current: Any = getattr(self, "_zipfile", None)
        if current is None:
            current = zipfile.ZipFile(io.BytesIO(self._data))
            self._zipfile = current
        return current


def partition_hwp(data: bytes, fmt: str, filename: str) -> list[Element]:
    """Elements of a HWP (``fmt="hwp"``) or HWPX (``fmt="hwpx"``) document."""
    reader = _Hwp5FromBytes(data) if fmt == "hwp" else _HwpxFromBytes(data)
    try:
        reader._open()
        if reader.is_encrypted():
            raise EncryptedDocument(
                f"{filename} is protected with a document password. Open it in Hancom Office, "
                "remove the password (보안 > 문서 암호 해제) and upload it again."
            )
        if not reader.is_valid():
            raise CorruptDocument(f"{filename} has no body text sections; it may be damaged.")
        options = ExtractOptions(
            table_style=TableStyle.MARKDOWN, image_marker=ImageMarkerStyle.NONE
        )
        result = reader.extract_text_with_notes(options)
        tables = reader.get_tables(options)
    finally:
        reader.close()
    elements = _elements_from_text(result.text, [t.rows for t in tables])
    for note in [*result.footnotes, *result.endnotes]:
        elements.append(
            Element(text=note.text, type="Text", metadata={note.note_type: note.number})
        )
    return elements


def _elements_from_text(text: str, table_rows: list[list[list[str]]]) -> list[Element]:
    """Paragraph and Table elements from the library's text with inline Markdown tables."""
    lines = text.split("\n")
    elements: list[Element] = []
    table_index = 0
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if (
            line.startswith("|")
            and i + 1 < len(lines)
            and _MD_SEPARATOR.match(lines[i + 1].strip())
        ):
            block = [line]
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(lines[i].strip())
                i += 1
            rows = table_rows[table_index] if table_index < len(table_rows) else None
            table_index += 1
            elements.append(_table(rows if rows is not None else _markdown_rows(block)))
            continue
        i += 1
        line = _NOTE_MARKER.sub("", line).strip()
        if line:
            kind, level = classify_line(line)
            metadata: dict[str, Any] = {HEADING_LEVEL: level} if kind == "Title" else {}
            elements.append(Element(text=line, type=kind, metadata=metadata))
    return elements


def _table(rows: list[list[str]]) -> Element:
    cells = rows_to_cells([[cell.replace("\r", "") for cell in row] for row in rows])
    return Element(text=cells_to_text(cells), type="Table", table_html=cells_to_html(cells))


def _markdown_rows(block: list[str]) -> list[list[str]]:
    rows = []
    for line in block:
        parts = _MD_CELL_SPLIT.split(line.strip()[1:-1])
        rows.append([p.strip().replace("\\|", "|") for p in parts])
    return rows


def _decrypt_view_text(raw: bytes) -> bytes:
    """Decrypt one ``ViewText/SectionN`` stream of a distribution document.

    The stream starts with a 256-byte HWPTAG_DISTRIBUTE_DOC_DATA record scrambled with the
    MSVC ``rand()`` sequence seeded by its first four bytes; unscrambled, it holds the
    AES-128 key at offset ``4 + (seed & 0xF)``. The rest of the stream is AES-ECB.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    header = struct.unpack_from("<I", raw, 0)[0]
    if header & 0x3FF != _TAG_DISTRIBUTE_DOC_DATA or (header >> 20) & 0xFFF != 256:
        raise CorruptDocument("distribution document without its key record")
    payload = bytearray(raw[4:260])
    seed = struct.unpack_from("<I", payload, 0)[0]
    state, key, remaining = seed, 0, 0
    for i in range(256):
        if remaining == 0:
            state = (state * 214013 + 2531011) & 0xFFFFFFFF
            key = (state >> 16) & 0xFF
            state = (state * 214013 + 2531011) & 0xFFFFFFFF
            remaining = ((state >> 16) & 0xF) + 1
        if i >= 4:
            payload[i] ^= key
        remaining -= 1
    offset = 4 + (seed & 0xF)
    aes_key = bytes(payload[offset : offset + 16])
    body = raw[260:]
    body = body[: len(body) - len(body) % 16]
    decryptor = Cipher(algorithms.AES(aes_key), modes.ECB()).decryptor()
    return decryptor.update(body) + decryptor.finalize()
