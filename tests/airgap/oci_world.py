"""Real OCI content for the bundle tests: a `docker-registry` process, images built here.

Nothing is downloaded: layers are tar.gz archives written by the test, images are pushed
through the distribution API (and one through `skopeo copy` as a Docker v2 manifest, to prove
we read what other tools write), charts are packaged `.tgz` archives, the model is a
generated Hugging Face cache snapshot and the wheel a minimal valid wheel.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import pytest
import yaml

from llmflow_airgap.digests import sha256_file
from llmflow_airgap.registry import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, RegistryClient
from llmflow_airgap.sources import HELM_CHART_LAYER, HELM_CONFIG

REGISTRY_BINARY = Path("/usr/bin/docker-registry")
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MODEL_REVISION = "0123456789abcdef0123456789abcdef01234567"


def needs_tool(name: str) -> pytest.MarkDecorator:
    """Skip a test that checks our output with a standard tool when the tool is absent."""
    return pytest.mark.skipif(shutil.which(name) is None, reason=f"`{name}` is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalRegistry:
    """A `docker-registry serve` on loopback with filesystem storage under `root`."""

    root: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # Extra top-level configuration (e.g. an `auth:` section), merged into the file.
    extra_config: dict[str, object] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> LocalRegistry:
        self.root.mkdir(parents=True, exist_ok=True)
        config = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.root / "data")}},
            "http": {"addr": self.host, "secret": "test-secret"},
            **self.extra_config,
        }
        (self.root / "config.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        log = (self.root / "registry.log").open("wb")
        self.process = subprocess.Popen(
            [str(REGISTRY_BINARY), "serve", str(self.root / "config.yml")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                # 401 is a healthy registry that wants a token
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code in (200, 401):
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"docker-registry did not start: {(self.root / 'registry.log').read_text()}"
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


def tar_gz(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A reproducible tar.gz layer and its diff_id (sha256 of the uncompressed tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    uncompressed = raw.getvalue()
    return gzip.compress(uncompressed, mtime=0), "sha256:" + hashlib.sha256(
        uncompressed
    ).hexdigest()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class PushedImage:
    reference: str
    digest: str
    platforms: dict[str, str]


def _blob_id(blob: bytes | Path) -> tuple[str, int]:
    if isinstance(blob, Path):
        return sha256_file(blob)
    return digest_of(blob), len(blob)


def push_platform_manifest(
    client: RegistryClient,
    host: str,
    repo: str,
    arch: str,
    layers: list[tuple[bytes, str]] | list[tuple[Path, str]],
    layer_type: str = OCI_LAYER_GZIP,
    tag: str | None = None,
) -> tuple[bytes, str]:
    """Push config, layers (bytes, or a file streamed from disk) and an OCI manifest."""
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in layers]},
        },
        sort_keys=True,
    ).encode()
    client.upload_blob(host, repo, digest_of(config), config)
    descriptors = []
    for blob, _ in layers:
        digest, size = _blob_id(blob)
        client.upload_blob(host, repo, digest, blob)
        descriptors.append({"mediaType": layer_type, "digest": digest, "size": size})
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
            "layers": descriptors,
        },
        sort_keys=True,
    ).encode()
    digest = client.put_manifest(host, repo, tag or digest_of(manifest), manifest, OCI_MANIFEST)
    return manifest, digest


def push_multiplatform(
    client: RegistryClient,
    registry: LocalRegistry,
    source_host: str,
    repo: str,
    tag: str,
    layers_by_arch: dict[str, list[tuple[bytes, str]]],
) -> PushedImage:
    """Push an OCI index with one manifest per architecture (linux/<arch>)."""
    entries = []
    platforms = {}
    for arch, layers in layers_by_arch.items():
        manifest, digest = push_platform_manifest(client, registry.host, repo, arch, layers)
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(manifest),
                "platform": {"architecture": arch, "os": "linux"},
            }
        )
        platforms[f"linux/{arch}"] = digest
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    digest = client.put_manifest(registry.host, repo, tag, index, OCI_INDEX)
    return PushedImage(f"{source_host}/{repo}:{tag}", digest, platforms)


def write_oci_layout(root: Path, tag: str, arch: str, layers: list[tuple[bytes, str]]) -> None:
    """A single-image OCI layout on disk (the input `skopeo copy oci:` reads)."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        digest = digest_of(data)
        (blobs / digest.removeprefix("sha256:")).write_bytes(data)
        return digest

    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
            "config": {},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": put(config), "size": len(config)},
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": put(b), "size": len(b)} for b, _ in layers
            ],
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": put(manifest),
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (root / "index.json").write_text(json.dumps(index), encoding="utf-8")
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}', encoding="utf-8")


def push_docker_manifest(
    client: RegistryClient, host: str, repo: str, tag: str, layers: list[tuple[bytes, str]]
) -> str:
    """A Docker schema 2 image (what `skopeo copy --format v2s2` writes), without skopeo."""
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
        }
    ).encode()
    client.upload_blob(host, repo, digest_of(config), config)
    for blob, _ in layers:
        client.upload_blob(host, repo, digest_of(blob), blob)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": digest_of(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": digest_of(blob),
                    "size": len(blob),
                }
                for blob, _ in layers
            ],
        }
    ).encode()
    return client.put_manifest(host, repo, tag, manifest, DOCKER_MANIFEST)


def skopeo_push(layout: Path, tag: str, registry: LocalRegistry, repo: str, v2s2: bool) -> None:
    command = ["skopeo", "copy", "--dest-tls-verify=false"]
    if v2s2:
        command += ["--format", "v2s2"]
    command += [f"oci:{layout}:{tag}", f"docker://{registry.host}/{repo}:{tag}"]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def chart_tgz(name: str, version: str) -> bytes:
    """A minimal Helm chart archive (`<name>/Chart.yaml`, values, one template)."""
    files = {
        f"{name}/Chart.yaml": yaml.safe_dump(
            {"apiVersion": "v2", "name": name, "version": version, "appVersion": "1.0"}
        ).encode(),
        f"{name}/values.yaml": b"replicaCount: 1\n",
        f"{name}/templates/configmap.yaml": (
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
        ),
    }
    return tar_gz(files)[0]


def push_oci_chart(
    client: RegistryClient, registry: LocalRegistry, repo: str, version: str, archive: bytes
) -> str:
    """Push a chart the way `helm push` does (config + one chart layer)."""
    config = json.dumps({"name": repo.rsplit("/", 1)[-1], "version": version}).encode()
    client.upload_blob(registry.host, repo, digest_of(config), config)
    client.upload_blob(registry.host, repo, digest_of(archive), archive)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": HELM_CONFIG, "digest": digest_of(config), "size": len(config)},
            "layers": [
                {"mediaType": HELM_CHART_LAYER, "digest": digest_of(archive), "size": len(archive)}
            ],
        }
    ).encode()
    return client.put_manifest(registry.host, repo, version, manifest, OCI_MANIFEST)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


@dataclass
class ChartServer:
    """A static Helm repository (index.yaml + archives) over HTTP on loopback."""

    root: Path
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> ChartServer:
        handler = partial(QuietHandler, directory=str(self.root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def write_helm_repo(root: Path, name: str, version: str, archive: bytes) -> None:
    root.mkdir(parents=True, exist_ok=True)
    filename = f"{name}-{version}.tgz"
    (root / filename).write_bytes(archive)
    index = {
        "apiVersion": "v1",
        "entries": {
            name: [
                {
                    "name": name,
                    "version": version,
                    "urls": [filename],
                    "digest": hashlib.sha256(archive).hexdigest(),
                }
            ]
        },
    }
    (root / "index.yaml").write_text(yaml.safe_dump(index), encoding="utf-8")


def write_model_snapshot(models_dir: Path, repo: str, revision: str) -> Path:
    """A Hugging Face cache snapshot whose files are symlinks into `blobs/`, as the hub writes."""
    org, name = repo.split("/")
    cache = models_dir / f"models--{org}--{name}"
    snapshot = cache / "snapshots" / revision
    (cache / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    files = {
        "config.json": json.dumps({"model_type": "llama", "hidden_size": 64}).encode(),
        "tokenizer/tokenizer.json": json.dumps({"version": "1.0"}).encode(),
        "model.safetensors": os.urandom(512 * 1024),
    }
    for rel, data in files.items():
        blob = cache / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (cache / "refs").mkdir(exist_ok=True)
    (cache / "refs" / "main").write_text(revision, encoding="utf-8")
    return snapshot


def write_wheel(wheelhouse: Path, name: str, version: str) -> Path:
    """A minimal valid wheel (dist-info with METADATA, WHEEL and RECORD)."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    path = wheelhouse / f"{name}-{version}-py3-none-any.whl"
    dist = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}/__init__.py", "VALUE = 1\n")
        archive.writestr(
            f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        archive.writestr(
            f"{dist}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{dist}/RECORD", "")
    return path


def platform_document(
    images_web: list[str], images_api: list[str], web_chart: str, api_chart: str
) -> dict[str, object]:
    """A small but schema-valid platform.yaml with two components and one model."""
    profiles = {
        p: {
            "description": p,
            "nodes": 1,
            "gpus": 0,
            "replicasFrom": "test",
            "podDisruptionBudgets": False,
            "autoscaling": False,
        }
        for p in ("minimal", "standard", "ha")
    }

    def component(name: str, images: list[str], repository: str, chart: str) -> dict[str, object]:
        return {
            "name": name,
            "description": f"{name} test component",
            "layer": "application",
            "namespace": "llmflow-system",
            "chart": {
                "repository": repository,
                "name": chart,
                "version": "1.2.3",
                "licence": "MIT",
            },
            "appVersion": "1.0",
            "appLicence": "MIT",
            "why": "test",
            "profiles": ["minimal", "standard", "ha"],
            "images": images,
            "values": {
                "base": f"helm-values/{name}/values.yaml",
                "airgap": f"helm-values/{name}/a.yaml",
            },
            "healthChecks": [{"kind": "rollout", "target": f"deployment/{name}"}],
        }

    web = component("web", images_web, "https://charts.example.com/stable", web_chart)
    web["models"] = [
        {
            "name": "tiny",
            "huggingfaceRepo": "llmflow/tiny-model",
            "revision": MODEL_REVISION,
            "licence": "MIT",
            "sizeGiB": 0.001,
            "profiles": ["minimal", "standard", "ha"],
        }
    ]
    api = component("api", images_api, "oci://ghcr.io/llmflowtest/charts", api_chart)
    return {
        "apiVersion": "llmflow.io/v1alpha1",
        "kind": "Platform",
        "metadata": {"name": "llmflow-test", "version": "0.1.0"},
        "registry": {"host": "registry.site.internal", "pullSecret": "regcred"},
        "tenancy": {"difyMode": "shared"},
        "namespaces": [{"name": "llmflow-system", "purpose": "test", "podSecurity": "restricted"}],
        "profiles": profiles,
        "components": [web, api],
        "monitoring": {"provisionedBy": "web", "ruleFiles": [], "dashboards": []},
    }


def iter_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path


@dataclass
class World:
    """Everything a lock/build/verify test needs, on this machine only."""

    root: Path
    registry: LocalRegistry
    chart_server: ChartServer
    platform_file: Path
    models_dir: Path
    wheelhouse: Path
    private_key: Path
    public_key: Path
    web: PushedImage
    worker: PushedImage
    api_reference: str
    shared_layer: str
    big_layer: str
    registry_mirrors: dict[str, str]
    chart_mirrors: dict[str, str]

    def cli_sources(self) -> list[str]:
        args: list[str] = []
        for host, url in self.registry_mirrors.items():
            args += ["--registry-mirror", f"{host}={url}"]
        for source, target in self.chart_mirrors.items():
            args += ["--chart-mirror", f"{source}={target}"]
        return [*args, "--models-dir", str(self.models_dir), "--wheelhouse", str(self.wheelhouse)]


def build_world(root: Path) -> World:
    """Start the source registry and fill it; write platform.yaml, model, wheel, keys."""
    from llmflow_airgap.signing import generate_keypair

    registry = LocalRegistry(root / "registry").start()
    mirrors = {"docker.io": registry.url, "ghcr.io": registry.url}
    base = tar_gz({"etc/os-release": b"ID=llmflow-test\n", "bin/true": b"\x7fELF-ish"})
    amd = tar_gz({"opt/app/arch": b"amd64\n"})
    arm = tar_gz({"opt/app/arch": b"arm64\n"})
    # Several chunks, so an interrupted download leaves a partial file to resume.
    big = tar_gz({"opt/data.bin": os.urandom(3 * 1024 * 1024 + 123)})
    with RegistryClient({"127.0.0.1": registry.url}) as client:
        web = push_multiplatform(
            client,
            registry,
            "docker.io",
            "llmflowtest/web",
            "1.0",
            {"amd64": [base, amd], "arm64": [base, arm]},
        )
        worker = push_multiplatform(
            client,
            registry,
            "docker.io",
            "llmflowtest/worker",
            "1.0",
            {"amd64": [base, amd, big], "arm64": [base, arm, big]},
        )
        archive = chart_tgz("apichart", "1.2.3")
        push_oci_chart(client, registry, "llmflowtest/charts/apichart", "1.2.3", archive)
    api_layers = [base, tar_gz({"srv/api": b"api\n"})]
    if shutil.which("skopeo"):
        layout = root / "layout-api"
        write_oci_layout(layout, "2.0", "amd64", api_layers)
        skopeo_push(layout, "2.0", registry, "llmflowtest/api", v2s2=True)
    else:
        with RegistryClient({"127.0.0.1": registry.url}) as client:
            push_docker_manifest(client, registry.host, "llmflowtest/api", "2.0", api_layers)

    helm_repo = root / "helm-repo" / "stable"
    write_helm_repo(helm_repo, "webchart", "1.2.3", chart_tgz("webchart", "1.2.3"))
    chart_server = ChartServer(root / "helm-repo").start()

    models_dir = root / "models"
    write_model_snapshot(models_dir, "llmflow/tiny-model", MODEL_REVISION)
    wheelhouse = root / "wheelhouse"
    write_wheel(wheelhouse, "llmflow_testpkg", "0.1.0")

    platform_file = root / "platform" / "platform.yaml"
    platform_file.parent.mkdir(parents=True)
    document = platform_document(
        ["docker.io/llmflowtest/web:1.0", "docker.io/llmflowtest/worker:1.0"],
        ["ghcr.io/llmflowtest/api:2.0", "docker.io/llmflowtest/web:1.0"],
        "webchart",
        "apichart",
    )
    platform_file.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    keys = root / "keys"
    generate_keypair(keys / "bundle.key.pem", keys / "bundle.pub.pem")
    return World(
        root=root,
        registry=registry,
        chart_server=chart_server,
        platform_file=platform_file,
        models_dir=models_dir,
        wheelhouse=wheelhouse,
        private_key=keys / "bundle.key.pem",
        public_key=keys / "bundle.pub.pem",
        web=web,
        worker=worker,
        api_reference="ghcr.io/llmflowtest/api:2.0",
        shared_layer=digest_of(base[0]),
        big_layer=digest_of(big[0]),
        registry_mirrors=mirrors,
        chart_mirrors={"https://charts.example.com": chart_server.url},
    )
