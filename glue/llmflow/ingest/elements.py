"""One element model for every input format.

Partitioners (Unstructured, our PDF text path, OCR, HWP/HWPX) all produce a list of
:class:`Element`; chunking, PII scanning and indexing only ever see this model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ElementType = Literal[
    "Title",
    "NarrativeText",
    "ListItem",
    "Table",
    "Header",
    "Footer",
    "Image",
    "Code",
    "Formula",
    "Address",
    "EmailAddress",
    "PageBreak",
    "Text",
]


@dataclass(slots=True)
class Element:
    """A piece of a document in reading order.

    ``section_path`` is the chain of titles above the element (outermost first);
    ``table_html`` holds the whole table for ``type == "Table"`` (``text`` is its plain text);
    ``language`` is an ISO 639-1 code ("ko", "en", ...) or ``None`` when unknown.
    """

    text: str
    type: ElementType = "NarrativeText"
    page: int | None = None
    section_path: list[str] = field(default_factory=list)
    table_html: str | None = None
    language: str | None = None
    coordinates: tuple[float, float, float, float] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class DocumentError(Exception):
    """A document that cannot be ingested; ``reason`` is a short machine code, the message
    is for people (it is shown in the document's status)."""

    reason: str = "invalid_document"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedFormat(DocumentError):
    reason = "unsupported_format"


class EncryptedDocument(DocumentError):
    reason = "encrypted"


class CorruptDocument(DocumentError):
    reason = "corrupt"


class EmptyDocument(DocumentError):
    reason = "empty"


class FileTooLarge(DocumentError):
    reason = "too_large"
