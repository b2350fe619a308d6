"""Dify plugin packages (`.difypkg`): read, repackage with a wheelhouse, re-sign, verify.

Why this exists: Dify's plugin daemon installs a plugin's Python dependencies when the plugin
is installed (`uv pip install -r requirements.txt` in the plugin's working directory) and
refuses packages whose signature it cannot verify. On an air-gapped site both break: there is
no PyPI, and the marketplace signature no longer matches once we add wheels. So every plugin
the bundle ships is repackaged with the wheels it needs and re-signed with *our* key, and the
daemon is configured to trust that key (third-party signature verification).

The format, read from `langgenius/dify-plugin-daemon` at tag 0.6.1 (commit
6b1510814fec6d488498e412a69f78ead8f7e496, the `dify-plugin-daemon:0.6.1-local` image that the
dify chart 0.37.0 pins for Dify 1.14.2):

* A package is a zip. `manifest.yaml` at the root declares `author`, `name`, `version`.
* Signature (`pkg/plugin_packager/signer/withkey/sign_with_key.go`,
  `pkg/plugin_packager/decoder/verifier.go`): for every zip entry **in central-directory
  order** the raw 32-byte SHA-256 of its content is appended to a buffer; the optional
  `.verification.dify.json` (`{"authorized_category": ...}`) is written last and hashed like
  any entry; then the creation time as a decimal string is appended. The buffer is signed with
  RSA PKCS#1 v1.5 over SHA-256 (`pkg/utils/encryption/rsa.go`, `RSASign`/`VerifySign`; keys
  are RSA-4096 from `cmd/commandline/signature/generate.go`). The zip *comment* holds
  `{"signature": base64(std), "time": <unix seconds>}` (Go `json.Marshal` of a map: sorted
  keys, no spaces).
* Keys are PEM PKCS#1: `RSA PRIVATE KEY` and `RSA PUBLIC KEY`; `LoadPublicKey` refuses any
  other block type and any bytes after the block (`pkg/utils/encryption/rsa.go`).
* The daemon accepts a package when any trusted key verifies it: the official key always, plus
  the files listed in `THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS` when
  `THIRD_PARTY_SIGNATURE_VERIFICATION_ENABLED=true` (`decoder/helper.go` `verified`,
  `internal/service/plugin_decoder.go` `UploadPluginPkg`, with `FORCE_VERIFYING_SIGNATURE`).
  A plugin whose author is `langgenius` must carry `authorized_category: langgenius` when
  `ENFORCE_LANGGENIUS_PLUGIN_SIGNATURES` is on (`internal/service/unauthorized_langgenius.go`).
* Directory entries cannot be verified (the daemon's walk reads every entry as a file), so
  packages are written with file entries only.
* The plugin's unique identifier is `author/name:version@<checksum>`, the checksum being
  SHA-256 over the sorted entry names of sha256(name) + sha256(content)
  (`decoder/checksum.go`); it ignores the zip comment, so it is known before signing.
* Dependencies (`internal/core/local_runtime/setup_python_environment.go`): a plugin with
  `pyproject.toml` is installed with `uv sync`, otherwise `uv pip install -r requirements.txt`
  runs in a `uv venv --python 3.12` whose environment holds only `VIRTUAL_ENV`, `PATH`,
  `UV_CACHE_DIR` and proxies — the daemon's own environment (`PIP_NO_INDEX`, `UV_OFFLINE`)
  does not reach uv. Offline installs therefore must come from the package itself:
  `requirements.txt` is rewritten to `--no-index --find-links ./wheels` and the wheels for
  CPython 3.12 on the daemon image's platform (Ubuntu 24.04, glibc 2.39, see
  `docker/local.dockerfile`) are added under `wheels/`. A `pyproject.toml` plugin (e.g.
  `langgenius/openai_api_compatible`, which ships a `uv.lock`) would go through `uv sync`
  against an index instead, so it is converted: its `[project].dependencies` become the
  requirements (downloaded under the `uv.lock` pins as constraints) and `pyproject.toml` and
  `uv.lock` are left out of the repackaged plugin; nothing else reads them at run time.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import subprocess
import time
import tomllib
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from llmflow_airgap.errors import AirgapError, SigningKeyError

DAEMON_VERSION: Final = "0.6.1"
DAEMON_COMMIT: Final = "6b1510814fec6d488498e412a69f78ead8f7e496"
DAEMON_PYTHON: Final = "3.12"
"""`uv venv .venv --python 3.12` in setup_python_environment.go; the image installs 3.12."""
DAEMON_GLIBC_MINOR: Final = 39
"""Ubuntu 24.04 (the daemon image's base) ships glibc 2.39."""
VERIFICATION_FILE: Final = ".verification.dify.json"
MANIFEST_FILE: Final = "manifest.yaml"
REQUIREMENTS_FILE: Final = "requirements.txt"
PYPROJECT_FILE: Final = "pyproject.toml"
UV_LOCK_FILE: Final = "uv.lock"
WHEELS_DIR: Final = "wheels"
RSA_KEY_BITS: Final = 4096
DEFAULT_MAX_PACKAGE_SIZE: Final = 52428800
"""The daemon's MAX_PLUGIN_PACKAGE_SIZE default (.env.example): total *uncompressed* bytes."""

AuthorizedCategory = Literal["langgenius", "partner", "community"]
_NAME = re.compile(r"^[a-z0-9_-]{1,128}$")
_AUTHOR = re.compile(r"^[a-z0-9_-]{1,64}$")
_VERSION = re.compile(r"^[0-9]{1,4}(\.[0-9]{1,4}){1,3}(-\w{1,16})?$")
_REQUIREMENT_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")
_INDEX_OPTIONS = ("-i", "--index-url", "--extra-index-url", "--find-links", "-f", "--no-index")


class DifyPluginError(AirgapError):
    """A plugin package is malformed, cannot be repackaged, or fails verification."""


# ---------------------------------------------------------------------------------- keys


def generate_plugin_keypair(private_path: Path, public_path: Path, overwrite: bool = False) -> None:
    """Write an RSA-4096 key pair in the PEM PKCS#1 form the daemon loads.

    The private key is created with mode 0600; the public key is what the site mounts into the
    daemon and lists in `THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS`.
    """
    for path in (private_path, public_path):
        if path.exists() and not overwrite:
            raise SigningKeyError(f"{path} exists; refusing to overwrite a key (use --force)")
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.write_bytes(public_pem_of(key))


def public_pem_of(key: rsa.RSAPrivateKey) -> bytes:
    """The `RSA PUBLIC KEY` (PKCS#1) PEM of a private key: the file the daemon trusts."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    )


def _single_pem_block(data: bytes, kind: str, path: Path) -> None:
    """Refuse what the daemon's `pem.Decode` checks would refuse: wrong type, trailing bytes."""
    text = data.decode("ascii", errors="replace")
    begin, end = f"-----BEGIN {kind}-----", f"-----END {kind}-----"
    if not text.lstrip().startswith(begin) or end not in text:
        raise SigningKeyError(f"{path} is not a PEM `{kind}` block (the daemon needs PKCS#1)")
    rest = text.split(end, 1)[1]
    if rest not in ("", "\n", "\r\n"):
        raise SigningKeyError(f"{path} has data after its PEM block; the daemon refuses that")


def load_plugin_private_key(path: Path) -> rsa.RSAPrivateKey:
    """Our plugin signing key: an unencrypted `RSA PRIVATE KEY` PEM."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read plugin signing key {path}: {exc}") from exc
    _single_pem_block(data, "RSA PRIVATE KEY", path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"cannot load plugin signing key {path}: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SigningKeyError(f"{path} is not an RSA private key")
    return key


def load_plugin_public_key(path: Path) -> rsa.RSAPublicKey:
    """A trusted key as the daemon reads it: one `RSA PUBLIC KEY` PEM block, nothing after."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read plugin public key {path}: {exc}") from exc
    return public_key_from_pem(data, path)


def public_key_from_pem(data: bytes, origin: Path) -> rsa.RSAPublicKey:
    """Parse `RSA PUBLIC KEY` PEM bytes (`origin` names them in errors)."""
    _single_pem_block(data, "RSA PUBLIC KEY", origin)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise SigningKeyError(f"cannot load plugin public key {origin}: {exc}") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise SigningKeyError(f"{origin} is not an RSA public key")
    return key


# ------------------------------------------------------------------------------ packages


@dataclass(frozen=True)
class Entry:
    """One file of a package, in central-directory order."""

    name: str
    data: bytes
    date_time: tuple[int, int, int, int, int, int] = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class PluginPackage:
    """A decoded `.difypkg`."""

    entries: list[Entry]
    comment: bytes
    manifest: dict[str, Any]

    @property
    def author(self) -> str:
        return str(self.manifest.get("author") or "")

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or "")

    @property
    def version(self) -> str:
        return str(self.manifest.get("version") or "")

    @property
    def plugin_id(self) -> str:
        """`author/name` (the daemon's plugin id)."""
        return f"{self.author}/{self.name}" if self.author else self.name

    @property
    def identity(self) -> str:
        """`author/name:version` (`PluginDeclaration.Identity`)."""
        return f"{self.plugin_id}:{self.version}"

    def file(self, name: str) -> bytes | None:
        for entry in self.entries:
            if entry.name == name:
                return entry.data
        return None

    def verification(self) -> dict[str, Any] | None:
        raw = self.file(VERIFICATION_FILE)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise DifyPluginError(f"{VERIFICATION_FILE} is not JSON: {exc}") from exc
        return value if isinstance(value, dict) else None

    def checksum(self) -> str:
        return package_checksum(self.entries)

    def unique_identifier(self) -> str:
        """`author/name:version@checksum`, what the daemon answers an upload with."""
        return f"{self.identity}@{self.checksum()}"

    def uncompressed_size(self) -> int:
        return sum(len(e.data) for e in self.entries)


def read_package(data: bytes) -> PluginPackage:
    """Decode a package; refuse what the daemon could not walk or would not accept."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise DifyPluginError(f"not a .difypkg (zip): {exc}") from exc
    entries: list[Entry] = []
    seen: set[str] = set()
    with archive:
        for info in archive.infolist():
            if info.filename in seen:
                raise DifyPluginError(f"duplicate entry {info.filename!r}")
            seen.add(info.filename)
            parts = info.filename.rstrip("/").split("/")
            if any(part in ("", ".", "..") for part in parts):
                # Go's zip Reader.Open only opens fs.ValidPath names, and the daemon's walk
                # re-joins (cleans) names: `a/../b` would be read as another entry.
                raise DifyPluginError(f"entry name {info.filename!r} is not a plain path")
            try:
                body = archive.read(info)
            # RuntimeError: encrypted entries and unknown compression methods.
            except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError) as exc:
                raise DifyPluginError(f"entry {info.filename!r} is damaged: {exc}") from exc
            entries.append(Entry(info.filename, body, info.date_time))
        comment = archive.comment
    manifest_raw = next((e.data for e in entries if e.name == MANIFEST_FILE), None)
    if manifest_raw is None:
        raise DifyPluginError(f"no {MANIFEST_FILE} at the package root")
    try:
        manifest = yaml.safe_load(manifest_raw)
    except yaml.YAMLError as exc:
        raise DifyPluginError(f"{MANIFEST_FILE} is not YAML: {exc}") from exc
    if not isinstance(manifest, dict):
        raise DifyPluginError(f"{MANIFEST_FILE} is not a mapping")
    package = PluginPackage(entries, comment, manifest)
    if package.author and not _AUTHOR.match(package.author):
        raise DifyPluginError(f"manifest author {package.author!r} is not ^[a-z0-9_-]{{1,64}}$")
    if not _NAME.match(package.name):
        raise DifyPluginError(f"manifest name {package.name!r} is not ^[a-z0-9_-]{{1,128}}$")
    if not _VERSION.match(package.version):
        raise DifyPluginError(f"manifest version {package.version!r} is not a plugin version")
    return package


def package_checksum(entries: Iterable[Entry]) -> str:
    """`decoder.CalculateChecksum`: sha256 over sorted names of sha256(name)+sha256(content)."""
    by_name = {e.name: hashlib.sha256(e.data).digest() for e in entries if not _is_dir(e.name)}
    data = b"".join(hashlib.sha256(n.encode()).digest() + by_name[n] for n in sorted(by_name))
    return hashlib.sha256(data).hexdigest()


def _is_dir(name: str) -> bool:
    return name.endswith("/")


def _signed_payload(entries: Sequence[Entry], created_at: int) -> bytes:
    digests = b"".join(hashlib.sha256(e.data).digest() for e in entries)
    return digests + str(created_at).encode("ascii")


def write_signed(
    entries: Sequence[Entry],
    key: rsa.RSAPrivateKey,
    category: AuthorizedCategory | None,
    created_at: int | None = None,
) -> bytes:
    """Zip `entries` (plus the verification file) and sign them as `SignPluginWithPrivateKey`.

    Any `.verification.dify.json` among `entries` is dropped: the signer writes its own last,
    and a second copy would be hashed twice by the daemon's walk.
    """
    files = [e for e in entries if e.name != VERIFICATION_FILE and not _is_dir(e.name)]
    if category is not None:
        # Go's json.Marshal of the Verification struct: no spaces.
        body = json.dumps({"authorized_category": category}, separators=(",", ":")).encode()
        files.append(Entry(VERIFICATION_FILE, body, files[-1].date_time if files else _EPOCH))
    stamp = int(time.time()) if created_at is None else created_at
    signature = key.sign(_signed_payload(files, stamp), padding.PKCS1v15(), hashes.SHA256())
    comment = json.dumps(
        {"signature": base64.b64encode(signature).decode("ascii"), "time": stamp},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for entry in files:
            info = zipfile.ZipInfo(entry.name, date_time=entry.date_time)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, entry.data)
        archive.comment = comment
    return buffer.getvalue()


_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass
class SignatureCheck:
    """Outcome of checking a package the way the daemon does."""

    ok: bool
    reason: str = ""
    created_at: int = 0
    unique_identifier: str = ""
    category: str | None = None


def verify_package(data: bytes, keys: Sequence[rsa.RSAPublicKey]) -> SignatureCheck:
    """`VerifyPluginWithPublicKeys`: accept when any of `keys` verifies the package."""
    try:
        package = read_package(data)
    except DifyPluginError as exc:
        return SignatureCheck(False, str(exc))
    if any(_is_dir(e.name) for e in package.entries):
        return SignatureCheck(False, "has directory entries, which the daemon cannot read")
    try:
        comment = json.loads(package.comment or b"null")
        signature = base64.b64decode(str(comment["signature"]), validate=True)
        created_at = int(comment["time"])
    except (ValueError, TypeError, KeyError) as exc:
        return SignatureCheck(False, f"zip comment holds no signature: {exc}")
    payload = _signed_payload(package.entries, created_at)
    try:
        verification = package.verification()
    except DifyPluginError as exc:  # the daemon's decode fails the same way
        return SignatureCheck(False, str(exc), created_at)
    category = str(verification.get("authorized_category")) if verification else None
    for key in keys:
        try:
            key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return SignatureCheck(True, "", created_at, package.unique_identifier(), category)
    return SignatureCheck(False, "no trusted key verifies the signature", created_at)


# ------------------------------------------------------------------------- requirements


def normalize_name(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(text: str) -> list[str]:
    """Top-level project names of a requirements file; refuse what cannot install offline."""
    names: list[str] = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            option = line.split()[0].split("=", 1)[0]
            if option in _INDEX_OPTIONS:
                continue
            raise DifyPluginError(f"requirements option {option!r} cannot be repackaged offline")
        if "://" in line or line.startswith((".", "/")) or " @ " in line:
            raise DifyPluginError(f"requirement {line!r} is a URL or path, not an index project")
        match = _REQUIREMENT_NAME.match(line)
        if match is None:
            raise DifyPluginError(f"cannot read requirement {line!r}")
        names.append(normalize_name(match.group(1)))
    return names


def rewrite_requirements(text: str) -> str:
    """The plugin's requirements, resolved only from the bundled `wheels/` directory.

    uv resolves a relative `--find-links` against the requirements file's directory, and the
    daemon runs uv in the plugin's working directory, so `./wheels` is right either way.
    """
    kept: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("-") and line.split()[0].split("=", 1)[0] in _INDEX_OPTIONS:
            continue
        kept.append(raw.rstrip())
    header = [
        "# Repackaged for an air-gapped site by llmflow-airgap: only the bundled wheels.",
        "--no-index",
        f"--find-links ./{WHEELS_DIR}",
    ]
    return "\n".join([*header, *kept]).rstrip("\n") + "\n"


def plugin_requirements(package: PluginPackage) -> tuple[str, str]:
    """(requirements, constraints) the plugin's dependencies install from.

    A `requirements.txt` plugin: its file, no constraints. A `pyproject.toml` plugin (the
    daemon would run `uv sync`, which cannot be pointed at a wheelhouse through the package):
    the `[project].dependencies`, constrained to the versions its `uv.lock` pins; the
    repackaged plugin then carries a requirements.txt instead (see `repackage`).
    """
    pyproject = package.file(PYPROJECT_FILE)
    if pyproject is None:
        raw = package.file(REQUIREMENTS_FILE)
        if raw is None:
            raise DifyPluginError(
                f"{package.identity} has neither {REQUIREMENTS_FILE} nor {PYPROJECT_FILE}"
            )
        return raw.decode("utf-8"), ""
    try:
        project = tomllib.loads(pyproject.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DifyPluginError(f"{PYPROJECT_FILE} is not TOML: {exc}") from exc
    dependencies = project.get("project", {}).get("dependencies", [])
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise DifyPluginError(f"{PYPROJECT_FILE} [project].dependencies is not a list of strings")
    pins: list[str] = []
    lock = package.file(UV_LOCK_FILE)
    if lock is not None:
        try:
            locked = tomllib.loads(lock.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise DifyPluginError(f"{UV_LOCK_FILE} is not TOML: {exc}") from exc
        for item in locked.get("package", []):
            source = item.get("source", {})
            if isinstance(source, dict) and "registry" in source and "version" in item:
                pins.append(f"{item['name']}=={item['version']}")
    return "\n".join(dependencies) + "\n", "\n".join(sorted(pins)) + ("\n" if pins else "")


def wheel_project(filename: str) -> str | None:
    """Normalised project name of a wheel file name, or None for other files."""
    if not filename.endswith(".whl"):
        return None
    return normalize_name(filename.split("-", 1)[0])


def missing_wheels(requirements: str, wheel_files: Iterable[str]) -> list[str]:
    """Top-level requirements without any wheel (the transitive closure is pip's job)."""
    have = {p for p in (wheel_project(f) for f in wheel_files) if p}
    return [n for n in requirement_names(requirements) if n not in have]


def platform_tags(architectures: Sequence[str]) -> list[str]:
    """`--platform` values for pip: every manylinux tag the daemon image's glibc accepts."""
    tags: list[str] = []
    for arch in architectures:
        first = 17 if arch == "aarch64" else 5
        tags += [f"manylinux_2_{m}_{arch}" for m in range(DAEMON_GLIBC_MINOR, first - 1, -1)]
        tags.append(f"manylinux2014_{arch}")
        if arch == "x86_64":
            tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return tags


def download_wheels(
    requirements: str,
    destination: Path,
    architectures: Sequence[str],
    pip_command: Sequence[str],
    python_version: str = DAEMON_PYTHON,
    constraints: str = "",
) -> None:
    """`pip download` the wheels (binary only) for the daemon's Python and platform.

    Runs on the connected side at lock time; the result is hashed into the lockfile and
    `build` copies only those exact files.
    """
    destination.mkdir(parents=True, exist_ok=True)
    req_file = destination / ".requirements.txt"
    req_file.write_text(requirements, encoding="utf-8")
    constraint_file = destination / ".constraints.txt"
    constraint_file.write_text(constraints, encoding="utf-8")
    abi = "cp" + python_version.replace(".", "")
    command = [
        *pip_command,
        "download",
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "--abi",
        abi,
        *[arg for tag in platform_tags(architectures) for arg in ("--platform", tag)],
        "--dest",
        str(destination),
        "--disable-pip-version-check",
        "--quiet",
        "-r",
        str(req_file),
        "-c",
        str(constraint_file),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DifyPluginError(
            f"pip download failed to run ({' '.join(pip_command)}): {exc}"
        ) from exc
    finally:
        req_file.unlink(missing_ok=True)
        constraint_file.unlink(missing_ok=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise DifyPluginError("pip download failed: " + " | ".join(tail))


# ---------------------------------------------------------------------------- repackage


@dataclass
class Repackaged:
    """A re-signed package and what the daemon will call it."""

    data: bytes
    unique_identifier: str
    plugin_id: str
    version: str
    category: AuthorizedCategory | None
    wheels: list[str] = field(default_factory=list)
    uncompressed_size: int = 0


def default_category(author: str) -> AuthorizedCategory:
    """`langgenius` for langgenius plugins (ENFORCE_LANGGENIUS_PLUGIN_SIGNATURES), else
    `community`: we vouch for the bytes, not for a partnership."""
    return "langgenius" if author.lower() == "langgenius" else "community"


def repackage(
    source: bytes,
    wheels: Sequence[tuple[str, bytes]],
    key: rsa.RSAPrivateKey,
    category: AuthorizedCategory | None = None,
    created_at: int | None = None,
) -> Repackaged:
    """Add `wheels` under `wheels/`, pin requirements.txt to them, and sign with `key`."""
    package = read_package(source)
    req_text, _ = plugin_requirements(package)
    missing = missing_wheels(req_text, [name for name, _ in wheels])
    if missing:
        raise DifyPluginError(f"{package.identity}: no wheel for {', '.join(missing)}")
    stamp = package.entries[0].date_time if package.entries else _EPOCH
    pinned = Entry(REQUIREMENTS_FILE, rewrite_requirements(req_text).encode(), stamp)
    # pyproject.toml would make the daemon run `uv sync` against an index; without it (and
    # its uv.lock) the daemon takes the requirements.txt path, pinned to our wheels.
    dropped = {VERIFICATION_FILE, PYPROJECT_FILE, UV_LOCK_FILE, REQUIREMENTS_FILE}
    entries: list[Entry] = []
    for entry in package.entries:
        if entry.name in dropped or _is_dir(entry.name):
            if entry.name == REQUIREMENTS_FILE:
                entries.append(Entry(REQUIREMENTS_FILE, pinned.data, entry.date_time))
            continue
        if entry.name.startswith(WHEELS_DIR + "/"):
            continue  # a previous repackaging: replaced by the wheels given now
        entries.append(entry)
    if package.file(REQUIREMENTS_FILE) is None:
        entries.append(pinned)
    for name, data in sorted(wheels):
        entries.append(Entry(f"{WHEELS_DIR}/{name}", data, stamp))
    chosen = category or default_category(package.author)
    signed = write_signed(entries, key, chosen, created_at)
    result = read_package(signed)
    return Repackaged(
        data=signed,
        unique_identifier=result.unique_identifier(),
        plugin_id=result.plugin_id,
        version=result.version,
        category=chosen,
        wheels=sorted(name for name, _ in wheels),
        uncompressed_size=result.uncompressed_size(),
    )


def package_file_name(plugin_id: str, version: str) -> str:
    """`<author>-<name>-<version>.difypkg`, the bundle's file name for a plugin."""
    return f"{plugin_id.replace('/', '-')}-{version}.difypkg"
