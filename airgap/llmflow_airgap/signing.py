"""Ed25519 keys and detached signatures over the bundle manifest.

The signature is the raw 64-byte Ed25519 signature of `manifest.json`'s bytes, and keys are
plain PEM (PKCS#8 private, SubjectPublicKeyInfo public), so a site can check a bundle with
nothing but OpenSSL:

    openssl pkeyutl -verify -pubin -inkey pub.pem -rawin -in manifest.json \\
        -sigfile manifest.json.sig
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from llmflow_airgap.errors import SigningKeyError


def generate_keypair(private_path: Path, public_path: Path, overwrite: bool = False) -> None:
    """Write a new Ed25519 private key (mode 0600) and its public key, both PEM."""
    for path in (private_path, public_path):
        if path.exists() and not overwrite:
            raise SigningKeyError(f"{path} exists; refusing to overwrite a key (use --force)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    # Create with 0600 from the start rather than chmod afterwards: no window where it is
    # world-readable.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.write_bytes(public_pem)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from an unencrypted PEM file."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"cannot load private key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SigningKeyError(f"cannot load public key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path} is not an Ed25519 public key")
    return key


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    """Raw Ed25519 signature (64 bytes) of `data`."""
    return key.sign(data)


def signature_valid(key: Ed25519PublicKey, data: bytes, signature: bytes) -> bool:
    """Whether `signature` is `key`'s signature of `data`."""
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
