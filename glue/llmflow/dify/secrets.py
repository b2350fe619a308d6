"""Secrets LLMFlow keeps for Dify, sealed at rest with AES-256-GCM.

What is sealed: per-tenant Dify app keys (``app-…``) of the ERP facade, per-tenant callback
secrets, and the per-user random Dify passwords of the SSO bridge. None of them is ever
returned by an API; they are opened only in the process that calls Dify or signs a callback.

Format: ``v1.<base64url(nonce ‖ ciphertext ‖ tag)>``. The *associated data* binds a sealed
value to its place (``"facade-app:<tenant>:<name>"``, ``"dify-sso:<tenant>:<email>"``): a
value copied into another row or another tenant does not open.

The key (32 bytes) comes from ``dify_secrets.key`` (base64, e.g. from a Kubernetes Secret via
``LLMFLOW_DIFY_SECRETS__KEY``) or ``dify_secrets.key_file``; without either, embedded mode
creates a random key in ``data_dir/dify-secrets.key`` (0600). Cluster mode refuses to start
without a configured key: replicas with different keys could not open each other's rows.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, Field, SecretStr

from llmflow.errors import ConfigurationError

if TYPE_CHECKING:
    from llmflow.runtime import Runtime

log = logging.getLogger(__name__)

VERSION = "v1"
NONCE_BYTES = 12
KEY_BYTES = 32


class DifySecretsSettings(BaseModel):
    """Where the sealing key comes from (``LLMFLOW_DIFY_SECRETS__KEY`` / ``__KEY_FILE``)."""

    key: SecretStr | None = Field(
        default=None, description="base64 of 32 random bytes (openssl rand -base64 32)"
    )
    key_file: Path | None = Field(
        default=None, description="file holding the base64 key (a mounted Secret)"
    )


class SecretUnreadable(ConfigurationError):
    """A sealed value does not open with this key (wrong key, or moved to another row)."""

    code = "secret_unreadable"
    title = "Stored secret cannot be opened"


class SecretBox:
    """Seals and opens short secrets with one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ConfigurationError(f"the Dify secrets key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, context: str) -> str:
        """The sealed form of ``plaintext``, bound to ``context`` (the row it belongs to)."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, token: str, context: str) -> str:
        """The plaintext of a sealed value; :class:`SecretUnreadable` if it does not open."""
        version, _, body = token.partition(".")
        if version != VERSION:
            raise SecretUnreadable(f"sealed value has unknown format {version[:8]!r}")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            plain = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
        except (InvalidTag, ValueError, binascii.Error):
            raise SecretUnreadable(
                f"a stored secret ({context.split(':', 1)[0]}) does not open with the configured "
                "key: was dify_secrets.key changed?"
            ) from None
        return plain.decode()


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{where} is not base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigurationError(f"{where} must decode to {KEY_BYTES} bytes, not {len(key)}")
    return key


def load_secret_box(settings: DifySecretsSettings, data_dir: Path, *, cluster: bool) -> SecretBox:
    """The box of the configured key (see the module docstring for the order)."""
    if settings.key is not None:
        return SecretBox(_decode_key(settings.key.get_secret_value(), "dify_secrets.key"))
    if settings.key_file is not None:
        try:
            text = settings.key_file.read_text()
        except OSError as exc:
            raise ConfigurationError(f"cannot read dify_secrets.key_file: {exc}") from exc
        return SecretBox(_decode_key(text, str(settings.key_file)))
    if cluster:
        raise ConfigurationError(
            "dify_secrets.key (LLMFLOW_DIFY_SECRETS__KEY) or key_file is required in the "
            "cluster profile: every replica must open the same sealed Dify secrets"
        )
    path = data_dir / "dify-secrets.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process of this data directory made it first
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode())
            log.info("created a Dify secrets key in %s", path)
    return SecretBox(_decode_key(path.read_text(), str(path)))


_BOXES: weakref.WeakKeyDictionary[Runtime, SecretBox] = weakref.WeakKeyDictionary()


def runtime_box(rt: Runtime) -> SecretBox:
    """The runtime's box (the key is loaded once per process and runtime)."""
    box = _BOXES.get(rt)
    if box is None:
        s = rt.settings
        box = load_secret_box(s.dify_secrets, s.data_dir, cluster=s.profile.value == "cluster")
        _BOXES[rt] = box
    return box
