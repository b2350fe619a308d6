"""Step 1 of `install`: copy the bundle's images into the site registry, digests unchanged.

Manifests are pushed as the exact bytes in the bundle, so every `@sha256:` reference in the
air-gap overlays stays valid (the failure users report most often with tools that re-encode
manifests). Before each blob: `HEAD` (already there: skip — a re-run after an interruption
uploads only what is missing), then a cross-repository mount from a repository this run
already filled (a base layer shared by twenty images crosses the wire once), then an upload.
Children are pushed before their index and the tag last, so a tag never names an
incomplete image.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmflow_airgap.bundle import (
    BLOBS_DIR,
    IMAGES_DIR,
    MANIFEST_NAME,
    REF_NAME_ANNOTATION,
    BundleManifest,
)
from llmflow_airgap.digests import digest_hex
from llmflow_airgap.errors import BundleError, DigestMismatchError
from llmflow_airgap.events import Reporter, human_size
from llmflow_airgap.images import parse_image
from llmflow_airgap.registry import INDEX_TYPES, RegistryClient, endpoint_url


@dataclass(frozen=True)
class PlannedManifest:
    """A manifest or index to put, by digest (and by tag for the image's top level)."""

    digest: str
    media_type: str
    tag: str | None = None


@dataclass
class PlannedImage:
    """Everything one image needs in its target repository, in push order."""

    source: str
    target_repo: str
    tag: str
    blobs: list[tuple[str, int]] = field(default_factory=list)
    manifests: list[PlannedManifest] = field(default_factory=list)


@dataclass
class PushResult:
    """Counts for the report: what was skipped, mounted and uploaded."""

    images: int = 0
    blobs_existing: int = 0
    blobs_mounted: int = 0
    blobs_uploaded: int = 0
    bytes_uploaded: int = 0
    manifests_put: int = 0
    seconds: float = 0.0


def plan_push(bundle: Path) -> list[PlannedImage]:
    """Read the bundle's OCI layout into per-image push plans (no network)."""
    layout = bundle / IMAGES_DIR
    try:
        index = json.loads((layout / "index.json").read_bytes())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{layout / 'index.json'} is unreadable: {exc}") from exc
    plans = []
    for entry in index.get("manifests", []):
        name = (entry.get("annotations") or {}).get(REF_NAME_ANNOTATION)
        if not name:
            raise BundleError(f"image {entry.get('digest')} in the layout has no reference name")
        ref = parse_image(name)
        plan = PlannedImage(source=name, target_repo=ref.path, tag=ref.tag or "latest")
        _walk(layout, entry["digest"], entry["mediaType"], plan, set())
        plan.manifests.append(PlannedManifest(entry["digest"], entry["mediaType"], plan.tag))
        plans.append(plan)
    return plans


def _load(layout: Path, digest: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (layout / "blobs/sha256" / digest_hex(digest)).read_bytes()
    )
    return document


def _walk(layout: Path, digest: str, media_type: str, plan: PlannedImage, seen: set[str]) -> None:
    document = _load(layout, digest)
    if media_type in INDEX_TYPES:
        for child in document.get("manifests", []):
            if child["digest"] in seen:
                continue
            seen.add(child["digest"])
            _walk(layout, child["digest"], child["mediaType"], plan, seen)
            plan.manifests.append(PlannedManifest(child["digest"], child["mediaType"]))
        return
    for descriptor in [document["config"], *document.get("layers", [])]:
        item = (descriptor["digest"], int(descriptor["size"]))
        if item not in plan.blobs:
            plan.blobs.append(item)


def describe_plan(plans: list[PlannedImage], registry: str) -> list[str]:
    """Human-readable lines of what `push` would do."""
    lines = []
    unique: dict[str, int] = {}
    for plan in plans:
        size = sum(s for _, s in plan.blobs)
        unique.update(dict(plan.blobs))
        lines.append(
            f"{plan.source} -> {registry}/{plan.target_repo}:{plan.tag} "
            f"({len(plan.blobs)} blobs, {human_size(size)}, {len(plan.manifests)} manifests)"
        )
    lines.append(
        f"{len(plans)} images, {len(unique)} unique blobs, {human_size(sum(unique.values()))} "
        "at most to upload (blobs the registry has are skipped, shared ones mounted)"
    )
    return lines


class PushState:
    """Upload sessions of chunked uploads, saved after every chunk so a killed push resumes.

    Kept outside the bundle (a bundle directory holds only signed files).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.sessions: dict[str, dict[str, Any]] = {}
        if path is not None and path.is_file():
            try:
                self.sessions = dict(json.loads(path.read_text(encoding="utf-8"))["uploads"])
            except (ValueError, KeyError, TypeError) as exc:
                raise BundleError(f"push state {path} is unreadable: {exc}") from exc

    def location(self, key: str) -> str | None:
        """The saved session URL for `repo@digest`, if any."""
        entry = self.sessions.get(key)
        return str(entry["location"]) if entry else None

    def save(self, key: str, location: str | None, offset: int = 0) -> None:
        """Record (or, with `location=None`, forget) a session and write the file atomically."""
        if location is None:
            self.sessions.pop(key, None)
        else:
            self.sessions[key] = {"location": location, "offset": offset}
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"uploads": self.sessions}, indent=1), encoding="utf-8")
        tmp.replace(self.path)


def _omitted_blobs(bundle: Path) -> dict[str, list[str]]:
    """Blobs a differential bundle leaves out -> site repositories known to hold them."""
    path = bundle / MANIFEST_NAME
    if not path.is_file():
        return {}
    manifest = BundleManifest.parse(path.read_bytes())
    if not manifest.differential:
        return {}
    return {
        str(entry["digest"]): [str(r) for r in entry.get("repositories", [])]
        for entry in manifest.differential.get("omittedBlobs", [])
    }


def _ensure_present(
    client: RegistryClient,
    host: str,
    repo: str,
    digest: str,
    sources: list[str],
    holder: dict[str, str],
) -> str:
    """A blob the differential bundle lacks must already be at the site: here or mountable."""
    if client.blob_exists(host, repo, digest):
        return "exists"
    candidates = [holder[digest]] if digest in holder else []
    candidates += [r for r in sources if r not in candidates and r != repo]
    for source in candidates:
        if client.mount_blob(host, repo, digest, source):
            return "mounted"
    raise BundleError(
        f"{host} lacks blob {digest} (needed in {repo}) and the differential bundle leaves it "
        "out: the site is not at the state the bundle was cut against; use a full bundle"
    )


# With a state file, uploads go in chunks of this size so that an interruption loses at
# most one chunk.
RESUMABLE_CHUNK = 64 * 1024 * 1024


def push_bundle(
    bundle: Path,
    registry: str,
    reporter: Reporter | None = None,
    chunk_size: int | None = None,
    state_file: Path | None = None,
    on_chunk: Callable[[str, int], None] | None = None,
) -> PushResult:
    """Push every image of `bundle` to `registry` (`host[:port]` or a URL).

    `on_chunk(digest, bytes_sent)` is called after each uploaded chunk (tests interrupt
    a push with it).
    """
    report = reporter or Reporter(quiet=True)
    layout = bundle / IMAGES_DIR
    plans = plan_push(bundle)
    host = registry.split("://", 1)[-1].rstrip("/")
    state = PushState(state_file)
    if state_file is not None and chunk_size is None:
        chunk_size = RESUMABLE_CHUNK
    result = PushResult(images=len(plans))
    holder: dict[str, str] = {}
    started = time.monotonic()
    omitted = _omitted_blobs(bundle)
    total = sum(
        size
        for digest, size in dict(b for p in plans for b in p.blobs).items()
        if digest not in omitted
    )
    done = 0
    with RegistryClient({host: endpoint_url(registry)}) as client:
        for plan in plans:
            repo = plan.target_repo
            for digest, size in plan.blobs:
                path = layout / "blobs/sha256" / digest_hex(digest)
                if digest in omitted and not path.exists():
                    status = _ensure_present(client, host, repo, digest, omitted[digest], holder)
                    holder.setdefault(digest, repo)
                    if status == "exists":
                        result.blobs_existing += 1
                    else:
                        result.blobs_mounted += 1
                    report.event("push.blob", "", repo=repo, digest=digest, outcome=status)
                    continue
                if path.stat().st_size != size:
                    raise DigestMismatchError(f"{BLOBS_DIR}/{path.name}: size differs; run verify")
                mount_from = holder.get(digest)
                first_time = mount_from is None
                key = f"{repo}@{digest}"

                def saved(location: str, offset: int, key: str = key) -> None:
                    state.save(key, location, offset)

                def progress(sent: int, digest: str = digest) -> None:
                    if on_chunk is not None:
                        on_chunk(digest, sent)

                outcome = client.upload_blob(
                    host,
                    repo,
                    digest,
                    path,
                    mount_from=mount_from if mount_from != repo else None,
                    chunk_size=chunk_size,
                    on_progress=progress,
                    resume_location=state.location(key),
                    on_session=saved,
                )
                state.save(key, None)
                holder.setdefault(digest, repo)
                if outcome.status == "exists":
                    result.blobs_existing += 1
                elif outcome.status == "mounted":
                    result.blobs_mounted += 1
                else:
                    result.blobs_uploaded += 1
                    result.bytes_uploaded += outcome.sent
                if outcome.resumed_from:
                    report.event(
                        "push.resumed",
                        f"resumed upload of {digest[:19]} at {human_size(outcome.resumed_from)}",
                        digest=digest,
                        offset=outcome.resumed_from,
                    )
                if first_time:
                    done += size
                report.event(
                    "push.blob",
                    "",
                    repo=repo,
                    digest=digest,
                    size=size,
                    outcome=outcome.status,
                    sent=outcome.sent,
                )
                report.progress("push", done, total)
            for item in plan.manifests:
                data = (layout / "blobs/sha256" / digest_hex(item.digest)).read_bytes()
                reference = item.tag or item.digest
                if item.tag is None and client.manifest_exists(host, repo, item.digest):
                    continue
                client.put_manifest(host, repo, reference, data, item.media_type)
                result.manifests_put += 1
            report.event(
                "push.image",
                f"pushed {plan.source} -> {host}/{repo}:{plan.tag}",
                source=plan.source,
                target=f"{host}/{repo}:{plan.tag}",
            )
    result.seconds = time.monotonic() - started
    report.event(
        "push.done",
        f"{result.images} images: {result.blobs_uploaded} blobs uploaded "
        f"({human_size(result.bytes_uploaded)}), {result.blobs_mounted} mounted, "
        f"{result.blobs_existing} already present, in {result.seconds:.1f}s",
        images=result.images,
        uploaded=result.blobs_uploaded,
        mounted=result.blobs_mounted,
        existing=result.blobs_existing,
        bytesUploaded=result.bytes_uploaded,
        seconds=round(result.seconds, 3),
    )
    return result
