"""Push the bundle's chart archives to the site registry as OCI artifacts (`helm push` format).

A Helm chart in an OCI registry is a manifest with one config blob (the chart's `Chart.yaml`
as JSON, media type `application/vnd.cncf.helm.config.v1+json`) and one layer (the `.tgz`
byte for byte, `application/vnd.cncf.helm.chart.content.v1.tar+gzip`), tagged with the chart
version (`+` is not allowed in tags, Helm writes `_`). The archive bytes are not re-packed,
so the layer digest equals the sha256 the lockfile recorded. The site can then
`helm pull oci://<registry>/charts/<name> --version <version>` without the bundle.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmflow_airgap.bundle import CHARTS_DIR
from llmflow_airgap.digests import sha256_bytes
from llmflow_airgap.errors import BundleError
from llmflow_airgap.lockfile import LockedChart
from llmflow_airgap.registry import OCI_MANIFEST, RegistryClient
from llmflow_airgap.sources import HELM_CHART_LAYER, HELM_CONFIG

CHARTS_REPOSITORY_PREFIX = "charts"
_MAX_CHART_YAML = 1024 * 1024


@dataclass(frozen=True)
class ChartPush:
    """One chart archive and where it goes."""

    name: str
    version: str
    archive: Path
    digest: str
    size: int

    @property
    def repository(self) -> str:
        """Repository path at the site registry (`charts/<name>`)."""
        return f"{CHARTS_REPOSITORY_PREFIX}/{self.name}"

    @property
    def tag(self) -> str:
        """The OCI tag Helm uses for a chart version."""
        return self.version.replace("+", "_")


def plan_charts(bundle: Path, charts: list[LockedChart]) -> list[ChartPush]:
    """The unique chart archives of the lockfile (components may share a chart)."""
    seen: dict[tuple[str, str], ChartPush] = {}
    for chart in charts:
        key = (chart.name, chart.version)
        if key not in seen:
            archive = bundle / CHARTS_DIR / f"{chart.name}-{chart.version}.tgz"
            seen[key] = ChartPush(chart.name, chart.version, archive, chart.digest, chart.size)
    return list(seen.values())


def chart_metadata(archive: Path) -> dict[str, Any]:
    """`Chart.yaml` of a chart archive, read without unpacking anything else."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                if len(parts) == 2 and parts[1] == "Chart.yaml" and member.isfile():
                    if member.size > _MAX_CHART_YAML:
                        break
                    handle = tar.extractfile(member)
                    if handle is None:
                        break
                    data: Any = yaml.safe_load(handle.read())
                    if isinstance(data, dict):
                        return data
                    break
    except (OSError, tarfile.TarError, yaml.YAMLError) as exc:
        raise BundleError(f"{archive}: not a readable chart archive: {exc}") from exc
    raise BundleError(f"{archive}: no <chart>/Chart.yaml at the top of the archive")


def chart_manifest(chart: ChartPush, config: bytes) -> bytes:
    """The OCI manifest `helm push` writes for this chart."""
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": HELM_CONFIG, "digest": sha256_bytes(config), "size": len(config)},
        "layers": [{"mediaType": HELM_CHART_LAYER, "digest": chart.digest, "size": chart.size}],
        "annotations": {
            "org.opencontainers.image.title": chart.name,
            "org.opencontainers.image.version": chart.version,
        },
    }
    return json.dumps(document, separators=(",", ":")).encode()


def push_chart(client: RegistryClient, host: str, chart: ChartPush) -> tuple[str, bool]:
    """Push one chart; return (manifest digest, whether anything was uploaded)."""
    if not chart.archive.is_file():
        raise BundleError(f"{chart.archive} is missing from the bundle")
    metadata = chart_metadata(chart.archive)
    if metadata.get("name") != chart.name or str(metadata.get("version")) != chart.version:
        raise BundleError(
            f"{chart.archive}: Chart.yaml says {metadata.get('name')} {metadata.get('version')}"
        )
    config = json.dumps(metadata, separators=(",", ":"), sort_keys=True, default=str).encode()
    manifest = chart_manifest(chart, config)
    digest = sha256_bytes(manifest)
    if client.manifest_exists(host, chart.repository, digest):
        # Already there by content: re-tagging is all that could be missing.
        client.put_manifest(host, chart.repository, chart.tag, manifest, OCI_MANIFEST)
        return digest, False
    client.upload_blob(host, chart.repository, sha256_bytes(config), config)
    client.upload_blob(host, chart.repository, chart.digest, chart.archive)
    client.put_manifest(host, chart.repository, chart.tag, manifest, OCI_MANIFEST)
    return digest, True
