"""Office, HTML, Markdown, EPUB, RTF, ODT and Outlook files through Unstructured.

Unstructured's partitioners for these formats read the file structure (styles, slide
layout boxes, sheets, HTML tags) and need no models. We call them on bytes, map their
elements onto ours, and convert legacy binaries (DOC/PPT) with our own LibreOffice call:
Unstructured's shares one LibreOffice profile between concurrent calls and has no timeout.
"""

from __future__ import annotations

import io
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from llmflow.ingest.elements import CorruptDocument, Element, ElementType, EncryptedDocument
from llmflow.ingest.partition.detect import decode_text
from llmflow.ingest.partition.offline import ensure_offline
from llmflow.ingest.partition.structure import HEADING_LEVEL, classify_line, is_sentence

_SOFFICE_TIMEOUT_S: Final = 180
_LANGUAGES: Final = ["kor", "eng"]  # skips Unstructured's per-document langdetect pass
_META_CHARSET: Final = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([\w.:-]+)""", re.IGNORECASE)

_WORD_PROCESSING: Final = frozenset({"docx", "odt", "rtf"})
_TYPES: Final[dict[str, ElementType]] = {
    "Title": "Title",
    "NarrativeText": "NarrativeText",
    "ListItem": "ListItem",
    "Table": "Table",
    "Header": "Header",
    "Footer": "Footer",
    "PageNumber": "Footer",
    "Image": "Image",
    "Picture": "Image",
    "CodeSnippet": "Code",
    "Formula": "Formula",
    "Address": "Address",
    "EmailAddress": "EmailAddress",
    "PageBreak": "PageBreak",
    "FigureCaption": "NarrativeText",
    "UncategorizedText": "Text",
}


def partition_office(data: bytes, fmt: str, filename: str) -> list[Element]:
    """Elements of a DOCX/DOC/PPTX/PPT/XLSX/XLS/HTML/MD/EPUB/RTF/ODT/MSG file."""
    ensure_offline()
    if fmt in ("doc", "ppt", "xls"):
        _refuse_encrypted_legacy(data, filename)
    if fmt == "doc":
        data, fmt = _convert_with_soffice(data, "doc", "docx", filename), "docx"
    elif fmt == "ppt":
        data, fmt = _convert_with_soffice(data, "ppt", "pptx", filename), "pptx"
    file = io.BytesIO(data)
    kwargs: dict[str, Any] = {"languages": _LANGUAGES}
    raw: Sequence[Any]
    if fmt == "docx":
        from unstructured.partition.docx import partition_docx

        raw = partition_docx(file=file, infer_table_structure=True, **kwargs)
    elif fmt == "pptx":
        from unstructured.partition.pptx import partition_pptx

        raw = partition_pptx(file=file, infer_table_structure=True, **kwargs)
    elif fmt in ("xlsx", "xls"):
        from unstructured.partition.xlsx import partition_xlsx

        raw = partition_xlsx(file=file, infer_table_structure=True, **kwargs)
    elif fmt == "html":
        raw = partition_html_text(html_text(data), **kwargs)
    elif fmt == "md":
        from unstructured.partition.md import partition_md

        raw = partition_md(text=decode_text(data), **kwargs)
    elif fmt == "epub":
        from unstructured.partition.epub import partition_epub

        raw = partition_epub(file=file, **kwargs)
    elif fmt == "rtf":
        from unstructured.partition.rtf import partition_rtf

        raw = partition_rtf(file=file, **kwargs)
    elif fmt == "odt":
        from unstructured.partition.odt import partition_odt

        raw = partition_odt(file=file, **kwargs)
    elif fmt == "msg":
        from unstructured.partition.msg import partition_msg

        raw = partition_msg(file=file, process_attachments=False, **kwargs)
    else:  # pragma: no cover - the dispatcher only routes the formats above here
        raise ValueError(fmt)
    return from_unstructured(raw, fmt)


def partition_html_text(text: str, **kwargs: Any) -> Sequence[Any]:
    """Unstructured elements of an HTML string (also used for HTML e-mail bodies)."""
    ensure_offline()
    from unstructured.partition.html import partition_html

    kwargs.setdefault("languages", _LANGUAGES)
    result: Sequence[Any] = partition_html(text=text, **kwargs)
    return result


def html_text(data: bytes) -> str:
    """Decode HTML: BOM first, then the document's own ``<meta charset>``, then detection."""
    declared = _META_CHARSET.search(data[:4096])
    if declared and not data.startswith((b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf")):
        try:
            return data.decode(declared.group(1).decode("ascii"))
        except (LookupError, UnicodeDecodeError):
            pass
    return decode_text(data)


def from_unstructured(raw: Sequence[Any], fmt: str) -> list[Element]:
    """Map Unstructured elements onto ours, keeping page, depth, table HTML and provenance."""
    elements: list[Element] = []
    paged = fmt in ("docx", "pptx", "odt")
    for item in raw:
        kind = _TYPES.get(type(item).__name__, _TYPES.get(getattr(item, "category", ""), "Text"))
        meta = item.metadata
        metadata: dict[str, Any] = {}
        text = str(item.text or "")
        level: int | None = int(getattr(meta, "category_depth", None) or 0)
        if kind == "Text" and fmt in _WORD_PROCESSING:
            kind, level = _uncategorized(text)
        if kind == "Title":
            metadata[HEADING_LEVEL] = level or 0
        page = getattr(meta, "page_number", None)
        if fmt in ("xlsx", "xls"):
            if getattr(meta, "page_name", None):
                metadata["sheet_name"] = meta.page_name
            if page is not None:
                metadata["sheet_number"] = page
            page = None
        elif fmt == "pptx" and page is not None:
            metadata["slide_number"] = page
        for source, target in (
            ("subject", "email_subject"),
            ("sent_from", "email_from"),
            ("sent_to", "email_to"),
        ):
            value = getattr(meta, source, None)
            if value:
                metadata[target] = value
        elements.append(
            Element(
                text=text,
                type=kind,
                page=page if paged else None,
                table_html=getattr(meta, "text_as_html", None) if kind == "Table" else None,
                metadata=metadata,
            )
        )
    return elements


def _uncategorized(text: str) -> tuple[ElementType, int | None]:
    """Type of a paragraph Unstructured left uncategorised ("CHAPTER 1", "A. PURPOSE").

    Word documents often make headings by typing numbering and capitals in the body style,
    so numbering and all-capitals decide. Not for HTML/EPUB, where real headings are tags
    and capitalised paragraphs are usually captions.
    """
    kind, level = classify_line(text)
    stripped = text.strip()
    if kind != "Title" and stripped.isupper() and len(stripped) <= 80 and not is_sentence(stripped):
        return "Title", 1
    return ("Text", None) if kind == "NarrativeText" else (kind, level)


def _refuse_encrypted_legacy(data: bytes, filename: str) -> None:
    """Raise for a password-protected DOC/XLS/PPT (RC4 or XOR obfuscation)."""
    import msoffcrypto

    try:
        encrypted = bool(msoffcrypto.OfficeFile(io.BytesIO(data)).is_encrypted())
    except Exception:
        return
    if encrypted:
        raise EncryptedDocument(
            f"{filename} is password-protected. Remove the password (File > Info > Protect) "
            "and upload it again."
        )


def _convert_with_soffice(data: bytes, source: str, target: str, filename: str) -> bytes:
    """Convert a legacy Office file with LibreOffice in a private profile, with a timeout."""
    with tempfile.TemporaryDirectory(prefix="llmflow-soffice-") as tmp:
        work = Path(tmp)
        src = work / f"input.{source}"
        src.write_bytes(data)
        command = [
            "soffice",
            f"-env:UserInstallation={(work / 'profile').as_uri()}",
            "--headless",
            "--norestore",
            "--convert-to",
            target,
            "--outdir",
            str(work),
            str(src),
        ]
        try:
            subprocess.run(command, capture_output=True, timeout=_SOFFICE_TIMEOUT_S, check=False)
        except FileNotFoundError as exc:
            raise CorruptDocument(
                f"{filename}: legacy .{source} files need LibreOffice (soffice), which is not "
                f"installed on this server; save the file as .{target} or ask an administrator."
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise CorruptDocument(
                f"{filename}: converting the .{source} file took longer than "
                f"{_SOFFICE_TIMEOUT_S} s; save it as .{target} and upload that instead."
            ) from exc
        out = work / f"input.{target}"
        if not out.exists():
            raise CorruptDocument(
                f"{filename} could not be opened as a .{source} file (LibreOffice could not "
                f"convert it); save it as .{target} and upload that instead."
            )
        return out.read_bytes()
