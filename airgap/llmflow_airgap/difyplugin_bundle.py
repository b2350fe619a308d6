"""Dify plugins in `lock`, `build` and `verify` (the package format is in `difyplugin`).

* `lock` pins each plugin of `platform.yaml`'s `difyPlugins` to the sha256 of its source
  package (checked against the one platform.yaml states) and to the wheels its
  `requirements.txt` resolves to for the daemon's CPython 3.12 on Linux — downloaded with
  `pip download --only-binary=:all:` when asked (connected side), or read from a directory the
  operator filled — every wheel hashed.
* `build` re-reads exactly those bytes (refusing any that changed), repackages each plugin
  with its wheels, re-signs it with our RSA key in the daemon's format, checks the result
  with the daemon's rule, and writes `dify-plugins/<author>-<name>-<version>.difypkg`, our
  `public.pem` (what the daemon must trust) and `index.json` (what `llmflow dify plugins
  install` reads: file, expected unique identifier). All of them are covered by
  `checksums.txt` and the signed bundle manifest like any other bundle file.
* `verify` additionally checks every listed package's plugin signature against the bundled
  `public.pem` and its unique identifier, so a package that was signed wrongly is refused
  even when the bundle manifest vouches for its bytes.

Packages are held in memory while they are repackaged: the daemon itself reads a whole
package into memory and caps it (MAX_PLUGIN_PACKAGE_SIZE, 50 MiB uncompressed by default).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import httpx

from llmflow_airgap.difyplugin import (
    DAEMON_COMMIT,
    DAEMON_PYTHON,
    DAEMON_VERSION,
    DEFAULT_MAX_PACKAGE_SIZE,
    DifyPluginError,
    default_category,
    download_wheels,
    load_plugin_private_key,
    load_plugin_public_key,
    missing_wheels,
    package_file_name,
    plugin_requirements,
    public_key_from_pem,
    public_pem_of,
    read_package,
    repackage,
    verify_package,
)
from llmflow_airgap.digests import sha256_bytes, sha256_file
from llmflow_airgap.errors import (
    BundleError,
    DigestMismatchError,
    LockfileError,
    SigningKeyError,
)
from llmflow_airgap.lockfile import LockedDifyPlugin, LockedWheel
from llmflow_airgap.platform import DifyPlugin
from llmflow_airgap.sources import stream_url, wheel_name_version

DIFY_PLUGINS_DIR: Final = "dify-plugins"
INDEX_NAME: Final = f"{DIFY_PLUGINS_DIR}/index.json"
PUBLIC_KEY_NAME: Final = f"{DIFY_PLUGINS_DIR}/public.pem"
INDEX_KIND: Final = "DifyPluginIndex"

Refuse = Callable[[str, str, str], None]
Event = Callable[[str, str], None]


def wheel_dir(root: Path, plugin_id: str, version: str) -> Path:
    """`<root>/<author>__<name>-<version>/`: one wheelhouse per plugin, so pip's closure for
    one plugin is never mistaken for another's."""
    return root / f"{plugin_id.replace('/', '__')}-{version}"


def fetch_source(source: str, plugins_dir: Path | None, http: httpx.Client) -> bytes:
    """The source package's bytes, from `--dify-plugins-dir` or its https URL."""
    if source.startswith("https://"):
        return b"".join(stream_url(http, source))
    if plugins_dir is None:
        raise LockfileError(f"dify plugin {source} is a local file: pass --dify-plugins-dir")
    try:
        return (plugins_dir / source).read_bytes()
    except OSError as exc:
        raise LockfileError(f"cannot read dify plugin {plugins_dir / source}: {exc}") from exc


def _wheel_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(".whl"))


def lock_dify_plugin(
    plugin: DifyPlugin,
    *,
    plugins_dir: Path | None,
    wheels_root: Path | None,
    download: bool,
    pip_command: Sequence[str],
    http: httpx.Client,
    source_keys: Sequence[Path] = (),
) -> LockedDifyPlugin:
    """Pin one plugin: source sha256, manifest identity, wheels for the daemon's platform."""
    data = fetch_source(plugin.source, plugins_dir, http)
    digest = sha256_bytes(data)
    if digest != plugin.sha256:
        raise DigestMismatchError(
            f"dify plugin {plugin.id} {plugin.source} hashes to {digest}, platform.yaml says "
            f"{plugin.sha256}"
        )
    try:
        package = read_package(data)
    except DifyPluginError as exc:
        raise LockfileError(f"dify plugin {plugin.id}: {exc}") from exc
    if source_keys:
        check = verify_package(data, [load_plugin_public_key(k) for k in source_keys])
        if not check.ok:
            raise LockfileError(
                f"dify plugin {plugin.id}: the source package's signature does not verify with "
                f"the given key(s): {check.reason}"
            )
    if package.plugin_id != plugin.id or package.version != plugin.version:
        raise LockfileError(
            f"dify plugin {plugin.source} is {package.identity}, platform.yaml says "
            f"{plugin.id}:{plugin.version}"
        )
    try:
        requirements, constraints = plugin_requirements(package)
    except DifyPluginError as exc:
        raise LockfileError(f"dify plugin {plugin.id}: {exc}") from exc
    if wheels_root is None:
        raise LockfileError(
            f"dify plugin {plugin.id}: pass --dify-plugin-wheels (a directory; with "
            "--download-plugin-wheels it is filled by pip download)"
        )
    directory = wheel_dir(wheels_root, plugin.id, plugin.version)
    if download:
        try:
            download_wheels(
                requirements,
                directory,
                plugin.architectures,
                pip_command,
                constraints=constraints,
            )
        except DifyPluginError as exc:
            raise LockfileError(f"dify plugin {plugin.id}: {exc}") from exc
    files = _wheel_files(directory)
    try:
        missing = missing_wheels(requirements, [f.name for f in files])
    except DifyPluginError as exc:
        raise LockfileError(f"dify plugin {plugin.id}: {exc}") from exc
    if missing:
        raise LockfileError(
            f"dify plugin {plugin.id}: no wheel in {directory} for {', '.join(missing)} "
            "(run lock with --download-plugin-wheels on the connected side)"
        )
    wheels = []
    for path in files:
        parsed = wheel_name_version(path.name)
        if parsed is None:
            raise LockfileError(f"{path.name} is not a wheel file name")
        wheel_digest, size = sha256_file(path)
        wheels.append(
            LockedWheel(
                filename=path.name,
                name=parsed[0],
                version=parsed[1],
                sha256=wheel_digest,
                size=size,
            )
        )
    return LockedDifyPlugin(
        id=plugin.id,
        version=plugin.version,
        source=plugin.source,
        sha256=digest,
        size=len(data),
        authorizedCategory=plugin.authorized_category or default_category(package.author),
        sourceVerified=bool(source_keys),
        pythonVersion=DAEMON_PYTHON,
        architectures=list(plugin.architectures),
        wheels=wheels,
    )


def build_dify_plugins(
    plugins: Sequence[LockedDifyPlugin],
    *,
    plugins_dir: Path | None,
    wheels_root: Path | None,
    key_path: Path | None,
    http: httpx.Client,
    event: Event,
) -> list[tuple[str, bytes]]:
    """Repackaged, re-signed packages plus `public.pem` and `index.json`, as (path, bytes)."""
    if not plugins:
        return []
    if key_path is None:
        raise BundleError("the lockfile pins Dify plugins: pass --dify-plugin-key (RSA, PKCS#1)")
    if wheels_root is None:
        raise BundleError("the lockfile pins Dify plugins: pass --dify-plugin-wheels")
    key = load_plugin_private_key(key_path)
    public_pem = public_pem_of(key)
    created_at = _created_at()
    out: list[tuple[str, bytes]] = []
    index: list[dict[str, Any]] = []
    for locked in plugins:
        data = fetch_source(locked.source, plugins_dir, http)
        if sha256_bytes(data) != locked.sha256:
            raise DigestMismatchError(
                f"dify plugin {locked.id}: {locked.source} hashes to {sha256_bytes(data)}, "
                f"the lockfile says {locked.sha256}"
            )
        directory = wheel_dir(wheels_root, locked.id, locked.version)
        wheels: list[tuple[str, bytes]] = []
        for wheel in locked.wheels:
            try:
                body = (directory / wheel.filename).read_bytes()
            except OSError as exc:
                raise BundleError(f"wheel {directory / wheel.filename} is missing: {exc}") from exc
            if sha256_bytes(body) != wheel.sha256:
                raise DigestMismatchError(
                    f"{directory / wheel.filename} hashes to {sha256_bytes(body)}, the "
                    f"lockfile says {wheel.sha256}"
                )
            wheels.append((wheel.filename, body))
        try:
            result = repackage(data, wheels, key, locked.authorized_category, created_at)
        except DifyPluginError as exc:
            raise BundleError(f"dify plugin {locked.id}: {exc}") from exc
        check = verify_package(result.data, [key.public_key()])
        if not check.ok or check.unique_identifier != result.unique_identifier:
            raise BundleError(f"dify plugin {locked.id}: re-signed package does not verify")
        name = package_file_name(locked.id, locked.version)
        out.append((f"{DIFY_PLUGINS_DIR}/{name}", result.data))
        if result.uncompressed_size > DEFAULT_MAX_PACKAGE_SIZE:
            event(
                "dify-plugin.large",
                f"{name} is {result.uncompressed_size} bytes uncompressed: raise the daemon's "
                "MAX_PLUGIN_PACKAGE_SIZE and Dify's PLUGIN_MAX_PACKAGE_SIZE above it",
            )
        event(
            "dify-plugin.stored",
            f"dify plugin {result.unique_identifier}: {len(wheels)} wheels, re-signed",
        )
        index.append(
            {
                "id": locked.id,
                "version": locked.version,
                "file": name,
                "uniqueIdentifier": result.unique_identifier,
                "sha256": sha256_bytes(result.data),
                "size": len(result.data),
                "uncompressedSize": result.uncompressed_size,
                "authorizedCategory": locked.authorized_category,
                "wheels": result.wheels,
            }
        )
    document = {
        "apiVersion": "llmflow.io/v1alpha1",
        "kind": INDEX_KIND,
        "daemon": {"version": DAEMON_VERSION, "commit": DAEMON_COMMIT, "python": DAEMON_PYTHON},
        "publicKey": "public.pem",
        "plugins": index,
    }
    out.append((PUBLIC_KEY_NAME, public_pem))
    out.append((INDEX_NAME, (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()))
    return out


def _created_at() -> int | None:
    """SOURCE_DATE_EPOCH, when set, makes re-signed packages reproducible byte for byte."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(value) if value.isdigit() else None


def check_bundle_plugins(bundle: Path, listed: set[str], refuse: Refuse) -> int:
    """`verify`'s plugin check: every indexed package verifies with the bundled public key
    and is the unique identifier the index promises. Returns packages checked."""
    if INDEX_NAME not in listed:
        return 0
    try:
        document = json.loads((bundle / INDEX_NAME).read_bytes())
        entries = list(document["plugins"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        refuse(INDEX_NAME, "changed", f"is not a Dify plugin index: {exc}")
        return 0
    try:
        key = public_key_from_pem((bundle / PUBLIC_KEY_NAME).read_bytes(), Path(PUBLIC_KEY_NAME))
    except (OSError, SigningKeyError) as exc:
        refuse(PUBLIC_KEY_NAME, "missing", f"cannot read the plugin public key: {exc}")
        return 0
    checked = 0
    for entry in entries:
        rel = f"{DIFY_PLUGINS_DIR}/{entry.get('file', '')}"
        if rel not in listed or not (bundle / rel).is_file():
            refuse(rel, "missing", "indexed Dify plugin is not in the signed manifest")
            continue
        result = verify_package((bundle / rel).read_bytes(), [key])
        checked += 1
        if not result.ok:
            refuse(rel, "bad-signature", f"Dify plugin signature refused: {result.reason}")
        elif result.unique_identifier != entry.get("uniqueIdentifier"):
            refuse(
                rel,
                "changed",
                f"is {result.unique_identifier}, index says {entry.get('uniqueIdentifier')}",
            )
    return checked
