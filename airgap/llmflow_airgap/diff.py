"""`llmflow-airgap diff`: a differential bundle with only the image blobs the site lacks.

An upgrade usually changes a few images of forty; carrying every base layer across the air
gap again wastes hours. `diff` takes a full, signed bundle and what the site already has —
its registry (asked blob by blob with `HEAD`), the lockfile of the last install, or the
previous bundle — and writes a new bundle without those blobs. Everything else (manifests,
charts, models, wheels, lockfile, SBOM) is kept, so the result installs like a full bundle.

The signed manifest says it is differential: `differential.omittedBlobs` lists every left-out
blob with its size and the site repositories known to hold it. `verify` accepts exactly those
absences and nothing else, and `push` HEADs or mounts them at the site instead of uploading,
failing loudly if the site is not where the bundle was cut against.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmflow_airgap.bundle import (
    BLOBS_DIR,
    CHECKSUMS_NAME,
    CONTROL_FILES,
    IMAGES_DIR,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    BundleFile,
    BundleManifest,
    checksums_text,
)
from llmflow_airgap.digests import digest_hex, sha256_bytes
from llmflow_airgap.errors import BundleError
from llmflow_airgap.events import Reporter, human_size
from llmflow_airgap.images import parse_image
from llmflow_airgap.lockfile import load_lockfile
from llmflow_airgap.push import PlannedImage, plan_push
from llmflow_airgap.registry import INDEX_TYPES, RegistryClient, endpoint_url
from llmflow_airgap.signing import load_private_key, sign


@dataclass(frozen=True)
class DiffRequest:
    """Inputs of `diff`: the full bundle and exactly one description of the site."""

    bundle: Path
    output: Path
    signing_key: Path
    against_registry: str | None = None
    against_lock: Path | None = None
    against_bundle: Path | None = None


@dataclass
class DiffResult:
    """What the differential bundle leaves out and keeps."""

    omitted: dict[str, int] = field(default_factory=dict)
    kept_blob_bytes: int = 0
    files: int = 0


def _site_from_registry(plans: list[PlannedImage], registry: str) -> dict[str, set[str]]:
    host = registry.split("://", 1)[-1].rstrip("/")
    found: dict[str, set[str]] = {}
    with RegistryClient({host: endpoint_url(registry)}) as client:
        for plan in plans:
            for digest, _ in plan.blobs:
                if client.blob_exists(host, plan.target_repo, digest):
                    found.setdefault(digest, set()).add(plan.target_repo)
    return found


def _walk_blobs(layout: Path, digest: str, media_type: str, out: set[str]) -> None:
    path = layout / "blobs/sha256" / digest_hex(digest)
    if not path.is_file():
        return
    document: dict[str, Any] = json.loads(path.read_bytes())
    if media_type in INDEX_TYPES:
        for child in document.get("manifests", []):
            _walk_blobs(layout, child["digest"], child["mediaType"], out)
        return
    for descriptor in [document.get("config", {}), *document.get("layers", [])]:
        if descriptor.get("digest"):
            out.add(str(descriptor["digest"]))


def _site_from_lock(bundle: Path, lock_path: Path) -> dict[str, set[str]]:
    """Blobs of images the previous lock installed, as far as this bundle can tell.

    A lockfile names images by manifest digest only; an image whose manifest is also in this
    bundle is unchanged, so all its blobs are at the site in that image's repository.
    """
    lock = load_lockfile(lock_path)
    layout = bundle / IMAGES_DIR
    found: dict[str, set[str]] = {}
    for image in lock.images:
        blobs: set[str] = set()
        _walk_blobs(layout, image.digest, image.media_type, blobs)
        repo = parse_image(image.reference).path
        for digest in blobs:
            found.setdefault(digest, set()).add(repo)
    return found


def _site_from_bundle(previous: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for plan in plan_push(previous):
        for digest, _ in plan.blobs:
            found.setdefault(digest, set()).add(plan.target_repo)
    return found


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        # Same filesystem: a hard link costs no space and no time.
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def diff_bundle(request: DiffRequest, reporter: Reporter | None = None) -> DiffResult:
    """Write the differential bundle `request.output` from the full bundle."""
    report = reporter or Reporter(quiet=True)
    sources = [request.against_registry, request.against_lock, request.against_bundle]
    if sum(s is not None for s in sources) != 1:
        raise BundleError("diff needs exactly one of --registry, --against-lock, --against-bundle")
    key = load_private_key(request.signing_key)
    manifest_path = request.bundle / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{request.bundle} has no {MANIFEST_NAME}: not a built bundle")
    manifest = BundleManifest.parse(manifest_path.read_bytes())
    if manifest.differential is not None:
        raise BundleError(f"{request.bundle} is itself differential: diff a full bundle")
    plans = plan_push(request.bundle)
    if request.against_registry is not None:
        site = _site_from_registry(plans, request.against_registry)
        base = f"registry {request.against_registry}"
    elif request.against_lock is not None:
        site = _site_from_lock(request.bundle, request.against_lock)
        lock_digest = sha256_bytes(request.against_lock.read_bytes())
        base = f"lockfile {request.against_lock.name} ({lock_digest})"
    else:
        assert request.against_bundle is not None
        site = _site_from_bundle(request.against_bundle)
        base = f"bundle {request.against_bundle}"
    layer_blobs = {d: s for plan in plans for d, s in plan.blobs}
    omitted = {d: s for d, s in layer_blobs.items() if d in site}
    output = request.output
    if output.exists() and any(output.iterdir()):
        raise BundleError(f"{output} is not empty: refusing to write a bundle into it")
    kept: list[BundleFile] = []
    for entry in manifest.files:
        if (
            entry.path.startswith(BLOBS_DIR + "/")
            and ("sha256:" + entry.path.rsplit("/", 1)[-1]) in omitted
        ):
            continue
        _place(request.bundle / entry.path, output / entry.path)
        kept.append(entry)
    differential = {
        "base": base,
        "omittedBlobs": [
            {"digest": d, "size": s, "repositories": sorted(site[d])}
            for d, s in sorted(omitted.items())
        ],
    }
    new_manifest = BundleManifest(
        platform=manifest.platform,
        lock_sha256=manifest.lock_sha256,
        images=manifest.images,
        files=kept,
        differential=differential,
    )
    data = new_manifest.to_bytes()
    signature = sign(key, data)
    (output / MANIFEST_NAME).write_bytes(data)
    (output / SIGNATURE_NAME).write_bytes(signature)
    listed = [
        *kept,
        BundleFile(MANIFEST_NAME, sha256_bytes(data), len(data)),
        BundleFile(SIGNATURE_NAME, sha256_bytes(signature), len(signature)),
    ]
    (output / CHECKSUMS_NAME).write_text(
        checksums_text(sorted(listed, key=lambda f: f.path)), encoding="utf-8"
    )
    result = DiffResult(
        omitted=omitted,
        kept_blob_bytes=sum(s for d, s in layer_blobs.items() if d not in omitted),
        files=len(kept) + len(CONTROL_FILES),
    )
    report.event(
        "diff.done",
        f"differential bundle {output}: {len(omitted)} blob(s) left out "
        f"({human_size(sum(omitted.values()))}), {human_size(result.kept_blob_bytes)} of image "
        f"blobs kept; cut against {base}",
        bundle=str(output),
        omitted=len(omitted),
        omittedBytes=sum(omitted.values()),
        keptBlobBytes=result.kept_blob_bytes,
    )
    return result
