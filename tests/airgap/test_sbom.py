"""The bundle's CycloneDX 1.5 SBOM: valid against the CycloneDX schema (when available) and
complete — images, charts, models with every file, wheels, each by its sha256."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from oci_world import World
from sbom_check import check_cyclonedx_15, schema_dir, validate_with_schema, walk

from llmflow_airgap.cli import main
from llmflow_airgap.lockfile import load_lockfile


def test_sbom_is_cyclonedx_15_and_names_every_model_file(built_bundle: Path) -> None:
    sbom = json.loads((built_bundle / "sbom.cdx.json").read_text())
    check_cyclonedx_15(sbom)
    lock = load_lockfile(built_bundle / "platform.lock.yaml")
    (model,) = [c for c in sbom["components"] if c["type"] == "machine-learning-model"]
    files = {c["name"]: c["hashes"][0]["content"] for c in model["components"]}
    assert files == {f.path: f.sha256[7:] for f in lock.models[0].files}
    props = {p["name"]: p["value"] for p in model["properties"]}
    assert props["llmflow:served-name"] == "tiny"
    assert props["llmflow:bytes"] == str(lock.models[0].size)
    assert "llmflow:oci-artifact" not in props  # built without --model-artifacts
    hashes = {h["content"] for c in walk(sbom["components"]) for h in c.get("hashes", [])}
    blobs = {i.digest[7:] for i in lock.images} | {c.digest[7:] for c in lock.charts}
    assert blobs | {w.sha256[7:] for w in lock.wheels} <= hashes


def test_schema_check_catches_what_cyclonedx_refuses(built_bundle: Path) -> None:
    """The validator is live: a component type CycloneDX 1.5 does not define is refused."""
    directory = schema_dir()
    if directory is None:
        pytest.skip("no CycloneDX 1.5 schema here (LLMFLOW_TEST_CYCLONEDX_SCHEMA_DIR)")
    sbom = json.loads((built_bundle / "sbom.cdx.json").read_text())
    sbom["components"][0]["type"] = "dify-plugin"
    with pytest.raises(AssertionError):
        validate_with_schema(sbom, directory)


def test_sbom_names_the_shipped_helm_binary(
    oci_world: World, lockfile: Path, tmp_path: Path
) -> None:
    helm = tmp_path / "helm"
    helm.write_bytes(b"#!/bin/sh\necho helm\n")
    args = ["build", "--lock", str(lockfile), "-o", str(tmp_path / "b")]
    args += ["--key", str(oci_world.private_key), "--helm-binary", str(helm)]
    assert main([*args, *oci_world.cli_sources()]) == 0
    sbom = json.loads((tmp_path / "b" / "sbom.cdx.json").read_text())
    check_cyclonedx_15(sbom)
    (tool,) = [c for c in sbom["components"] if c["bom-ref"] == "tool:tools/helm"]
    assert tool["hashes"] == [
        {"alg": "SHA-256", "content": hashlib.sha256(helm.read_bytes()).hexdigest()}
    ]
