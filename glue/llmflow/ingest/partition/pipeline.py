"""``partition``: size check, format detection, the backend for the format, finishing.

The one promise to callers: either a non-empty list of elements or a :class:`DocumentError`
whose message tells a person what to do. Library exceptions never escape; anything
unexpected becomes :class:`CorruptDocument` naming the file and the cause.
"""

from __future__ import annotations

import logging
import mimetypes
import time
from dataclasses import dataclass
from pathlib import PurePath
from typing import Final

from llmflow.ingest.elements import (
    CorruptDocument,
    DocumentError,
    Element,
    EmptyDocument,
    EncryptedDocument,
    FileTooLarge,
    UnsupportedFormat,
)
from llmflow.ingest.partition.detect import ENCRYPTED_OFFICE, IMAGE_FORMATS, detect_format
from llmflow.ingest.partition.structure import finalize

logger = logging.getLogger(__name__)

_MAX_ATTACHMENT_DEPTH: Final = 2
_UNSTRUCTURED_FORMATS: Final = frozenset(
    {"docx", "doc", "pptx", "ppt", "xlsx", "xls", "html", "md", "epub", "rtf", "odt", "msg"}
)
_NAMES: Final[dict[str, str]] = {
    "pdf": "PDF",
    "hwp": "HWP",
    "hwpx": "HWPX",
    "docx": "Word",
    "doc": "Word 97-2003",
    "pptx": "PowerPoint",
    "ppt": "PowerPoint 97-2003",
    "xlsx": "Excel",
    "xls": "Excel 97-2003",
    "csv": "CSV",
    "tsv": "TSV",
    "html": "HTML",
    "md": "Markdown",
    "txt": "text",
    "eml": "e-mail",
    "msg": "Outlook message",
    "epub": "EPUB",
    "rtf": "RTF",
    "odt": "ODT",
}


@dataclass(frozen=True, slots=True)
class _Options:
    max_bytes: int
    ocr_languages: str
    ocr_min_text_chars: int


def partition(
    data: bytes,
    filename: str,
    *,
    content_type: str | None = None,
    max_bytes: int,
    ocr_languages: str = "kor+eng",
    ocr_min_text_chars: int = 20,
) -> list[Element]:
    """Split a document into elements in reading order (synchronous, CPU-bound).

    ``content_type`` only helps when ``filename`` has no extension; the content decides.
    Pages with fewer than ``ocr_min_text_chars`` characters of text are OCR'd with
    Tesseract in ``ocr_languages``. Raises a :class:`DocumentError` subclass for input that
    cannot be ingested, :class:`FileTooLarge` before any parsing.
    """
    options = _Options(max_bytes, ocr_languages, ocr_min_text_chars)
    return _partition(data, _named(filename, content_type), options, depth=0)


def _partition(data: bytes, filename: str, options: _Options, depth: int) -> list[Element]:
    if len(data) > options.max_bytes:
        raise FileTooLarge(
            f"{filename} is {_size(len(data))}; the limit is {_size(options.max_bytes)}. "
            "Split the document or ask an administrator to raise the limit."
        )
    if not data.strip():
        raise EmptyDocument(f"{filename} is empty.")
    fmt = detect_format(data, filename)
    if fmt == ENCRYPTED_OFFICE:
        raise EncryptedDocument(
            f"{filename} is a password-protected Office file. Remove the password "
            "(File > Info > Protect > Encrypt with Password, clear it) and upload it again."
        )
    started = time.perf_counter()
    try:
        elements = _dispatch(data, fmt, filename, options, depth)
    except DocumentError:
        raise
    except Exception as exc:
        raise _translate(exc, fmt, filename) from exc
    elements = finalize(elements)
    logger.debug(
        "partitioned %s (%s) into %d elements in %.3f s",
        filename,
        fmt,
        len(elements),
        time.perf_counter() - started,
    )
    if not elements:
        raise EmptyDocument(
            f"{filename} contains no text that could be extracted"
            + (" (OCR found none either)." if fmt == "pdf" or fmt in IMAGE_FORMATS else ".")
        )
    return elements


def _dispatch(data: bytes, fmt: str, filename: str, options: _Options, depth: int) -> list[Element]:
    if fmt == "pdf":
        from llmflow.ingest.partition.pdf import partition_pdf

        return partition_pdf(
            data,
            filename,
            ocr_languages=options.ocr_languages,
            ocr_min_text_chars=options.ocr_min_text_chars,
        )
    if fmt in IMAGE_FORMATS:
        from llmflow.ingest.partition.ocr import partition_image

        return partition_image(data, filename, languages=options.ocr_languages)
    if fmt in ("hwp", "hwpx"):
        from llmflow.ingest.partition.hwp import partition_hwp

        return partition_hwp(data, fmt, filename)
    if fmt == "txt":
        from llmflow.ingest.partition.text import partition_plain_text

        return partition_plain_text(data)
    if fmt in ("csv", "tsv"):
        from llmflow.ingest.partition.text import partition_delimited

        return partition_delimited(data, "\t" if fmt == "tsv" else None)
    if fmt == "eml":
        from llmflow.ingest.partition.mail import partition_eml

        def attachment(payload: bytes, name: str) -> list[Element]:
            if depth + 1 >= _MAX_ATTACHMENT_DEPTH:
                raise UnsupportedFormat(f"{name} is nested too deeply in e-mail attachments.")
            return _partition(payload, name, options, depth + 1)

        return partition_eml(data, filename, attachment)
    if fmt in _UNSTRUCTURED_FORMATS:
        from llmflow.ingest.partition.office import partition_office

        return partition_office(data, fmt, filename)
    raise UnsupportedFormat(f"{filename}: the format {fmt!r} is not supported.")


def _translate(exc: Exception, fmt: str, filename: str) -> DocumentError:
    """Map a library failure onto the error a person can act on."""
    kind = _NAMES.get(fmt, fmt.upper())
    message = str(exc).strip() or type(exc).__name__
    lowered = message.lower()
    if "password" in lowered or "encrypt" in lowered:
        return EncryptedDocument(
            f"{filename} is password-protected ({message}). Remove the "
            "password and upload it again."
        )
    if type(exc).__name__ == "DecompressedSizeExceededError" or isinstance(exc, MemoryError):
        return FileTooLarge(f"{filename} expands to more data than we process ({message}).")
    return CorruptDocument(
        f"{filename} could not be read as a {kind} file; it may be damaged or mislabelled "
        f"({type(exc).__name__}: {message[:300]}). Re-save it in its application and retry."
    )


def _named(filename: str, content_type: str | None) -> str:
    """Give an extension-less upload the extension of its declared content type."""
    if PurePath(filename).suffix or not content_type:
        return filename
    extension = mimetypes.guess_extension(content_type.split(";")[0].strip())
    return filename + extension if extension else filename


def _size(n: int) -> str:
    return f"{n / 1_048_576:.1f} MiB" if n >= 1_048_576 else f"{n / 1024:.0f} KiB"
