"""Which partitioner gets a file: content first, the filename only to break ties.

Why content first: uploads arrive with wrong extensions (our own dataset has a ``.ppt`` that is
really PPTX; Korean offices rename HWP files), and checking magic bytes is also what stops an
executable or an archive before any parser touches it. The filename decides only between
formats that share a container (text: HTML/Markdown/CSV/e-mail/plain; ZIP: by its members).
"""

from __future__ import annotations

import codecs
import io
import re
import zipfile
from pathlib import PurePath
from typing import Final

import olefile

from llmflow.ingest.elements import CorruptDocument, UnsupportedFormat

#: Returned for an Office file wrapped in an "EncryptedPackage" (a password-protected
#: DOCX/XLSX/PPTX); :func:`partition` turns it into :class:`EncryptedDocument`.
ENCRYPTED_OFFICE: Final = "encrypted-office"

IMAGE_FORMATS: Final = frozenset({"png", "jpeg", "tiff", "bmp", "gif", "webp"})
TEXT_FORMATS: Final = frozenset({"html", "md", "csv", "tsv", "eml", "txt", "rtf"})

_IMAGE_MAGIC: Final[tuple[tuple[bytes, str], ...]] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
)
_REFUSED_MAGIC: Final[tuple[tuple[bytes, str], ...]] = (
    (b"MZ", "a Windows executable"),
    (b"\x7fELF", "a Linux executable"),
    (b"\xca\xfe\xba\xbe", "a Java class or Mach-O executable"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
)
_TEXT_EXTENSIONS: Final[dict[str, str]] = {
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".md": "md",
    ".markdown": "md",
    ".csv": "csv",
    ".tsv": "tsv",
    ".eml": "eml",
    ".rtf": "rtf",
}
_MAIL_HEADER: Final = re.compile(
    rb"^(?:from|to|subject|date|received|return-path|message-id|mime-version|delivered-to)"
    rb"\s*:",
    re.IGNORECASE | re.MULTILINE,
)
_BOMS: Final[tuple[tuple[bytes, str], ...]] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def detect_format(data: bytes, filename: str) -> str:
    """Name of the format of ``data``: ``pdf``, ``docx``, ``hwp``, ``png``, ``txt`` ...

    Raises :class:`UnsupportedFormat` with the reason for anything we do not ingest.
    """
    suffix = PurePath(filename).suffix.lower()
    head = data[:16]
    if b"%PDF-" in data[:1024]:
        return "pdf"
    for magic, image_format in _IMAGE_MAGIC:
        if head.startswith(magic):
            return image_format
    if head.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    if head.startswith(olefile.MAGIC):
        return _ole_format(data, filename)
    if head.startswith(b"PK\x03\x04"):
        return _zip_format(data, filename)
    if head.lstrip().startswith(b"{\\rtf"):
        return "rtf"
    for magic, what in _REFUSED_MAGIC:
        if head.startswith(magic):
            raise UnsupportedFormat(f"{filename} is {what}; upload documents, not programs.")
    if not _looks_like_text(data):
        raise UnsupportedFormat(
            f"{filename} is not a document format we can read (binary content). Supported: "
            "PDF, HWP/HWPX, Word, PowerPoint, Excel, CSV, HTML, e-mail, Markdown, text, "
            "EPUB, RTF, ODT and PNG/JPEG/TIFF images."
        )
    if suffix in _TEXT_EXTENSIONS:
        return _TEXT_EXTENSIONS[suffix]
    start = data[:2048].lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html")) or b"<html" in start:
        return "html"
    if len(_MAIL_HEADER.findall(data[:4096])) >= 2:
        return "eml"
    return "txt"


def decode_text(data: bytes) -> str:
    """Text of a byte string in whatever encoding it uses (BOM, UTF-8, CP949, UTF-16 ...).

    Why charset-normalizer after UTF-8: Korean files are still often CP949/EUC-KR, which
    decoding as Latin-1 would silently turn into mojibake that no later stage can repair.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        return data.decode("cp949", errors="replace")
    return str(best)


def _looks_like_text(data: bytes) -> bool:
    """True when the bytes decode to text with almost no control characters."""
    sample = data[:8192]
    if any(sample.startswith(bom) for bom, _ in _BOMS):
        return True
    if b"\x00" in sample:
        return False
    try:
        # Incremental decoding tolerates a multi-byte character cut at the sample's end.
        text = codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        text = decode_text(sample)
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f\v\x1b")
    return controls <= max(2, len(text) // 100)


def _ole_format(data: bytes, filename: str) -> str:
    """Tell apart the OLE2 formats: HWP 5, DOC, XLS, PPT, MSG and encrypted OOXML."""
    try:
        ole = olefile.OleFileIO(data)
    except (OSError, ValueError) as exc:
        raise CorruptDocument(f"{filename} is a damaged OLE (MS Office/HWP) file: {exc}") from exc
    with ole:
        streams = {"/".join(entry).lower() for entry in ole.listdir(streams=True, storages=True)}
        if "encryptedpackage" in streams:
            return ENCRYPTED_OFFICE
        if "fileheader" in streams:
            header = ole.openstream("FileHeader").read(32)
            if header.startswith(b"HWP Document File"):
                return "hwp"
        if "worddocument" in streams:
            return "doc"
        if "workbook" in streams or "book" in streams:
            return "xls"
        if "powerpoint document" in streams:
            return "ppt"
        if any(name.startswith("__substg1.0_") for name in streams):
            return "msg"
    raise UnsupportedFormat(
        f"{filename} is an OLE compound file that is not HWP, Office or Outlook."
    )


def _zip_format(data: bytes, filename: str) -> str:
    """Tell apart the ZIP-based formats by their members (and the ODF/EPUB ``mimetype``)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = set(archive.namelist())
        mimetype = (
            archive.read("mimetype")[:100].decode("ascii", "replace").strip()
            if ("mimetype" in names)
            else ""
        )
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise CorruptDocument(f"{filename} is a damaged ZIP-based file: {exc}") from exc
    if "word/document.xml" in names:
        return "docx"
    if "ppt/presentation.xml" in names:
        return "pptx"
    if "xl/workbook.xml" in names:
        return "xlsx"
    if mimetype == "application/epub+zip" or (
        "META-INF/container.xml" in names and any(n.endswith(".opf") for n in names)
    ):
        return "epub"
    if mimetype == "application/vnd.oasis.opendocument.text":
        return "odt"
    if "hwp" in mimetype or any(n.lower().startswith("contents/section") for n in names):
        return "hwpx"
    if mimetype.startswith("application/vnd.oasis.opendocument"):
        raise UnsupportedFormat(
            f"{filename} is an OpenDocument spreadsheet/presentation; save it as XLSX/PPTX."
        )
    raise UnsupportedFormat(
        f"{filename} is a ZIP archive; unpack it and upload the documents inside."
    )
