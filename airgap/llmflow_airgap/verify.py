"""`llmflow-airgap verify`: refuse any bundle that is not exactly what was signed.

Order matters: the signature is checked first (a manifest nobody signed vouches for
nothing), then the file set is compared both ways (missing *and* extra files — an extra file
is how a payload rides along with a genuine bundle), then every file is re-hashed, every
image blob is checked against the digest it is named by, `checksums.txt` must agree with the
signed manifest, and every descriptor the OCI layout references must be present.
"""

from __future__ import annotations

import json
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
    BundleManifest,
    bundle_files,
)
from llmflow_airgap.difyplugin_bundle import check_bundle_plugins
from llmflow_airgap.digests import sha256_file
from llmflow_airgap.errors import BundleError
from llmflow_airgap.events import Reporter
from llmflow_airgap.modelartifact import ARTIFACT_TYPE, check_model_artifact
from llmflow_airgap.registry import INDEX_TYPES
from llmflow_airgap.signing import load_public_key, signature_valid


@dataclass(frozen=True, order=True)
class Problem:
    """One reason to refuse the bundle, naming the file."""

    file: str
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class VerifyReport:
    """Outcome of `verify`."""

    problems: list[Problem] = field(default_factory=list)
    files_checked: int = 0
    bytes_checked: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


def verify_bundle(bundle: Path, public_key: Path, reporter: Reporter | None = None) -> VerifyReport:
    """Check `bundle` against its signed manifest; every problem is reported, none fixed."""
    report = reporter or Reporter(quiet=True)
    result = VerifyReport()

    def refuse(file: str, kind: str, message: str) -> None:
        problem = Problem(file, kind, message)
        result.problems.append(problem)
        report.event("verify.problem", f"REFUSED {problem}", file=file, kind=kind, detail=message)

    if not bundle.is_dir():
        raise BundleError(f"{bundle} is not a bundle directory")
    key = load_public_key(public_key)
    manifest_path = bundle / MANIFEST_NAME
    signature_path = bundle / SIGNATURE_NAME
    if not manifest_path.is_file():
        refuse(MANIFEST_NAME, "missing", "missing: the bundle has no signed manifest")
        return result
    if not signature_path.is_file():
        refuse(SIGNATURE_NAME, "missing", "missing: the manifest is not signed")
        return result
    data = manifest_path.read_bytes()
    if not signature_valid(key, data, signature_path.read_bytes()):
        refuse(
            SIGNATURE_NAME,
            "bad-signature",
            f"does not verify {MANIFEST_NAME} with public key {public_key}: the manifest was "
            "changed, the signature is damaged, or the bundle was signed with another key",
        )
        return result
    report.event("verify.signature", f"signature OK ({public_key})", key=str(public_key))
    manifest = BundleManifest.parse(data)
    listed = {f.path: f for f in manifest.files}
    present = set(bundle_files(bundle))
    expected = set(listed) | CONTROL_FILES
    for rel in sorted(expected - present):
        refuse(rel, "missing", "missing: the signed manifest lists it")
    for rel in sorted(present - expected):
        refuse(rel, "extra", "extra file: not in the signed manifest")
    total = sum(f.size for f in manifest.files if f.path in present)
    done = 0
    for entry in sorted(manifest.files, key=lambda f: f.path):
        path = bundle / entry.path
        if entry.path not in present:
            continue
        if path.is_symlink():
            refuse(entry.path, "changed", "is a symbolic link, not the file that was signed")
            continue
        digest, size = sha256_file(path)
        done += size
        result.files_checked += 1
        report.progress("verify", done, total)
        if entry.path.startswith(BLOBS_DIR + "/"):
            # A blob's name is its digest: check that too, not only the manifest's record.
            named = "sha256:" + entry.path.rsplit("/", 1)[-1]
            if digest != named:
                refuse(entry.path, "bad-blob", f"blob content hashes to {digest}, not its name")
                continue
        if digest != entry.sha256 or size != entry.size:
            refuse(
                entry.path,
                "changed",
                f"changed: sha256 {digest} ({size} bytes), signed {entry.sha256} "
                f"({entry.size} bytes)",
            )
    result.bytes_checked = done
    _check_checksums(bundle, manifest, refuse)
    omitted = manifest.omitted_blobs()
    if manifest.differential is not None:
        report.event(
            "verify.differential",
            f"differential bundle: {len(omitted)} image blob(s) left out, expected at the site "
            f"(cut against {manifest.differential.get('base', '?')})",
            omitted=len(omitted),
        )
    _check_layout(bundle, listed, refuse, omitted)
    plugins = check_bundle_plugins(bundle, set(listed) & present, refuse)
    if plugins:
        report.event("verify.dify-plugins", f"{plugins} Dify plugin signature(s) checked")
    report.event(
        "verify.done",
        "bundle OK" if result.ok else f"bundle REFUSED: {len(result.problems)} problem(s)",
        ok=result.ok,
        files=result.files_checked,
        bytes=result.bytes_checked,
        problems=len(result.problems),
    )
    return result


def _check_checksums(bundle: Path, manifest: BundleManifest, refuse: Any) -> None:
    path = bundle / CHECKSUMS_NAME
    if not path.is_file():
        return
    recorded: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        hex_digest, sep, rel = line.partition("  ")
        if not sep:
            refuse(CHECKSUMS_NAME, "changed", f"line {number} is not `<sha256>  <path>`")
            continue
        recorded[rel] = "sha256:" + hex_digest
    wanted = {f.path: f.sha256 for f in manifest.files}
    wanted[MANIFEST_NAME] = sha256_file(bundle / MANIFEST_NAME)[0]
    wanted[SIGNATURE_NAME] = sha256_file(bundle / SIGNATURE_NAME)[0]
    if recorded != wanted:
        differing = sorted(set(recorded.items()) ^ set(wanted.items()))
        first = differing[0][0] if differing else "?"
        refuse(
            CHECKSUMS_NAME,
            "changed",
            f"disagrees with the signed manifest ({len(differing)} entries, first {first})",
        )


def _check_layout(
    bundle: Path, listed: dict[str, Any], refuse: Any, omitted: dict[str, int] | None = None
) -> None:
    index_path = bundle / IMAGES_DIR / "index.json"
    if not index_path.is_file():
        return
    try:
        index = json.loads(index_path.read_bytes())
    except ValueError as exc:
        refuse(f"{IMAGES_DIR}/index.json", "changed", f"is not JSON: {exc}")
        return
    pending: list[dict[str, Any]] = list(index.get("manifests", []))
    blobs = bundle / BLOBS_DIR
    for entry in pending:
        # Model artifacts are checked as ModelPack artifacts once their blobs are known to
        # be there (a missing blob is reported by the walk below).
        digest = str(entry.get("digest", "")).removeprefix("sha256:")
        if entry.get("artifactType") == ARTIFACT_TYPE and (blobs / digest).is_file():
            check_model_artifact(blobs, entry, refuse)
    seen: set[str] = set()
    while pending:
        descriptor = pending.pop()
        digest = str(descriptor.get("digest", ""))
        if digest in seen:
            continue
        seen.add(digest)
        rel = f"{BLOBS_DIR}/{digest.removeprefix('sha256:')}"
        blob = bundle / rel
        if omitted and digest in omitted:
            # Left out on purpose by `diff`; the signed manifest says so, with its size.
            if omitted[digest] != int(descriptor.get("size", -1)):
                refuse(rel, "bad-blob", "size differs from the signed list of omitted blobs")
            continue
        if rel not in listed or not blob.is_file():
            refuse(rel, "missing", f"referenced by the image layout ({digest}) but absent")
            continue
        if blob.stat().st_size != int(descriptor.get("size", -1)):
            refuse(rel, "bad-blob", "size differs from the descriptor that references it")
            continue
        media_type = str(descriptor.get("mediaType", ""))
        if "manifest" in media_type or media_type in INDEX_TYPES:
            try:
                document = json.loads(blob.read_bytes())
            except ValueError:
                refuse(rel, "bad-blob", f"{media_type} blob is not JSON")
                continue
            pending.extend(document.get("manifests", []))
            if document.get("config"):
                pending.append(document["config"])
            pending.extend(document.get("layers", []))


def verify_parts(listing: Path, reporter: Reporter | None = None) -> VerifyReport:
    """Check split parts against their `<name>.tar.sha256sums` before anyone unpacks them.

    The listing is not signed (the manifest inside the tar is), so this catches transport
    damage — a truncated, missing or swapped part — early; `verify` on the unpacked bundle
    remains the authority.
    """
    report = reporter or Reporter(quiet=True)
    result = VerifyReport()
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BundleError(f"cannot read {listing}: {exc}") from exc
    for line in lines:
        hex_digest, sep, name = line.partition("  ")
        part = listing.parent / name
        if not sep or "/" in name:
            problem = Problem(listing.name, "changed", f"malformed line {line!r}")
        elif not part.is_file():
            problem = Problem(name, "missing", "missing part")
        else:
            digest, size = sha256_file(part)
            result.files_checked += 1
            result.bytes_checked += size
            if digest == "sha256:" + hex_digest:
                continue
            problem = Problem(name, "changed", f"part hashes to {digest} ({size} bytes): damaged")
        result.problems.append(problem)
        report.event("verify.problem", f"REFUSED {problem}", file=problem.file, kind=problem.kind)
    report.event(
        "verify.done",
        "parts OK" if result.ok else f"parts REFUSED: {len(result.problems)} problem(s)",
        ok=result.ok,
        files=result.files_checked,
        problems=len(result.problems),
    )
    return result
