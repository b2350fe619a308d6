"""E-mail (.eml): headers as metadata, the body as elements, attachments through ``partition``.

Why not Unstructured's ``partition_email``: it drops attachments it cannot OCR and cannot
read HWP at all, while in Korean offices the attachment (a HWP or PDF report) is usually
the content worth indexing. The body still goes through Unstructured's HTML partitioner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any, Final

from llmflow.ingest.elements import DocumentError, Element
from llmflow.ingest.partition.detect import decode_text
from llmflow.ingest.partition.office import from_unstructured, partition_html_text
from llmflow.ingest.partition.structure import HEADING_LEVEL
from llmflow.ingest.partition.text import text_to_elements

logger = logging.getLogger(__name__)

#: Partitions one attachment: (bytes, filename) -> elements, raising DocumentError.
AttachmentPartitioner = Callable[[bytes, str], list[Element]]

_HEADERS: Final = (
    ("subject", "email_subject"),
    ("from", "email_from"),
    ("to", "email_to"),
    ("cc", "email_cc"),
    ("date", "email_date"),
)


def partition_eml(data: bytes, filename: str, attachments: AttachmentPartitioner) -> list[Element]:
    """Elements of an RFC 822 message: the subject as top title, body, then attachments."""
    message = BytesParser(policy=policy.default).parsebytes(data)
    headers = {key: _header(message, name) for name, key in _HEADERS}
    headers = {key: value for key, value in headers.items() if value}
    elements: list[Element] = []
    subject = headers.get("email_subject")
    if subject:
        elements.append(Element(text=subject, type="Title", metadata={HEADING_LEVEL: 0}))
    elements.extend(_body(message))
    skipped: list[dict[str, str]] = []
    for part in message.iter_attachments():
        name = part.get_filename() or ""
        if not name or (
            part.get_content_disposition() != "attachment"
            and part.get_content_maintype() == "image"
        ):
            continue  # inline logos and signature images are decoration, not content
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or not payload:
            continue
        try:
            inner = attachments(payload, name)
        except DocumentError as exc:
            logger.info("skipping attachment %s of %s: %s", name, filename, exc.message)
            skipped.append({"filename": name, "reason": exc.reason, "message": exc.message})
            continue
        for element in inner:
            element.metadata["attachment"] = name
            if element.type == "Title":  # nest the attachment's outline under the subject
                element.metadata[HEADING_LEVEL] = int(element.metadata.get(HEADING_LEVEL) or 0) + 1
        elements.extend(inner)
    for element in elements:
        element.metadata.update(headers)
    if skipped and elements:
        elements[0].metadata["skipped_attachments"] = skipped
    return elements


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except (ValueError, LookupError, IndexError):  # malformed encoded-words
        value = message.get_all(name, [None])[0] if hasattr(message, "get_all") else None
    return " ".join(str(value).split()) if value else ""


def _body(message: EmailMessage) -> list[Element]:
    """Elements of the preferred body part (HTML keeps tables; plain text otherwise)."""
    part = message.get_body(preferencelist=("html", "plain"))
    if part is None:
        return []
    try:
        content: Any = part.get_content()
    except (LookupError, UnicodeError, ValueError, KeyError):
        raw = part.get_payload(decode=True)
        content = decode_text(raw) if isinstance(raw, bytes) else ""
    if not isinstance(content, str) or not content.strip():
        return []
    if part.get_content_subtype() == "html":
        return from_unstructured(partition_html_text(content), "html")
    return text_to_elements(content)
