"""Dify plugins in `lock`, `build` and `verify` (the package format is in `difyplugin`).

* `lock` fetches each plugin of `platform.yaml`'s `difyPlugins` — from Dify's marketplace
  (`source: marketplace`, the default), an https:// URL, or a file of `--dify-plugins-dir` —
  and accepts it only when something vouches for its bytes: its own signature verifies with
  a key the operator passed (`--dify-plugin-source-key`, Dify's official key for marketplace
  packages), or it hashes to the sha256 platform.yaml states (both are checked when both are
  given). It records the package's sha256, size and the verifying key's fingerprint, and the
  wheels its `requirements.txt` resolves to for the daemon's CPython 3.12 on Linux —
  downloaded with `pip download --only-binary=:all:` when asked (connected side), or read
  from a directory the operator filled — every wheel hashed. A downloaded package is also
  stored in `--dify-plugins-dir` (as `<author>-<name>_<version>.difypkg`) when one is given,
  so `build` reads it from there instead of downloading it again.
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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

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
from llmflow_airgap.platform import MARKETPLACE_SOURCE, DifyPlugin
from llmflow_airgap.sources import rewrite_url, stream_url, wheel_name_version

DIFY_PLUGINS_DIR: Final = "dify-plugins"
INDEX_NAME: Final = f"{DIFY_PLUGINS_DIR}/index.json"
PUBLIC_KEY_NAME: Final = f"{DIFY_PLUGINS_DIR}/public.pem"
INDEX_KIND: Final = "DifyPluginIndex"
DEFAULT_MARKETPLACE: Final = "https://marketplace.dify.ai"
"""Dify's MARKETPLACE_API_URL default (api `configs/feature`)."""

Refuse = Callable[[str, str, str], None]
Event = Callable[[str, str], None]


def wheel_dir(root: Path, plugin_id: str, version: str) -> Path:
    """`<root>/<author>__<name>-<version>/`: one wheelhouse per plugin, so pip's closure for
    one plugin is never mistaken for another's."""
    return root / f"{plugin_id.replace('/', '__')}-{version}"


def marketplace_download_url(
    plugin_id: str, version: str, marketplace: str = DEFAULT_MARKETPLACE
) -> str:
    """The marketplace endpoint Dify itself downloads a plugin version from.

    langgenius/dify `api/core/helper/marketplace.py` (`get_plugin_pkg_url`, commit
    0f2349b9b566c6a26121093e9ced4b460fcce9da): for `org/name:version[@checksum]` it requests
    `MARKETPLACE_API_URL / f"api/v1/plugins/{org}/{name}/{version}/download"`, so the checksum
    (unknown before the download) is not needed.
    """
    author, name = plugin_id.split("/", 1)
    return f"{marketplace.rstrip('/')}/api/v1/plugins/{author}/{name}/{version}/download"


def source_url(plugin: DifyPlugin) -> str | None:
    """Where `lock` downloads a plugin from; None for a file of --dify-plugins-dir."""
    if plugin.source == MARKETPLACE_SOURCE:
        return marketplace_download_url(plugin.id, plugin.version)
    return plugin.source if plugin.source.startswith("https://") else None


def source_file_name(plugin_id: str, version: str) -> str:
    """`<author>-<name>_<version>.difypkg`, the marketplace's own file name for a package:
    where a downloaded source is kept in --dify-plugins-dir."""
    return f"{plugin_id.replace('/', '-')}_{version}.difypkg"


def key_fingerprint(key: rsa.RSAPublicKey) -> str:
    """`sha256:<hex>` of the key's DER SubjectPublicKeyInfo (what `openssl ... -pubout
    -outform DER | sha256sum` prints), naming the signer in the lockfile."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return sha256_bytes(der)


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


def _fetch_remote(
    url: str,
    cached: Path | None,
    mirrors: Mapping[str, str],
    http: httpx.Client,
) -> tuple[bytes, bool]:
    """(bytes, whether they were downloaded): the copy in --dify-plugins-dir when there is
    one, else a download (through the longest matching mirror prefix)."""
    if cached is not None and cached.is_file():
        try:
            return cached.read_bytes(), False
        except OSError as exc:
            raise LockfileError(f"cannot read dify plugin {cached}: {exc}") from exc
    return b"".join(stream_url(http, rewrite_url(url, mirrors))), True


def _keep(cached: Path, data: bytes) -> None:
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(cached.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(cached)


def fetch_locked_source(
    locked: LockedDifyPlugin,
    plugins_dir: Path | None,
    http: httpx.Client,
    mirrors: Mapping[str, str] | None = None,
) -> tuple[bytes, str]:
    """`build`'s read of a locked source package, and where it was read from (the caller
    checks its sha256)."""
    url = locked.download_url
    if url is None:
        return fetch_source(locked.source, plugins_dir, http), locked.source
    cached = plugins_dir / source_file_name(locked.id, locked.version) if plugins_dir else None
    data, downloaded = _fetch_remote(url, cached, mirrors or {}, http)
    return data, url if downloaded else str(cached)


def _signer(
    plugin: DifyPlugin, data: bytes, source_keys: Sequence[Path], where: str
) -> tuple[str, int] | None:
    """(fingerprint, signing time) of the first trusted key that verifies the package; None
    when no key was given. Raises when keys were given and none verifies it."""
    if not source_keys:
        return None
    reason = ""
    for path in source_keys:
        key = load_plugin_public_key(path)
        check = verify_package(data, [key])
        if check.ok:
            return key_fingerprint(key), check.created_at
        reason = check.reason
    raise LockfileError(
        f"dify plugin {plugin.id}:{plugin.version} from {where}: its signature does not "
        f"verify with the given --dify-plugin-source-key(s) ({reason}); refusing an unsigned "
        "or tampered package"
    )


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
    mirrors: Mapping[str, str] | None = None,
) -> LockedDifyPlugin:
    """Pin one plugin: fetch and vouch for its source package (trusted signature and/or the
    platform.yaml sha256), check its manifest identity, pin wheels for the daemon's platform.

    A package is stored in `plugins_dir` only once it passed every check, so a refused
    download never lands where `build` would read it.
    """
    url = source_url(plugin)
    cached: Path | None = None
    downloaded = False
    if url is None:
        data, where = fetch_source(plugin.source, plugins_dir, http), plugin.source
    else:
        if plugins_dir is not None:
            cached = plugins_dir / source_file_name(plugin.id, plugin.version)
        data, downloaded = _fetch_remote(url, cached, mirrors or {}, http)
        where = url if downloaded else str(cached)
    digest = sha256_bytes(data)
    if plugin.sha256 is not None and digest != plugin.sha256:
        raise DigestMismatchError(
            f"dify plugin {plugin.id} from {where} hashes to {digest}, platform.yaml says "
            f"{plugin.sha256}"
        )
    if plugin.sha256 is None and not source_keys:
        raise LockfileError(
            f"dify plugin {plugin.id}:{plugin.version}: nothing vouches for {where}: pass "
            "--dify-plugin-source-key with the key it is signed with (Dify's official key for "
            "marketplace packages: pkg/license/public_key/PUBLIC_KEY.pem of "
            "langgenius/dify-plugin-daemon), or pin its sha256 in platform.yaml"
        )
    try:
        package = read_package(data)
    except DifyPluginError as exc:
        raise LockfileError(f"dify plugin {plugin.id}: {exc}") from exc
    signer = _signer(plugin, data, source_keys, where)
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
    if cached is not None and downloaded:
        _keep(cached, data)
    return LockedDifyPlugin(
        id=plugin.id,
        version=plugin.version,
        source=plugin.source,
        url=url,
        sha256=digest,
        size=len(data),
        authorizedCategory=plugin.authorized_category or default_category(package.author),
        sourceVerified=signer is not None,
        sourceSigner=signer[0] if signer else None,
        sourceSignedAt=signer[1] if signer else None,
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
    mirrors: Mapping[str, str] | None = None,
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
        data, where = fetch_locked_source(locked, plugins_dir, http, mirrors)
        if sha256_bytes(data) != locked.sha256:
            raise DigestMismatchError(
                f"dify plugin {locked.id}: {where} hashes to {sha256_bytes(data)}, "
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
