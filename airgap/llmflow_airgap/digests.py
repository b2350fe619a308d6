"""Streaming sha256: files, partial downloads and OCI digest strings.

Everything that hashes content reads it in fixed chunks, so memory stays flat whatever the
size of a model shard or image layer; nothing here ever holds a whole blob.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from llmflow_airgap.errors import DigestMismatchError

CHUNK_SIZE = 1024 * 1024
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")


def digest_hex(digest: str) -> str:
    """The hex part of a `sha256:<hex>` digest (the only algorithm OCI registries require)."""
    match = _DIGEST.match(digest)
    if not match:
        raise DigestMismatchError(f"unsupported or malformed digest {digest!r}")
    return match.group(1)


def is_digest(text: str) -> bool:
    """Whether `text` is a `sha256:<64 hex>` digest."""
    return bool(_DIGEST.match(text))


def sha256_bytes(data: bytes) -> str:
    """`sha256:<hex>` of a small in-memory document (manifests, index.json)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hash_file_into(hasher: hashlib._Hash, path: Path) -> int:
    """Feed a file into `hasher` chunk by chunk; return the number of bytes read."""
    total = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            hasher.update(chunk)
            total += len(chunk)
    return total


def sha256_file(path: Path) -> tuple[str, int]:
    """(`sha256:<hex>`, size) of a file, read in chunks."""
    hasher = hashlib.sha256()
    size = hash_file_into(hasher, path)
    return "sha256:" + hasher.hexdigest(), size
