"""The on-disk shape of a bundle, shared by `build`, `verify` and `install`.

    <bundle>/
      images/                 one OCI image layout for every image (oci-layout, index.json,
        blobs/sha256/<hex>    blobs stored once however many images share them)
      charts/<name>-<version>.tgz
      models/<served-name>/<files of the snapshot>
      wheels/<wheel or sdist>
      dify-plugins/           re-signed Dify plugins with their wheels, our public.pem and
                              index.json (`difyplugin_bundle`)
      distribution/           platform.yaml, values, manifests (`build --platform`)
      tools/helm              a helm executable (`build --helm-binary`)
      platform.lock.yaml      the lockfile the bundle was built from
      sbom.cdx.json           CycloneDX 1.5
      manifest.json           every file above with sha256 and size (signed)
      manifest.json.sig       raw Ed25519 signature of manifest.json
      checksums.txt           `sha256sum -c` list of every file except itself

Temporary downloads live in `<bundle>/.partial/` (the same filesystem, so the final rename is
atomic and a full `/tmp` never breaks a build); the directory is gone once a build finishes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmflow_airgap.errors import BundleError

IMAGES_DIR = "images"
BLOBS_DIR = f"{IMAGES_DIR}/blobs/sha256"
CHARTS_DIR = "charts"
MODELS_DIR = "models"
WHEELS_DIR = "wheels"
DISTRIBUTION_DIR = "distribution"
HELM_BINARY = "tools/helm"
PARTIAL_DIR = ".partial"
LOCK_NAME = "platform.lock.yaml"
SBOM_NAME = "sbom.cdx.json"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
CHECKSUMS_NAME = "checksums.txt"
CONTROL_FILES = frozenset({MANIFEST_NAME, SIGNATURE_NAME, CHECKSUMS_NAME})
MANIFEST_KIND = "BundleManifest"
OCI_LAYOUT_VERSION = "1.0.0"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
CONTAINERD_NAME_ANNOTATION = "io.containerd.image.name"


@dataclass(frozen=True)
class BundleFile:
    """One file the manifest vouches for."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class BundleManifest:
    """`manifest.json`, the signed table of contents."""

    platform: dict[str, str]
    lock_sha256: str
    images: list[dict[str, str]]
    files: list[BundleFile]
    # Set on a differential bundle (`diff`): what it was cut against and which image blobs
    # it leaves out because the site already has them. Absent from full bundles, so their
    # signed bytes are unchanged.
    differential: dict[str, Any] | None = None

    def omitted_blobs(self) -> dict[str, int]:
        """Digest -> size of the blobs a differential bundle leaves out (empty if full)."""
        if not self.differential:
            return {}
        return {str(b["digest"]): int(b["size"]) for b in self.differential.get("omittedBlobs", [])}

    def to_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, fixed separators): what the signature covers."""
        document: dict[str, Any] = {
            "apiVersion": "llmflow.io/v1alpha1",
            "kind": MANIFEST_KIND,
            "platform": self.platform,
            "lockSha256": self.lock_sha256,
            "images": self.images,
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files],
        }
        if self.differential is not None:
            document["differential"] = self.differential
        return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def parse(cls, data: bytes) -> BundleManifest:
        """Read `manifest.json` bytes."""
        try:
            raw: Any = json.loads(data)
            if raw.get("kind") != MANIFEST_KIND:
                raise BundleError(f"{MANIFEST_NAME} is not a {MANIFEST_KIND}")
            return cls(
                platform=dict(raw["platform"]),
                lock_sha256=str(raw["lockSha256"]),
                images=list(raw["images"]),
                files=[
                    BundleFile(str(f["path"]), str(f["sha256"]), int(f["size"]))
                    for f in raw["files"]
                ],
                differential=dict(raw["differential"]) if raw.get("differential") else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BundleError(f"{MANIFEST_NAME} is malformed: {exc}") from exc


def bundle_files(root: Path) -> list[str]:
    """Every regular file under `root`, as sorted POSIX paths relative to it.

    Symlinks are listed too (as files), so a link smuggled into a bundle is reported as an
    extra file rather than followed.
    """
    found: list[str] = []
    for path in root.rglob("*"):
        if path.is_symlink() or path.is_file():
            found.append(path.relative_to(root).as_posix())
    return sorted(found)


def checksums_text(files: list[BundleFile]) -> str:
    """`sha256sum`-compatible lines (`<hex>  <path>`)."""
    return "".join(f"{f.sha256.removeprefix('sha256:')}  {f.path}\n" for f in files)
