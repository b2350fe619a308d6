"""`build --model-artifacts`: each model as a CNCF ModelPack OCI artifact in the bundle's
image layout, its layer blobs hard links to the model files, checked by `verify`, pushed by
the image push to a real site registry (Debian's docker-registry) and read back by skopeo."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from oci_world import LocalRegistry, World, needs_tool
from sbom_check import check_cyclonedx_15

from llmflow_airgap.cli import main
from llmflow_airgap.lockfile import load_lockfile
from llmflow_airgap.modelartifact import (
    ARTIFACT_TYPE,
    CONFIG_TYPE,
    DOC_RAW,
    FILEPATH_ANNOTATION,
    WEIGHT_CONFIG_RAW,
    WEIGHT_RAW,
    classify,
    repository_name,
)
from llmflow_airgap.push import push_bundle
from llmflow_airgap.verify import verify_bundle

MODEL_DIR = "models/tiny"


@pytest.fixture(scope="module")
def artifact_bundle(
    oci_world: World, lockfile: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("model-artifacts") / "bundle"
    args = ["build", "--lock", str(lockfile), "-o", str(out), "--key", str(oci_world.private_key)]
    args += ["--model-artifacts", "--split-size", "1M", "--parts-dir", str(out.parent / "parts")]
    assert main([*args, *oci_world.cli_sources()]) == 0
    return out


@pytest.fixture
def site_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    registry = LocalRegistry(tmp_path / "site").start()
    try:
        yield registry
    finally:
        registry.stop()


def _blob(bundle: Path, digest: str) -> Path:
    return bundle / "images/blobs/sha256" / digest.removeprefix("sha256:")


def _artifact_entry(bundle: Path) -> dict[str, Any]:
    index = json.loads((bundle / "images/index.json").read_text())
    (entry,) = [m for m in index["manifests"] if m.get("artifactType") == ARTIFACT_TYPE]
    return dict(entry)


def test_artifact_is_in_the_layout_with_modelpack_media_types(
    artifact_bundle: Path, lockfile: Path
) -> None:
    (model,) = load_lockfile(lockfile).models
    entry = _artifact_entry(artifact_bundle)
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == (
        f"models/tiny:{model.revision}"
    )
    manifest = json.loads(_blob(artifact_bundle, entry["digest"]).read_bytes())
    assert manifest["artifactType"] == ARTIFACT_TYPE
    assert manifest["config"]["mediaType"] == CONFIG_TYPE
    layers = {x["annotations"][FILEPATH_ANNOTATION]: x for x in manifest["layers"]}
    assert {path: x["mediaType"] for path, x in layers.items()} == {
        "config.json": WEIGHT_CONFIG_RAW,
        "model.safetensors": WEIGHT_RAW,
        "tokenizer/tokenizer.json": WEIGHT_CONFIG_RAW,
    }
    for item in model.files:
        assert (layers[item.path]["digest"], layers[item.path]["size"]) == (item.sha256, item.size)
    config = json.loads(_blob(artifact_bundle, manifest["config"]["digest"]).read_bytes())
    assert config["modelfs"] == {
        "type": "layers",
        "diffIds": [x["digest"] for x in manifest["layers"]],
    }
    assert config["descriptor"]["revision"] == model.revision
    assert config["config"] == {"format": "safetensors"}


def test_layer_blobs_are_the_model_files_stored_once(
    oci_world: World, artifact_bundle: Path, lockfile: Path, built_bundle: Path
) -> None:
    (model,) = load_lockfile(lockfile).models
    for item in model.files:
        blob = _blob(artifact_bundle, item.sha256).stat()
        stored = (artifact_bundle / MODEL_DIR / item.path).stat()
        assert (blob.st_ino, blob.st_dev) == (stored.st_ino, stored.st_dev), item.path

    # the split tar carries the weight bytes once (a hard-link entry for the second path)
    def tar_bytes(bundle: Path) -> int:
        return sum(p.stat().st_size for p in (bundle.parent / "parts").glob("*.part-*"))

    extra = tar_bytes(artifact_bundle) - tar_bytes(built_bundle)
    assert 0 < extra < 64 * 1024, extra
    with tarfile.open(fileobj=_joined(artifact_bundle.parent / "parts"), mode="r|") as tar:
        kinds = {m.name.split("/", 1)[1]: m.type for m in tar}
    weight = next(f for f in model.files if f.path == "model.safetensors")
    linked = {
        kinds[f"images/blobs/sha256/{weight.sha256[7:]}"],
        kinds[f"{MODEL_DIR}/model.safetensors"],
    }
    assert linked == {tarfile.REGTYPE, tarfile.LNKTYPE}
    sbom = json.loads((artifact_bundle / "sbom.cdx.json").read_text())
    check_cyclonedx_15(sbom)
    (entry,) = [c for c in sbom["components"] if c["type"] == "machine-learning-model"]
    props = {p["name"]: p["value"] for p in entry["properties"]}
    assert props["llmflow:oci-artifact"] == (
        f"models/tiny:{model.revision}@{_artifact_entry(artifact_bundle)['digest']}"
    )
    assert main(["verify", str(artifact_bundle), "--public-key", str(oci_world.public_key)]) == 0


def _joined(parts: Path) -> Any:
    import io

    data = b"".join(p.read_bytes() for p in sorted(parts.glob("*.part-*")))
    return io.BytesIO(data)


@needs_tool("skopeo")
def test_push_copies_the_artifact_with_its_digest_and_type(
    artifact_bundle: Path, site_registry: LocalRegistry, lockfile: Path
) -> None:
    (model,) = load_lockfile(lockfile).models
    entry = _artifact_entry(artifact_bundle)
    result = push_bundle(artifact_bundle, site_registry.host)
    assert result.images == 4  # three images and the model
    target = f"docker://{site_registry.host}/models/tiny:{model.revision}"
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", target],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == entry["digest"]
    assert json.loads(raw)["artifactType"] == ARTIFACT_TYPE
    # the weight blob the registry serves is the model file
    weight = next(f for f in model.files if f.path == "model.safetensors")
    blob = subprocess.run(
        ["curl", "-sf", f"{site_registry.url}/v2/models/tiny/blobs/{weight.sha256}"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert blob == (artifact_bundle / MODEL_DIR / "model.safetensors").read_bytes()


def test_verify_refuses_a_tampered_weight_blob(
    oci_world: World, artifact_bundle: Path, lockfile: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(artifact_bundle, copy)  # copies each link as its own file
    (model,) = load_lockfile(lockfile).models
    weight = next(f for f in model.files if f.path == "model.safetensors")
    blob = _blob(copy, weight.sha256)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    problems = {(p.file, p.kind) for p in verify_bundle(copy, oci_world.public_key).problems}
    assert problems == {(f"images/blobs/sha256/{weight.sha256[7:]}", "bad-blob")}


def test_verify_refuses_an_artifact_whose_config_disowns_its_layers(
    oci_world: World, artifact_bundle: Path, tmp_path: Path
) -> None:
    """A re-signed bundle (an insider, or a bug) whose config lists other diff IDs."""
    from llmflow_airgap.bundle import BundleFile, BundleManifest, checksums_text
    from llmflow_airgap.signing import load_private_key, sign

    copy = tmp_path / "bundle"
    shutil.copytree(artifact_bundle, copy)
    entry = _artifact_entry(copy)
    manifest_blob = _blob(copy, entry["digest"])
    manifest = json.loads(manifest_blob.read_bytes())
    old_config_digest = str(manifest["config"]["digest"])
    config_path = _blob(copy, old_config_digest)
    config = json.loads(config_path.read_bytes())
    config["modelfs"]["diffIds"].reverse()
    new_config = json.dumps(config).encode()
    config_path.unlink()
    new_config_digest = "sha256:" + hashlib.sha256(new_config).hexdigest()
    _blob(copy, new_config_digest).write_bytes(new_config)
    manifest["config"] = {
        **manifest["config"],
        "digest": new_config_digest,
        "size": len(new_config),
    }
    new_manifest = json.dumps(manifest).encode()
    manifest_blob.unlink()
    new_digest = "sha256:" + hashlib.sha256(new_manifest).hexdigest()
    _blob(copy, new_digest).write_bytes(new_manifest)
    index_path = copy / "images/index.json"
    index = json.loads(index_path.read_text())
    for item in index["manifests"]:
        if item["digest"] == entry["digest"]:
            item.update(digest=new_digest, size=len(new_manifest))
    index_path.write_text(json.dumps(index))
    # re-seal with the genuine key: the old manifest and config blobs out, the new ones in
    signed = BundleManifest.parse((copy / "manifest.json").read_bytes())
    gone = {entry["digest"], old_config_digest}
    rels = {f.path for f in signed.files if f.path.rsplit("/", 1)[-1] not in {d[7:] for d in gone}}
    rels |= {f"images/blobs/sha256/{d[7:]}" for d in (new_digest, new_config_digest)}
    files = []
    for rel in sorted(rels):
        body = (copy / rel).read_bytes()
        files.append(BundleFile(rel, "sha256:" + hashlib.sha256(body).hexdigest(), len(body)))
    resealed = BundleManifest(signed.platform, signed.lock_sha256, signed.images, files)
    data = resealed.to_bytes()
    (copy / "manifest.json").write_bytes(data)
    (copy / "manifest.json.sig").write_bytes(sign(load_private_key(oci_world.private_key), data))
    control = list(files)
    for name in ("manifest.json", "manifest.json.sig"):
        body = (copy / name).read_bytes()
        control.append(BundleFile(name, "sha256:" + hashlib.sha256(body).hexdigest(), len(body)))
    (copy / "checksums.txt").write_text(checksums_text(sorted(control, key=lambda f: f.path)))
    problems = [
        (p.file, p.kind, p.message) for p in verify_bundle(copy, oci_world.public_key).problems
    ]
    assert problems == [
        (
            f"images/blobs/sha256/{new_digest[7:]}",
            "bad-blob",
            "modelfs.diffIds of the config do not match the raw layers",
        )
    ]


def test_file_classification() -> None:
    assert classify("model-00001-of-00002.safetensors") == (WEIGHT_RAW, False)
    assert classify("model.safetensors.index.json") == (WEIGHT_CONFIG_RAW, False)
    assert classify("tokenizer.model") == (WEIGHT_CONFIG_RAW, False)
    assert classify("README.md") == (DOC_RAW, False)
    assert classify("LICENSE") == (DOC_RAW, False)
    assert classify("weird.xyz") == (WEIGHT_CONFIG_RAW, True)
    assert repository_name("Qwen2.5-7B-Instruct") == "models/qwen2.5-7b-instruct"
    assert repository_name("bge m3 (ko)") == "models/bge-m3-ko"
