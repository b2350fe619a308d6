"""What `llmflow-airgap validate` reports.

A finding is a defect in the distribution files that blocks a release; a notice is something
the operator should know but that is not a defect (for example a chart with no reference copy
to check keys against). Keeping the two apart lets CI fail on findings only while still
printing what was not checked, instead of silently passing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Check(StrEnum):
    """The family of a finding; tests and CI filter on it."""

    SCHEMA = "platform-schema"
    FILE = "file"
    UNKNOWN_KEY = "unknown-key"
    VALUES_SCHEMA = "values-schema"
    IMAGE_NOT_IN_BOM = "image-not-in-bom"
    IMAGE_NOT_MIRRORED = "image-not-mirrored"
    LATEST_TAG = "latest-tag"
    BITNAMI_LEGACY = "bitnamilegacy"
    INLINE_SECRET = "inline-secret"
    MANIFEST = "manifest"
    MONITORING = "monitoring"


@dataclass(frozen=True, order=True)
class Finding:
    """A defect, located as precisely as we can (file and dotted key path)."""

    check: Check
    file: str
    location: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.location}" if self.location else self.file
        return f"[{self.check}] {where}: {self.message}"


@dataclass(frozen=True, order=True)
class Notice:
    """Something not checked, and why."""

    subject: str
    message: str

    def __str__(self) -> str:
        return f"[notice] {self.subject}: {self.message}"
