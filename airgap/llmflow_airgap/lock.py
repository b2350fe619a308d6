"""`llmflow-airgap lock`: resolve `platform.yaml` into a lockfile.

Images: the tag's manifest is fetched with every manifest media type in `Accept`, so a
multi-platform tag yields its index digest plus one digest per platform; a single-platform
tag yields its manifest digest and the platform read from its config. Charts, model
snapshots and wheels are hashed by streaming them (see `sources`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from llmflow_airgap.difyplugin_bundle import lock_dify_plugin
from llmflow_airgap.digests import sha256_file
from llmflow_airgap.errors import LockfileError
from llmflow_airgap.events import Reporter
from llmflow_airgap.images import parse_image
from llmflow_airgap.lockfile import (
    LOCK_API_VERSION,
    LOCK_KIND,
    LockedChart,
    LockedDifyPlugin,
    LockedFile,
    LockedImage,
    LockedModel,
    LockedWheel,
    Lockfile,
    LockSource,
    PlatformManifest,
)
from llmflow_airgap.platform import Chart, Platform, Profile, load_platform
from llmflow_airgap.registry import Manifest, RegistryClient
from llmflow_airgap.sources import (
    HELM_CHART_LAYER,
    find_in_helm_index,
    model_files,
    model_snapshot_dir,
    rewrite_url,
    sha256_stream,
    stream_url,
    wheel_name_version,
)

_IMAGE_CONFIG_TYPES = frozenset(
    {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
)


@dataclass(frozen=True)
class LockRequest:
    """Inputs of `lock`: the platform file and where to find content offline."""

    platform_file: Path
    registry_mirrors: Mapping[str, str] = field(default_factory=dict)
    chart_mirrors: Mapping[str, str] = field(default_factory=dict)
    charts_dir: Path | None = None
    models_dir: Path | None = None
    wheelhouse: Path | None = None
    profile: Profile | None = None
    skip_models: bool = False
    # Dify plugins: source packages (file names of platform.yaml's `source`), the root of the
    # per-plugin wheelhouses, and whether to fill them with `pip download` first.
    dify_plugins_dir: Path | None = None
    dify_plugin_wheels: Path | None = None
    download_plugin_wheels: bool = False
    pip_command: tuple[str, ...] = ()
    # Keys (RSA PUBLIC KEY PEM, e.g. the daemon's official pkg/license/public_key) the source
    # packages' own signatures must verify with; none: the platform.yaml sha256 is the anchor
    # (a plugin with neither is refused).
    dify_plugin_source_keys: tuple[Path, ...] = ()
    # `https://marketplace.dify.ai=http://mirror/...`: where plugin downloads really go; the
    # lockfile keeps the canonical URL.
    dify_plugin_mirrors: Mapping[str, str] = field(default_factory=dict)


def platform_string(entry: Mapping[str, object]) -> str:
    """`os/arch[/variant]` of an index entry's or config's platform fields."""
    parts = [str(entry.get("os", "unknown")), str(entry.get("architecture", "unknown"))]
    if entry.get("variant"):
        parts.append(str(entry["variant"]))
    return "/".join(parts)


def resolve_image(client: RegistryClient, reference: str, components: list[str]) -> LockedImage:
    """Resolve one `host/path:tag` to its index (or manifest) and per-platform digests."""
    ref = parse_image(reference)
    if ref.tag is None:
        raise LockfileError(f"image {reference} has no tag to resolve")
    top = client.get_manifest(ref.host, ref.path, ref.digest or ref.tag)
    platforms: list[PlatformManifest] = []
    if top.is_index:
        for entry in top.json().get("manifests", []):
            platforms.append(
                PlatformManifest(
                    platform=platform_string(entry.get("platform") or {}),
                    digest=entry["digest"],
                    mediaType=entry.get("mediaType", ""),
                    size=int(entry.get("size", 0)),
                )
            )
    else:
        platforms.append(_single_platform(client, ref.host, ref.path, top))
    return LockedImage(
        reference=reference,
        repository=ref.name,
        tag=ref.tag,
        digest=top.digest,
        mediaType=top.media_type,
        size=len(top.data),
        platforms=platforms,
        components=components,
    )


def _single_platform(
    client: RegistryClient, host: str, repo: str, top: Manifest
) -> PlatformManifest:
    config = top.json().get("config", {})
    name = "unknown/unknown"
    if config.get("mediaType") in _IMAGE_CONFIG_TYPES:
        name = platform_string(json.loads(client.fetch_small_blob(host, repo, config["digest"])))
    return PlatformManifest(
        platform=name, digest=top.digest, mediaType=top.media_type, size=len(top.data)
    )


def resolve_chart(
    client: RegistryClient,
    http: httpx.Client,
    component: str,
    chart: Chart,
    request: LockRequest,
) -> LockedChart:
    """Pin one chart version to the sha256 of its archive."""
    if chart.repository.startswith("oci://"):
        location = chart.repository.removeprefix("oci://").rstrip("/")
        host, _, path = location.partition("/")
        repo = f"{path}/{chart.name}" if path else chart.name
        # OCI tags cannot hold `+`; Helm pushes semver build metadata with `_`.
        tag = chart.version.replace("+", "_")
        manifest = client.get_manifest(host, repo, tag)
        layers = [
            layer
            for layer in manifest.json().get("layers", [])
            if layer.get("mediaType") == HELM_CHART_LAYER
        ]
        if len(layers) != 1:
            raise LockfileError(f"oci://{host}/{repo}:{tag} is not a Helm chart artifact")
        return LockedChart(
            component=component,
            name=chart.name,
            version=chart.version,
            repository=chart.repository,
            source="oci",
            url=f"oci://{host}/{repo}:{tag}",
            digest=layers[0]["digest"],
            size=int(layers[0]["size"]),
            manifestDigest=manifest.digest,
        )
    archive = f"{chart.name}-{chart.version}.tgz"
    if request.charts_dir is not None and (request.charts_dir / archive).is_file():
        digest, size = sha256_file(request.charts_dir / archive)
        return LockedChart(
            component=component,
            name=chart.name,
            version=chart.version,
            repository=chart.repository,
            source="file",
            url=archive,
            digest=digest,
            size=size,
        )
    index_url = rewrite_url(f"{chart.repository.rstrip('/')}/index.yaml", request.chart_mirrors)
    index_text = b"".join(stream_url(http, index_url))
    found = find_in_helm_index(
        yaml.safe_load(index_text), chart.repository, chart.name, chart.version
    )
    digest, size = sha256_stream(stream_url(http, rewrite_url(found.url, request.chart_mirrors)))
    if found.index_digest and found.index_digest != digest:
        raise LockfileError(
            f"chart {archive} hashes to {digest} but the repository index says {found.index_digest}"
        )
    return LockedChart(
        component=component,
        name=chart.name,
        version=chart.version,
        repository=chart.repository,
        source="https",
        url=found.url,
        digest=digest,
        size=size,
    )


def lock_model(
    models_dir: Path, name: str, component: str, repo: str, revision: str
) -> LockedModel:
    """Hash every file of a downloaded snapshot at the revision platform.yaml pins."""
    snapshot = model_snapshot_dir(models_dir, repo, revision)
    files = []
    for rel in model_files(snapshot):
        digest, size = sha256_file(snapshot / rel)
        files.append(LockedFile(path=rel.as_posix(), sha256=digest, size=size))
    if not files:
        raise LockfileError(f"model {repo}@{revision}: snapshot {snapshot} is empty")
    return LockedModel(
        name=name, component=component, huggingfaceRepo=repo, revision=revision, files=files
    )


def lock_wheels(wheelhouse: Path) -> list[LockedWheel]:
    """Every wheel and sdist of a wheelhouse, hashed."""
    wheels = []
    for path in sorted(wheelhouse.iterdir()):
        parsed = wheel_name_version(path.name) if path.is_file() else None
        if parsed is None:
            continue
        digest, size = sha256_file(path)
        wheels.append(
            LockedWheel(
                filename=path.name, name=parsed[0], version=parsed[1], sha256=digest, size=size
            )
        )
    if not wheels:
        raise LockfileError(f"wheelhouse {wheelhouse} holds no .whl or sdist files")
    return wheels


def create_lock(request: LockRequest, reporter: Reporter | None = None) -> Lockfile:
    """Resolve everything `platform.yaml` names (for one profile, or all) into a lockfile."""
    report = reporter or Reporter(quiet=True)
    platform: Platform = load_platform(request.platform_file)
    platform_digest, _ = sha256_file(request.platform_file)
    components = [
        c for c in platform.components if request.profile is None or request.profile in c.profiles
    ]
    users: dict[str, list[str]] = {}
    for comp in components:
        for image in comp.images:
            users.setdefault(image, []).append(comp.name)
    images: list[LockedImage] = []
    charts: list[LockedChart] = []
    models: list[LockedModel] = []
    with (
        RegistryClient(request.registry_mirrors) as client,
        httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True) as http,
    ):
        for number, (reference, names) in enumerate(sorted(users.items()), start=1):
            locked = resolve_image(client, reference, names)
            images.append(locked)
            report.event(
                "image.resolved",
                f"[{number}/{len(users)}] {reference} -> {locked.digest} "
                f"({len(locked.platforms)} platform(s))",
                reference=reference,
                digest=locked.digest,
                platforms=[p.platform for p in locked.platforms],
            )
        for comp in components:
            locked_chart = resolve_chart(client, http, comp.name, comp.chart, request)
            charts.append(locked_chart)
            report.event(
                "chart.resolved",
                f"chart {comp.chart.name} {comp.chart.version} -> {locked_chart.digest}",
                chart=comp.chart.name,
                version=comp.chart.version,
                digest=locked_chart.digest,
            )
    if not request.skip_models:
        for comp in components:
            for model in comp.models:
                if request.profile is not None and request.profile not in model.profiles:
                    continue
                if request.models_dir is None:
                    raise LockfileError(
                        f"component {comp.name} serves {model.huggingface_repo}: pass "
                        "--models-dir with its downloaded snapshot (or --skip-models)"
                    )
                locked_model = lock_model(
                    request.models_dir,
                    model.name,
                    comp.name,
                    model.huggingface_repo,
                    model.revision,
                )
                models.append(locked_model)
                report.event(
                    "model.locked",
                    f"model {model.huggingface_repo}@{model.revision[:12]}: "
                    f"{len(locked_model.files)} files",
                    model=model.name,
                    revision=model.revision,
                    files=len(locked_model.files),
                )
    wheels = lock_wheels(request.wheelhouse) if request.wheelhouse is not None else []
    dify_plugins = _lock_dify_plugins(platform, request, report)
    return Lockfile(
        apiVersion=LOCK_API_VERSION,
        kind=LOCK_KIND,
        platform=LockSource(
            name=platform.metadata.name, version=platform.metadata.version, sha256=platform_digest
        ),
        images=images,
        charts=charts,
        models=models,
        wheels=wheels,
        difyPlugins=dify_plugins,
    )


def _lock_dify_plugins(
    platform: Platform, request: LockRequest, report: Reporter
) -> list[LockedDifyPlugin]:
    if not platform.dify_plugins:
        return []
    download = request.download_plugin_wheels
    pip = (request.pip_command or default_pip_command()) if download else ()
    locked: list[LockedDifyPlugin] = []
    with httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True) as http:
        for plugin in platform.dify_plugins:
            entry = lock_dify_plugin(
                plugin,
                plugins_dir=request.dify_plugins_dir,
                wheels_root=request.dify_plugin_wheels,
                download=request.download_plugin_wheels,
                pip_command=pip,
                http=http,
                source_keys=request.dify_plugin_source_keys,
                mirrors=request.dify_plugin_mirrors,
            )
            locked.append(entry)
            report.event(
                "dify-plugin.locked",
                f"dify plugin {entry.id}:{entry.version} -> {entry.sha256} "
                f"({len(entry.wheels)} wheels"
                + (f", signed by {entry.source_signer}" if entry.source_signer else "")
                + ")",
                plugin=entry.id,
                version=entry.version,
                sha256=entry.sha256,
                size=entry.size,
                signer=entry.source_signer,
                wheels=len(entry.wheels),
            )
    return locked


def default_pip_command() -> tuple[str, ...]:
    """This interpreter's pip when it has one, else a `pip3`/`pip` on PATH (for `download`)."""
    import importlib.util
    import shutil
    import sys

    if importlib.util.find_spec("pip") is not None:
        return (sys.executable, "-m", "pip")
    found = shutil.which("pip3") or shutil.which("pip")
    if found is None:
        raise LockfileError("no pip found for `pip download`: pass --pip")
    return (found,)
