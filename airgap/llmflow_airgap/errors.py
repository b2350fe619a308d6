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


class RegistryError(AirgapError):
    """An OCI registry refused a request, or answered something we cannot use."""


class DigestMismatchError(AirgapError):
    """Content did not hash to the digest it was requested by: corruption or tampering."""


class LockfileError(AirgapError):
    """The lockfile is missing, malformed, or cannot be produced from the sources given."""


class BundleError(AirgapError):
    """A bundle cannot be built or read."""


class SigningKeyError(AirgapError):
    """A signing or verification key is missing or not an Ed25519 PEM key."""
