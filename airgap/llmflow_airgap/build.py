"""`llmflow-airgap build`: turn a lockfile into a signed, self-checking bundle directory.

Every byte is fetched by digest and checked while it streams into `<bundle>/.partial/`;
only a verified file is renamed into place, so a file at its final path is always complete.
That makes the build resumable for free: run it again and finished blobs are skipped, a
half-downloaded blob continues with an HTTP Range request, and nothing ever lands in `/tmp`.
Images share one OCI image layout, so a layer used by twenty images is stored once; with
`--model-artifacts` every model is also described there as a CNCF ModelPack artifact whose
layer blobs are hard links to the model files (`modelartifact`), so it costs no second copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from llmflow_airgap.bundle import (
    BLOBS_DIR,
    CHARTS_DIR,
    CHECKSUMS_NAME,
    CONTAINERD_NAME_ANNOTATION,
    DISTRIBUTION_DIR,
    HELM_BINARY,
    IMAGES_DIR,
    LOCK_NAME,
    MANIFEST_NAME,
    MODELS_DIR,
    OCI_LAYOUT_VERSION,
    PARTIAL_DIR,
    REF_NAME_ANNOTATION,
    SBOM_NAME,
    SIGNATURE_NAME,
    WHEELS_DIR,
    BundleFile,
    BundleManifest,
    bundle_files,
    checksums_text,
)
from llmflow_airgap.difyplugin import load_plugin_private_key
from llmflow_airgap.difyplugin_bundle import DIFY_PLUGINS_DIR, INDEX_NAME, build_dify_plugins
from llmflow_airgap.digests import CHUNK_SIZE, digest_hex, sha256_bytes, sha256_file
from llmflow_airgap.errors import BundleError, DigestMismatchError
from llmflow_airgap.events import Reporter, human_size
from llmflow_airgap.images import parse_image
from llmflow_airgap.lockfile import LockedChart, Lockfile, dump_lockfile, load_lockfile
from llmflow_airgap.modelartifact import model_artifact
from llmflow_airgap.platform import load_platform
from llmflow_airgap.registry import INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, RegistryClient
from llmflow_airgap.sbom import ShippedModelArtifact, ShippedPlugin, build_sbom
from llmflow_airgap.signing import load_private_key, sign
from llmflow_airgap.sources import model_snapshot_dir, rewrite_url, stream_url
from llmflow_airgap.split import Part, split_bundle

ChunkHook = Callable[[str, int], None]


@dataclass(frozen=True)
class BuildRequest:
    """Inputs of `build`."""

    lockfile: Path
    output: Path
    signing_key: Path
    registry_mirrors: Mapping[str, str] = field(default_factory=dict)
    chart_mirrors: Mapping[str, str] = field(default_factory=dict)
    charts_dir: Path | None = None
    models_dir: Path | None = None
    wheelhouse: Path | None = None
    split_size: int | None = None
    parts_dir: Path | None = None
    # Ship the distribution files (platform.yaml, every values file, our manifests and
    # monitoring files) under distribution/, so `install` needs nothing but the bundle.
    platform_file: Path | None = None
    # A `helm` executable shipped as tools/helm for `install --helm-driver binary`.
    helm_binary: Path | None = None
    # Called after every chunk written (name, bytes so far); tests use it to interrupt a
    # build at a precise point.
    on_chunk: ChunkHook | None = None
    # Dify plugins the lockfile pins: source packages, per-plugin wheelhouses, and the RSA
    # key (PKCS#1 PEM) they are re-signed with (see `difyplugin_bundle`).
    dify_plugins_dir: Path | None = None
    dify_plugin_wheels: Path | None = None
    dify_plugin_key: Path | None = None
    # Also pack every model as a CNCF ModelPack OCI artifact in the image layout.
    model_artifacts: bool = False


@dataclass
class BuildResult:
    """What a build produced, for the report and for tests."""

    bundle: Path
    files: int = 0
    bundle_bytes: int = 0
    unique_blob_bytes: int = 0
    blobs: int = 0
    blobs_fetched: int = 0
    blobs_reused: int = 0
    bytes_fetched: int = 0
    resumed: list[str] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    # served model name -> its OCI artifact (`--model-artifacts`)
    model_artifacts: dict[str, ShippedModelArtifact] = field(default_factory=dict)
    # plugin id -> its re-signed package
    dify_plugins: dict[str, ShippedPlugin] = field(default_factory=dict)


@dataclass(frozen=True)
class _Blob:
    digest: str
    size: int
    host: str
    repo: str


class _Builder:
    def __init__(self, request: BuildRequest, lock: Lockfile, reporter: Reporter) -> None:
        self.request = request
        self.lock = lock
        self.report = reporter
        self.root = request.output
        self.partial = self.root / PARTIAL_DIR
        self.files: dict[str, BundleFile] = {}
        self.result = BuildResult(bundle=self.root)

    # ------------------------------------------------------------------ helpers

    def record(self, rel: str, digest: str, size: int) -> None:
        self.files[rel] = BundleFile(rel, digest, size)

    def write_small(self, rel: str, data: bytes) -> None:
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.partial / (rel.replace("/", "__") + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        self.record(rel, sha256_bytes(data), len(data))

    def _hook(self, name: str) -> Callable[[int], None] | None:
        hook = self.request.on_chunk
        if hook is None:
            return None

        def call(done: int) -> None:
            hook(name, done)

        return call

    def _stream_verified(self, rel: str, chunks: Iterator[bytes], digest: str, size: int) -> None:
        """Write a stream to `.partial`, check it, then move it to `rel`."""
        target = self.root / rel
        if target.is_file() and target.stat().st_size == size:
            self.record(rel, digest, size)
            return
        tmp = self.partial / (digest_hex(digest) + ".file")
        written = 0
        hasher = hashlib.sha256()
        hook = self._hook(rel)
        with tmp.open("wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                hasher.update(chunk)
                written += len(chunk)
                if hook is not None:
                    hook(written)
        actual = "sha256:" + hasher.hexdigest()
        if actual != digest or written != size:
            tmp.unlink(missing_ok=True)
            raise DigestMismatchError(
                f"{rel}: got {actual} ({written} bytes), lockfile says {digest} ({size} bytes)"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        self.record(rel, digest, size)

    # ------------------------------------------------------------------ images

    def _store_manifest(self, data: bytes, digest: str) -> None:
        rel = f"{BLOBS_DIR}/{digest_hex(digest)}"
        if not (self.root / rel).is_file():
            self.write_small(rel, data)
        self.record(rel, digest, len(data))

    def _walk_image(
        self, client: RegistryClient, host: str, repo: str, digest: str, blobs: dict[str, _Blob]
    ) -> None:
        manifest = client.get_manifest(host, repo, digest)
        self._store_manifest(manifest.data, digest)
        document = manifest.json()
        if manifest.media_type in INDEX_TYPES:
            for child in document.get("manifests", []):
                self._walk_image(client, host, repo, child["digest"], blobs)
            return
        if manifest.media_type not in MANIFEST_TYPES:
            raise BundleError(f"{host}/{repo}@{digest}: unsupported media type")
        for descriptor in [document.get("config", {}), *document.get("layers", [])]:
            blob_digest = descriptor.get("digest")
            if blob_digest and blob_digest not in blobs:
                blobs[blob_digest] = _Blob(blob_digest, int(descriptor["size"]), host, repo)

    def images(self, client: RegistryClient) -> list[dict[str, object]]:
        blobs: dict[str, _Blob] = {}
        index_entries: list[dict[str, object]] = []
        for image in self.lock.images:
            ref = parse_image(image.reference)
            self._walk_image(client, ref.host, ref.path, image.digest, blobs)
            name = f"{image.repository}:{image.tag}"
            index_entries.append(
                {
                    "mediaType": image.media_type,
                    "digest": image.digest,
                    "size": image.size,
                    "annotations": {REF_NAME_ANNOTATION: name, CONTAINERD_NAME_ANNOTATION: name},
                }
            )
        total = sum(b.size for b in blobs.values())
        self.report.event(
            "images.planned",
            f"{len(self.lock.images)} images, {len(blobs)} unique blobs, {human_size(total)}",
            images=len(self.lock.images),
            blobs=len(blobs),
            bytes=total,
        )
        done = 0
        for blob in sorted(blobs.values(), key=lambda b: b.digest):
            rel = f"{BLOBS_DIR}/{digest_hex(blob.digest)}"
            target = self.root / rel
            if target.is_file() and target.stat().st_size == blob.size:
                self.result.blobs_reused += 1
            else:
                base = done
                hook = self._hook(blob.digest)

                def progress(
                    now: int, base: int = base, hook: Callable[[int], None] | None = hook
                ) -> None:
                    self.report.progress("images", base + now, total)
                    if hook is not None:
                        hook(now)

                outcome = client.download_blob(
                    blob.host,
                    blob.repo,
                    blob.digest,
                    blob.size,
                    target,
                    self.partial / digest_hex(blob.digest),
                    on_progress=progress,
                )
                self.result.blobs_fetched += 1
                self.result.bytes_fetched += outcome.fetched
                if outcome.resumed_from:
                    self.result.resumed.append(blob.digest)
                    self.report.event(
                        "blob.resumed",
                        f"resumed {blob.digest[:19]} at {human_size(outcome.resumed_from)}",
                        digest=blob.digest,
                        offset=outcome.resumed_from,
                    )
            done += blob.size
            self.report.progress("images", done, total)
            self.report.event("blob.stored", "", digest=blob.digest, size=blob.size)
            self.record(rel, blob.digest, blob.size)
        return index_entries

    def count_blobs(self) -> None:
        """Blob statistics of the layout (images and model artifacts)."""
        blob_files = [f for rel, f in self.files.items() if rel.startswith(BLOBS_DIR)]
        self.result.blobs = len(blob_files)
        self.result.unique_blob_bytes = sum(f.size for f in blob_files)

    def write_layout(self, entries: list[dict[str, object]]) -> None:
        self.write_small(
            f"{IMAGES_DIR}/oci-layout",
            json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}).encode(),
        )
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        self.write_small(f"{IMAGES_DIR}/index.json", json.dumps(index, indent=1).encode())

    # ------------------------------------------------------------------ files

    def chart(self, client: RegistryClient, http: httpx.Client, chart: LockedChart) -> None:
        rel = f"{CHARTS_DIR}/{chart.name}-{chart.version}.tgz"
        if chart.source == "oci":
            target = self.root / rel
            if not (target.is_file() and target.stat().st_size == chart.size):
                ref = chart.url.removeprefix("oci://")
                host, _, rest = ref.partition("/")
                repo = rest.rsplit(":", 1)[0]
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_blob(
                    host,
                    repo,
                    chart.digest,
                    chart.size,
                    target,
                    self.partial / digest_hex(chart.digest),
                )
            self.record(rel, chart.digest, chart.size)
        elif chart.source == "file":
            if self.request.charts_dir is None:
                raise BundleError(f"chart {chart.url} comes from a local file: pass --charts-dir")
            self._stream_verified(
                rel, _read_chunks(self.request.charts_dir / chart.url), chart.digest, chart.size
            )
        else:
            url = rewrite_url(chart.url, self.request.chart_mirrors)
            self._stream_verified(rel, stream_url(http, url), chart.digest, chart.size)
        self.report.event("chart.stored", f"chart {rel}", path=rel, digest=chart.digest)

    def models(self) -> None:
        for model in self.lock.models:
            if self.request.models_dir is None:
                raise BundleError(f"model {model.huggingface_repo}: pass --models-dir")
            snapshot = model_snapshot_dir(
                self.request.models_dir, model.huggingface_repo, model.revision
            )
            for item in model.files:
                rel = f"{MODELS_DIR}/{model.name}/{item.path}"
                self._stream_verified(
                    rel, _read_chunks(snapshot / item.path), item.sha256, item.size
                )
            self.report.event(
                "model.stored",
                f"model {model.name}: {len(model.files)} files, {human_size(model.size)}",
                model=model.name,
                files=len(model.files),
            )

    def link_blob(self, source_rel: str, digest: str, size: int) -> None:
        """`images/blobs/sha256/<hex>` as a hard link to a bundle file with that content.

        Falls back to a verified copy where the filesystem has no hard links.
        """
        rel = f"{BLOBS_DIR}/{digest_hex(digest)}"
        target = self.root / rel
        if target.is_file() and target.stat().st_size == size:
            self.record(rel, digest, size)
            return
        tmp = self.partial / (digest_hex(digest) + ".link")
        tmp.unlink(missing_ok=True)
        try:
            os.link(self.root / source_rel, tmp)
        except OSError:
            self._stream_verified(rel, _read_chunks(self.root / source_rel), digest, size)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        self.record(rel, digest, size)

    def model_artifacts(self) -> list[dict[str, object]]:
        """Every model as a ModelPack artifact: config and manifest blobs, layer blobs linked
        to the files `models()` stored; the index entries for `index.json`."""
        entries: list[dict[str, object]] = []
        for model in self.lock.models:
            artifact = model_artifact(model)
            for layer in artifact.layers:
                self.link_blob(f"{MODELS_DIR}/{model.name}/{layer.path}", layer.digest, layer.size)
            self._store_manifest(artifact.config, sha256_bytes(artifact.config))
            self._store_manifest(artifact.manifest, artifact.digest)
            entries.append(artifact.index_entry(REF_NAME_ANNOTATION))
            self.result.model_artifacts[model.name] = ShippedModelArtifact(
                artifact.reference, artifact.digest, len(artifact.manifest)
            )
            self.report.event(
                "model.artifact",
                f"model {model.name}: OCI artifact {artifact.reference}@{artifact.digest[:19]} "
                f"({len(artifact.layers)} layers, linked to models/{model.name}/)",
                model=model.name,
                reference=artifact.reference,
                digest=artifact.digest,
            )
        return entries

    def wheels(self) -> None:
        for wheel in self.lock.wheels:
            if self.request.wheelhouse is None:
                raise BundleError(f"wheel {wheel.filename}: pass --wheelhouse")
            rel = f"{WHEELS_DIR}/{wheel.filename}"
            self._stream_verified(
                rel,
                _read_chunks(self.request.wheelhouse / wheel.filename),
                wheel.sha256,
                wheel.size,
            )
        if self.lock.wheels:
            self.report.event(
                "wheels.stored", f"{len(self.lock.wheels)} wheels", count=len(self.lock.wheels)
            )

    def dify_plugins(self, http: httpx.Client) -> None:
        """Repackaged, re-signed Dify plugins with our public key and their index."""

        def event(name: str, message: str) -> None:
            self.report.event(name, message)

        files = build_dify_plugins(
            self.lock.dify_plugins,
            plugins_dir=self.request.dify_plugins_dir,
            wheels_root=self.request.dify_plugin_wheels,
            key_path=self.request.dify_plugin_key,
            http=http,
            event=event,
        )
        for rel, data in files:
            self.write_small(rel, data)
            if rel == INDEX_NAME:
                for entry in json.loads(data)["plugins"]:
                    self.result.dify_plugins[str(entry["id"])] = ShippedPlugin(
                        file=f"{DIFY_PLUGINS_DIR}/{entry['file']}",
                        sha256=str(entry["sha256"]),
                        size=int(entry["size"]),
                        unique_identifier=str(entry["uniqueIdentifier"]),
                    )

    def copy_in(self, rel: str, source: Path, mode: int | None = None) -> None:
        """Copy a local file into the bundle, hashing while it streams."""
        tmp = self.partial / (rel.replace("/", "__") + ".copy")
        hasher = hashlib.sha256()
        size = 0
        with tmp.open("wb") as handle:
            for chunk in _read_chunks(source):
                handle.write(chunk)
                hasher.update(chunk)
                size += len(chunk)
        if mode is not None:
            tmp.chmod(mode)
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        self.record(rel, "sha256:" + hasher.hexdigest(), size)

    def distribution(self, platform_file: Path) -> None:
        """platform.yaml and every file it points to, under `distribution/`."""
        platform = load_platform(platform_file)
        root = platform_file.resolve().parent.parent
        wanted = {platform_file.resolve().relative_to(root).as_posix()}
        for component in platform.components:
            wanted.update(component.values.all_files())
        for manifest_set in platform.manifests:
            wanted.update(p.relative_to(root).as_posix() for p in root.glob(manifest_set.path))
        monitoring = platform.monitoring
        wanted.update([*monitoring.rule_files, *monitoring.rule_tests, *monitoring.dashboards])
        for rel in sorted(wanted):
            source = root / rel
            if not source.is_file():
                raise BundleError(f"{rel} (named by {platform_file}) is missing under {root}")
            self.copy_in(f"{DISTRIBUTION_DIR}/{rel}", source)
        self.report.event(
            "distribution.stored",
            f"{len(wanted)} distribution files under {DISTRIBUTION_DIR}/",
            files=len(wanted),
        )

    # ------------------------------------------------------------------ finish

    def remove_stale(self) -> None:
        """Delete files a previous build of another lockfile left behind."""
        keep = set(self.files) | {MANIFEST_NAME, SIGNATURE_NAME, CHECKSUMS_NAME}
        for rel in bundle_files(self.root):
            if rel.startswith(PARTIAL_DIR + "/") or rel in keep:
                continue
            (self.root / rel).unlink()
            self.report.event("file.removed", f"removed stale {rel}", path=rel)

    def seal(self, lock_digest: str) -> None:
        files = sorted(self.files.values(), key=lambda f: f.path)
        manifest = BundleManifest(
            platform={"name": self.lock.platform.name, "version": self.lock.platform.version},
            lock_sha256=lock_digest,
            images=[{"reference": i.reference, "digest": i.digest} for i in self.lock.images],
            files=files,
        )
        data = manifest.to_bytes()
        signature = sign(load_private_key(self.request.signing_key), data)
        self.write_small(MANIFEST_NAME, data)
        self.write_small(SIGNATURE_NAME, signature)
        listed = [*files, self.files[MANIFEST_NAME], self.files[SIGNATURE_NAME]]
        text = checksums_text(sorted(listed, key=lambda f: f.path))
        tmp = self.partial / "checksums.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.root / CHECKSUMS_NAME)


def _read_chunks(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK_SIZE):
                yield chunk
    except FileNotFoundError as exc:
        raise BundleError(f"{path} is missing (the lockfile lists it)") from exc


def _disk_bytes(root: Path, rels: list[str]) -> int:
    """Bytes the files take, each hard-linked file counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for rel in rels:
        stat = (root / rel).stat()
        if (stat.st_dev, stat.st_ino) not in seen:
            seen.add((stat.st_dev, stat.st_ino))
            total += stat.st_size
    return total


def _check_output(output: Path) -> None:
    if not output.exists():
        return
    if not output.is_dir():
        raise BundleError(f"{output} exists and is not a directory")
    ours = (output / PARTIAL_DIR).is_dir() or (output / MANIFEST_NAME).is_file()
    if any(output.iterdir()) and not ours:
        raise BundleError(f"{output} is not empty and holds no bundle: refusing to write into it")


def build_bundle(request: BuildRequest, reporter: Reporter | None = None) -> BuildResult:
    """Build (or resume building) the bundle `request.output` from a lockfile."""
    report = reporter or Reporter(quiet=True)
    lock = load_lockfile(request.lockfile)
    load_private_key(request.signing_key)  # fail before downloading gigabytes
    if lock.dify_plugins:
        if request.dify_plugin_key is None:
            raise BundleError("the lockfile pins Dify plugins: pass --dify-plugin-key")
        load_plugin_private_key(request.dify_plugin_key)
    _check_output(request.output)
    builder = _Builder(request, lock, report)
    builder.partial.mkdir(parents=True, exist_ok=True)
    # Drop the old signature first: a half-updated bundle must not look signed.
    for name in (MANIFEST_NAME, SIGNATURE_NAME, CHECKSUMS_NAME):
        (request.output / name).unlink(missing_ok=True)
    with (
        RegistryClient(request.registry_mirrors) as client,
        httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True) as http,
    ):
        entries = builder.images(client)
        for chart in lock.charts:
            builder.chart(client, http, chart)
    builder.models()
    if request.model_artifacts:
        entries += builder.model_artifacts()
    builder.write_layout(entries)
    builder.count_blobs()
    builder.wheels()
    if lock.dify_plugins:
        with httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True) as http:
            builder.dify_plugins(http)
    if request.platform_file is not None:
        builder.distribution(request.platform_file)
    if request.helm_binary is not None:
        builder.copy_in(HELM_BINARY, request.helm_binary, mode=0o755)
    lock_copy = builder.partial / LOCK_NAME
    dump_lockfile(lock, lock_copy)
    lock_digest, lock_size = sha256_file(lock_copy)
    os.replace(lock_copy, request.output / LOCK_NAME)
    builder.record(LOCK_NAME, lock_digest, lock_size)
    tools = {HELM_BINARY: builder.files[HELM_BINARY].sha256} if request.helm_binary else {}
    document = build_sbom(
        lock, lock_digest, builder.result.dify_plugins, builder.result.model_artifacts, tools
    )
    sbom = json.dumps(document, indent=1).encode()
    builder.write_small(SBOM_NAME, sbom)
    builder.remove_stale()
    builder.seal(lock_digest)
    shutil.rmtree(builder.partial)
    result = builder.result
    result.files = len(builder.files)
    result.bundle_bytes = _disk_bytes(request.output, [*builder.files, CHECKSUMS_NAME])
    report.event(
        "build.done",
        f"bundle {request.output}: {result.files} files, {human_size(result.bundle_bytes)} "
        f"({result.blobs_fetched} blobs fetched, {result.blobs_reused} reused)",
        bundle=str(request.output),
        files=result.files,
        bytes=result.bundle_bytes,
        uniqueBlobBytes=result.unique_blob_bytes,
        blobsFetched=result.blobs_fetched,
        blobsReused=result.blobs_reused,
    )
    if request.split_size:
        parts_dir = request.parts_dir or request.output.parent
        result.parts = split_bundle(request.output, parts_dir, request.split_size)
        report.event(
            "split.done",
            f"{len(result.parts)} parts in {parts_dir}",
            parts=[{"path": str(p.path), "sha256": p.sha256, "size": p.size} for p in result.parts],
        )
    return result
