"""Dify plugins through `lock` → `build` → `verify`, on the real OCI test world: the plugin
is pinned by sha256 with its wheels, repackaged and re-signed into the bundle, checked by an
independent implementation of the daemon's signature check, and refused when tampered."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from dify_plugin_fake import (
    daemon_unique_identifier,
    daemon_verify,
    make_wheel,
    plugin_files,
    zip_files,
)
from oci_world import World

from llmflow_airgap.bundle import (
    CHECKSUMS_NAME,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    BundleManifest,
    checksums_text,
)
from llmflow_airgap.cli import main
from llmflow_airgap.difyplugin import (
    generate_plugin_keypair,
    load_plugin_private_key,
    read_package,
    write_signed,
)
from llmflow_airgap.lockfile import load_lockfile
from llmflow_airgap.signing import load_private_key, sign
from llmflow_airgap.verify import verify_bundle

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI missing")

PLUGIN_FILE = "dify-plugins/llmflow-echo_tool-0.0.1.difypkg"


@pytest.fixture(scope="module")
def plugin_world(oci_world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dify-plugin-world")
    sources = root / "plugins"
    sources.mkdir()
    package = zip_files(plugin_files())
    (sources / "echo_tool-0.0.1.difypkg").write_bytes(package)
    wheels = root / "plugin-wheels"
    make_wheel(wheels / "llmflow__echo_tool-0.0.1", "llmflow-echo-dep", "0.1.0", "ECHO = 1\n")
    generate_plugin_keypair(root / "plugin.key", root / "plugin.pub")
    document = yaml.safe_load(oci_world.platform_file.read_text())
    document["difyPlugins"] = [
        {
            "id": "llmflow/echo_tool",
            "version": "0.0.1",
            "source": "echo_tool-0.0.1.difypkg",
            "sha256": "sha256:" + hashlib.sha256(package).hexdigest(),
            "purpose": "test tool plugin",
        }
    ]
    platform = root / "platform.yaml"
    platform.write_text(yaml.safe_dump(document, sort_keys=False))
    return {
        "root": root,
        "platform": platform,
        "sources": sources,
        "wheels": wheels,
        "key": root / "plugin.key",
        "public": root / "plugin.pub",
    }


def _plugin_args(world: dict[str, Path]) -> list[str]:
    return [
        "--dify-plugins-dir",
        str(world["sources"]),
        "--dify-plugin-wheels",
        str(world["wheels"]),
    ]


@pytest.fixture(scope="module")
def plugin_bundle(oci_world: World, plugin_world: dict[str, Path]) -> Path:
    lock = plugin_world["root"] / "platform.lock.yaml"
    args = ["lock", "--platform", str(plugin_world["platform"]), "-o", str(lock)]
    assert main([*args, *oci_world.cli_sources(), *_plugin_args(plugin_world)]) == 0
    out = plugin_world["root"] / "bundle"
    args = ["build", "--lock", str(lock), "-o", str(out), "--key", str(oci_world.private_key)]
    args += ["--dify-plugin-key", str(plugin_world["key"])]
    assert main([*args, *oci_world.cli_sources(), *_plugin_args(plugin_world)]) == 0
    return out


def test_lock_pins_the_plugin_and_its_wheels(
    plugin_world: dict[str, Path], plugin_bundle: Path
) -> None:
    lock = load_lockfile(plugin_bundle / "platform.lock.yaml")
    (plugin,) = lock.dify_plugins
    source = (plugin_world["sources"] / "echo_tool-0.0.1.difypkg").read_bytes()
    assert plugin.sha256 == "sha256:" + hashlib.sha256(source).hexdigest()
    assert plugin.authorized_category == "community" and plugin.python_version == "3.12"
    (wheel,) = plugin.wheels
    wheel_path = plugin_world["wheels"] / "llmflow__echo_tool-0.0.1" / wheel.filename
    assert wheel.sha256 == "sha256:" + hashlib.sha256(wheel_path.read_bytes()).hexdigest()


def test_bundle_ships_resigned_plugin_and_key(
    oci_world: World, plugin_world: dict[str, Path], plugin_bundle: Path
) -> None:
    files = {
        f.path for f in BundleManifest.parse((plugin_bundle / MANIFEST_NAME).read_bytes()).files
    }
    assert {PLUGIN_FILE, "dify-plugins/public.pem", "dify-plugins/index.json"} <= files
    listed = (plugin_bundle / CHECKSUMS_NAME).read_text()
    assert PLUGIN_FILE in listed and "dify-plugins/public.pem" in listed
    assert (plugin_bundle / "dify-plugins/public.pem").read_bytes() == plugin_world[
        "public"
    ].read_bytes()
    data = (plugin_bundle / PLUGIN_FILE).read_bytes()
    ok, reason = daemon_verify(data, [plugin_bundle / "dify-plugins/public.pem"])
    assert ok, reason
    index = json.loads((plugin_bundle / "dify-plugins/index.json").read_text())
    assert index["plugins"][0]["uniqueIdentifier"] == daemon_unique_identifier(data)
    assert index["daemon"]["version"] == "0.6.1"
    report = verify_bundle(plugin_bundle, oci_world.public_key)
    assert report.ok, report.problems


def _copy(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    return copy


def test_tampered_plugin_is_refused(oci_world: World, plugin_bundle: Path, tmp_path: Path) -> None:
    copy = _copy(plugin_bundle, tmp_path)
    data = bytearray((copy / PLUGIN_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / PLUGIN_FILE).write_bytes(bytes(data))
    assert main(["verify", str(copy), "--public-key", str(oci_world.public_key)]) == 1
    kinds = {(p.file, p.kind) for p in verify_bundle(copy, oci_world.public_key).problems}
    assert (PLUGIN_FILE, "changed") in kinds


def test_plugin_signed_with_another_key_is_refused_even_in_a_signed_bundle(
    oci_world: World, plugin_bundle: Path, tmp_path: Path
) -> None:
    """A bundle whose manifest is genuinely signed but whose plugin key does not match (a
    build with the wrong --dify-plugin-key, or an insider): the plugin check still refuses."""
    copy = _copy(plugin_bundle, tmp_path)
    generate_plugin_keypair(tmp_path / "x.key", tmp_path / "x.pub")
    shutil.copy(tmp_path / "x.pub", copy / "dify-plugins/public.pem")
    manifest = BundleManifest.parse((copy / MANIFEST_NAME).read_bytes())
    files = []
    for entry in manifest.files:
        if entry.path == "dify-plugins/public.pem":
            body = (copy / entry.path).read_bytes()
            entry = type(entry)(entry.path, "sha256:" + hashlib.sha256(body).hexdigest(), len(body))
        files.append(entry)
    resealed = BundleManifest(manifest.platform, manifest.lock_sha256, manifest.images, files)
    data = resealed.to_bytes()
    (copy / MANIFEST_NAME).write_bytes(data)
    (copy / SIGNATURE_NAME).write_bytes(sign(load_private_key(oci_world.private_key), data))
    control = [*files]
    for name in (MANIFEST_NAME, SIGNATURE_NAME):
        body = (copy / name).read_bytes()
        control.append(
            type(files[0])(name, "sha256:" + hashlib.sha256(body).hexdigest(), len(body))
        )
    (copy / CHECKSUMS_NAME).write_text(checksums_text(sorted(control, key=lambda f: f.path)))
    problems = verify_bundle(copy, oci_world.public_key).problems
    assert [(p.file, p.kind) for p in problems] == [(PLUGIN_FILE, "bad-signature")]


def test_lock_refuses_a_source_that_changed(
    oci_world: World, plugin_world: dict[str, Path], tmp_path: Path
) -> None:
    document = yaml.safe_load(plugin_world["platform"].read_text())
    document["difyPlugins"][0]["sha256"] = "sha256:" + "0" * 64
    platform = tmp_path / "platform.yaml"
    platform.write_text(yaml.safe_dump(document, sort_keys=False))
    args = ["lock", "--platform", str(platform), "-o", str(tmp_path / "lock.yaml"), "--skip-models"]
    assert main([*args, *oci_world.cli_sources(), *_plugin_args(plugin_world)]) == 2
    assert not (tmp_path / "lock.yaml").exists()


def test_build_without_the_plugin_key_fails_early(
    oci_world: World, plugin_bundle: Path, plugin_world: dict[str, Path], tmp_path: Path
) -> None:
    args = ["build", "--lock", str(plugin_bundle / "platform.lock.yaml"), "-o", str(tmp_path / "b")]
    args += ["--key", str(oci_world.private_key)]
    assert main([*args, *oci_world.cli_sources(), *_plugin_args(plugin_world)]) == 2
    assert not (tmp_path / "b").exists()


def test_lock_checks_the_source_signature_when_asked(
    oci_world: World, plugin_world: dict[str, Path], tmp_path: Path
) -> None:
    generate_plugin_keypair(tmp_path / "market.key", tmp_path / "market.pub")
    entries = read_package(zip_files(plugin_files())).entries
    signed = write_signed(entries, load_plugin_private_key(tmp_path / "market.key"), "community")
    sources = tmp_path / "plugins"
    sources.mkdir()
    (sources / "echo_tool-0.0.1.difypkg").write_bytes(signed)
    document = yaml.safe_load(plugin_world["platform"].read_text())
    document["difyPlugins"][0]["sha256"] = "sha256:" + hashlib.sha256(signed).hexdigest()
    platform = tmp_path / "platform.yaml"
    platform.write_text(yaml.safe_dump(document, sort_keys=False))
    base = ["lock", "--platform", str(platform), "--skip-models", *oci_world.cli_sources()]
    base += [
        "--dify-plugins-dir",
        str(sources),
        "--dify-plugin-wheels",
        str(plugin_world["wheels"]),
    ]
    good = tmp_path / "good.yaml"
    assert (
        main([*base, "-o", str(good), "--dify-plugin-source-key", str(tmp_path / "market.pub")])
        == 0
    )
    assert load_lockfile(good).dify_plugins[0].source_verified is True
    bad = [
        "-o",
        str(tmp_path / "bad.yaml"),
        "--dify-plugin-source-key",
        str(plugin_world["public"]),
    ]
    assert main([*base, *bad]) == 2


def test_sbom_lists_the_resigned_plugin_its_source_and_its_wheels(
    plugin_world: dict[str, Path], plugin_bundle: Path
) -> None:
    from sbom_check import check_cyclonedx_15

    sbom = json.loads((plugin_bundle / "sbom.cdx.json").read_text())
    check_cyclonedx_15(sbom)
    (plugin,) = [c for c in sbom["components"] if c["bom-ref"].startswith("dify-plugin:")]
    shipped = hashlib.sha256((plugin_bundle / PLUGIN_FILE).read_bytes()).hexdigest()
    source = (plugin_world["sources"] / "echo_tool-0.0.1.difypkg").read_bytes()
    assert (plugin["type"], plugin["name"], plugin["version"]) == (
        "application",
        "llmflow/echo_tool",
        "0.0.1",
    )
    assert plugin["hashes"] == [{"alg": "SHA-256", "content": shipped}]
    assert plugin["purl"] == f"pkg:generic/llmflow/echo_tool@0.0.1?checksum=sha256:{shipped}"
    (ancestor,) = plugin["pedigree"]["ancestors"]
    assert ancestor["hashes"] == [{"alg": "SHA-256", "content": hashlib.sha256(source).hexdigest()}]
    index = json.loads((plugin_bundle / "dify-plugins/index.json").read_text())
    props = {p["name"]: p["value"] for p in plugin["properties"]}
    assert props["llmflow:dify-unique-identifier"] == index["plugins"][0]["uniqueIdentifier"]
    assert props["llmflow:bundle-file"] == PLUGIN_FILE
    (wheel,) = plugin["components"]
    wheel_file = next((plugin_world["wheels"] / "llmflow__echo_tool-0.0.1").glob("*.whl"))
    assert (wheel["type"], wheel["name"], wheel["version"]) == (
        "library",
        "llmflow-echo-dep",
        "0.1.0",
    )
    assert wheel["hashes"][0]["content"] == hashlib.sha256(wheel_file.read_bytes()).hexdigest()
    assert wheel["purl"].startswith("pkg:pypi/llmflow-echo-dep@0.1.0?file_name=")
