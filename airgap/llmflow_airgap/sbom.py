"""The bundle's SBOM in CycloneDX 1.5 JSON: everything the bundle ships, by digest.

Generated from the lockfile plus what `build` made from it (the re-signed Dify plugin
packages, the OCI model artifacts), so it states exactly what the bundle holds. The serial
number is derived from the lockfile digest, which keeps two builds of one lock identical.

Components and the CycloneDX 1.5 fields they use (`schema/bom-1.5.schema.json` of
CycloneDX/specification):

* images: `container`, `purl` `pkg:oci/...`, the index digest as SHA-256;
* charts: `application`, the archive's SHA-256 and where it came from;
* models: `machine-learning-model`, `purl` `pkg:huggingface/<repo>@<revision>`, each file a
  nested `file` component with its SHA-256; with `build --model-artifacts` also the OCI
  artifact's reference and manifest digest (property `llmflow:oci-artifact`);
* wheels: `library`, `purl` `pkg:pypi/...`;
* Dify plugins: `application` for the **re-signed** package in the bundle (its SHA-256 in
  `hashes`), the marketplace package it was made from as `pedigree.ancestors[0]` with that
  file's SHA-256 (CycloneDX's way to say "derived from"), and every wheel of its wheelhouse
  as a nested `library`. purl has no Dify type, so the identity is `pkg:generic/<author>/
  <name>@<version>` with a `checksum` qualifier (the purl `generic` type's documented
  qualifiers are `download_url` and `checksum`), and the daemon's unique identifier is a
  property;
* executables shipped for the install host (`tools/helm`): `file` with its SHA-256.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from llmflow_airgap import __version__
from llmflow_airgap.digests import digest_hex
from llmflow_airgap.lockfile import LockedDifyPlugin, LockedWheel, Lockfile

SPEC_VERSION = "1.5"


@dataclass(frozen=True)
class ShippedPlugin:
    """A re-signed Dify plugin package as `build` wrote it (`dify-plugins/index.json`)."""

    file: str
    sha256: str
    size: int
    unique_identifier: str


@dataclass(frozen=True)
class ShippedModelArtifact:
    """A model packed as an OCI artifact in the bundle's image layout."""

    reference: str
    digest: str
    size: int


def _hashes(digest: str) -> list[dict[str, str]]:
    return [{"alg": "SHA-256", "content": digest_hex(digest)}]


def _props(**values: str) -> list[dict[str, str]]:
    return [{"name": f"llmflow:{k.replace('_', '-')}", "value": v} for k, v in values.items()]


def image_purl(repository: str, tag: str, digest: str) -> str:
    """Package URL of an OCI image (`pkg:oci/<name>@<digest>?repository_url=...&tag=...`)."""
    name = repository.rsplit("/", 1)[-1]
    return (
        f"pkg:oci/{name}@{quote(digest, safe='')}"
        f"?repository_url={quote(repository, safe='/')}&tag={quote(tag, safe='')}"
    )


def wheel_purl(wheel: LockedWheel) -> str:
    """`pkg:pypi/<name>@<version>?file_name=<wheel>`."""
    return f"pkg:pypi/{wheel.name}@{wheel.version}?file_name={quote(wheel.filename)}"


def dify_plugin_purl(plugin_id: str, version: str, digest: str, url: str | None = None) -> str:
    """`pkg:generic/<author>/<name>@<version>?checksum=sha256:<hex>[&download_url=...]`."""
    author, name = plugin_id.split("/", 1)
    purl = (
        f"pkg:generic/{quote(author, safe='')}/{quote(name, safe='')}@{quote(version, safe='')}"
        f"?checksum={quote(digest, safe=':')}"
    )
    if url:
        purl += f"&download_url={quote(url, safe='')}"
    return purl


def _wheel(wheel: LockedWheel, ref: str) -> dict[str, Any]:
    return {
        "type": "library",
        "bom-ref": ref,
        "name": wheel.name,
        "version": wheel.version,
        "purl": wheel_purl(wheel),
        "hashes": _hashes(wheel.sha256),
    }


def _plugin(locked: LockedDifyPlugin, shipped: ShippedPlugin | None) -> dict[str, Any]:
    ref = f"dify-plugin:{locked.id}@{locked.version}"
    source_url = locked.download_url  # a marketplace plugin: the URL lock downloaded from
    original: dict[str, Any] = {
        "type": "application",
        "bom-ref": f"{ref}/source",
        "name": locked.id,
        "version": locked.version,
        "purl": dify_plugin_purl(locked.id, locked.version, locked.sha256, source_url),
        "hashes": _hashes(locked.sha256),
        "properties": _props(
            source=locked.source, source_signature_verified=str(locked.source_verified).lower()
        ),
    }
    if source_url:
        original["externalReferences"] = [{"type": "distribution", "url": source_url}]
    component: dict[str, Any] = {
        "type": "application",
        "bom-ref": ref,
        "name": locked.id,
        "version": locked.version,
        "description": "Dify plugin repackaged with its wheels and re-signed for offline "
        "installation",
        "pedigree": {
            "ancestors": [original],
            "notes": "Repackaged by llmflow-airgap build: the wheels below added under wheels/, "
            "requirements.txt pinned to them, signature replaced by the bundle's plugin key "
            f"(authorized_category {locked.authorized_category}).",
        },
        "components": [_wheel(w, f"{ref}/wheel:{w.filename}") for w in locked.wheels],
    }
    props: dict[str, str] = {
        "authorized_category": locked.authorized_category,
        "python_version": locked.python_version,
        "architectures": ",".join(locked.architectures),
    }
    if shipped is not None:
        component["purl"] = dify_plugin_purl(locked.id, locked.version, shipped.sha256)
        component["hashes"] = _hashes(shipped.sha256)
        props = {
            "bundle_file": shipped.file,
            "dify_unique_identifier": shipped.unique_identifier,
            **props,
        }
    component["properties"] = _props(**props)
    return component


def build_sbom(
    lock: Lockfile,
    lock_digest: str,
    plugins: Mapping[str, ShippedPlugin] | None = None,
    model_artifacts: Mapping[str, ShippedModelArtifact] | None = None,
    tools: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A CycloneDX 1.5 document for everything the bundle ships.

    `plugins` maps a plugin id to its re-signed package, `model_artifacts` a model's served
    name to its OCI artifact (both as `build` made them), `tools` a bundle path of a shipped
    executable to its sha256.
    """
    shipped_plugins = plugins or {}
    artifacts = model_artifacts or {}
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
        ref = f"model:{model.huggingface_repo}@{model.revision}"
        entry: dict[str, Any] = {
            "type": "machine-learning-model",
            "bom-ref": ref,
            "name": model.huggingface_repo,
            "version": model.revision,
            "purl": f"pkg:huggingface/{model.huggingface_repo}@{model.revision}",
            "externalReferences": [
                {
                    "type": "distribution",
                    "url": f"https://huggingface.co/{model.huggingface_repo}/tree/{model.revision}",
                }
            ],
            "components": [
                {
                    "type": "file",
                    "bom-ref": f"{ref}/file:{item.path}",
                    "name": item.path,
                    "hashes": _hashes(item.sha256),
                    "properties": _props(size=str(item.size)),
                }
                for item in model.files
            ],
        }
        props = {
            "served_name": model.name,
            "component": model.component,
            "files": str(len(model.files)),
            "bytes": str(model.size),
        }
        artifact = artifacts.get(model.name)
        if artifact is not None:
            # The CNCF ModelPack artifact in the bundle's OCI image layout (its manifest).
            props["oci_artifact"] = f"{artifact.reference}@{artifact.digest}"
        entry["properties"] = _props(**props)
        components.append(entry)
    for wheel in lock.wheels:
        components.append(_wheel(wheel, f"wheel:{wheel.filename}"))
    for plugin in lock.dify_plugins:
        components.append(_plugin(plugin, shipped_plugins.get(plugin.id)))
    for path, digest in sorted((tools or {}).items()):
        components.append(
            {"type": "file", "bom-ref": f"tool:{path}", "name": path, "hashes": _hashes(digest)}
        )
    return {
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
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


def iter_components(document: Mapping[str, Any]) -> Sequence[dict[str, Any]]:
    """Every component of an SBOM, nested ones and pedigree ancestors included."""
    found: list[dict[str, Any]] = []
    pending = list(document.get("components", []))
    while pending:
        component = pending.pop(0)
        found.append(component)
        pending.extend(component.get("components", []))
        pending.extend((component.get("pedigree") or {}).get("ancestors", []))
    return found
