"""Exceptions of `llmflow_airgap`.

One hierarchy so that the CLI can turn every expected failure into a message a person can act
on (and an exit code), while programming errors still surface as tracebacks.
"""

from __future__ import annotations


class AirgapError(Exception):
    """Base class: an expected failure the operator can fix."""


class PlatformFileError(AirgapError):
    """`platform.yaml` is missing, is not YAML, or does not match its schema."""


class ChartReferenceError(AirgapError):
    """A chart reference directory is missing or unreadable."""
