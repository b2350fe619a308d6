"""The bundle's SBOM in CycloneDX 1.5 JSON: images, charts, models and wheels by digest.

Generated from the lockfile only, so it states exactly what the bundle holds. The serial
number is derived from the lockfile digest, which keeps two builds of one lock identical.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from llmflow_airgap import __version__
from llmflow_airgap.digests import digest_hex
from llmflow_airgap.lockfile import Lockfile


def _hashes(digest: str) -> list[dict[str, str]]:
    return [{"alg": "SHA-256", "content": digest_hex(digest)}]


def image_purl(repository: str, tag: str, digest: str) -> str:
    """Package URL of an OCI image (`pkg:oci/<name>@<digest>?repository_url=...&tag=...`)."""
    name = repository.rsplit("/", 1)[-1]
    return (
        f"pkg:oci/{name}@{quote(digest, safe='')}"
        f"?repository_url={quote(repository, safe='/')}&tag={quote(tag, safe='')}"
    )


def build_sbom(lock: Lockfile, lock_digest: str) -> dict[str, Any]:
    """A CycloneDX 1.5 document for everything the lockfile pins."""
    components: list[dict[str, Any]] = []
    for image in lock.images:
        components.append(
            {
                "type": "container",
                "bom-ref": image.pinned,
                "name": image.repository,
                "version": image.tag,
                "purl": image_purl(image.repository, image.tag, image.digest),
                "hashes": _hashes(image.digest),
                "properties": [
                    {"name": "llmflow:platform", "value": p.platform} for p in image.platforms
                ]
                + [{"name": "llmflow:component", "value": c} for c in image.components],
            }
        )
    for chart in lock.charts:
        components.append(
            {
                "type": "application",
                "bom-ref": f"chart:{chart.name}@{chart.version}",
                "name": chart.name,
                "version": chart.version,
                "hashes": _hashes(chart.digest),
                "externalReferences": [{"type": "distribution", "url": chart.url}],
                "properties": [{"name": "llmflow:component", "value": chart.component}],
            }
        )
    for model in lock.models:
        components.append(
            {
                "type": "machine-learning-model",
                "bom-ref": f"model:{model.huggingface_repo}@{model.revision}",
                "name": model.huggingface_repo,
                "version": model.revision,
                "purl": f"pkg:huggingface/{model.huggingface_repo}@{model.revision}",
                "properties": [
                    {"name": "llmflow:served-name", "value": model.name},
                    {"name": "llmflow:files", "value": str(len(model.files))},
                ],
            }
        )
    for wheel in lock.wheels:
        components.append(
            {
                "type": "library",
                "bom-ref": f"wheel:{wheel.filename}",
                "name": wheel.name,
                "version": wheel.version,
                "purl": f"pkg:pypi/{wheel.name}@{wheel.version}?file_name={quote(wheel.filename)}",
                "hashes": _hashes(wheel.sha256),
            }
        )
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'llmflow-lock:' + lock_digest)}",
        "version": 1,
        "metadata": {
            "component": {
                "type": "platform",
                "bom-ref": f"platform:{lock.platform.name}@{lock.platform.version}",
                "name": lock.platform.name,
                "version": lock.platform.version,
            },
            "tools": {
                "components": [
                    {"type": "application", "name": "llmflow-airgap", "version": __version__}
                ]
            },
        },
        "components": components,
    }
