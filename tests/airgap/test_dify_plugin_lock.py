"""`lock` fetches Dify plugins named like images (author/name/version, `source: marketplace`)
from a marketplace served on loopback, accepts them only when their signature verifies with
the "official" key the operator passes (a test key here; the real one is the plugin daemon's
`pkg/license/public_key/PUBLIC_KEY.pem`), records sha256, size and signer, and `build` holds
the package to that sha256. The shipped platform.yaml names the gateway's model provider
plugin, and the offline commands never fetch it."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from dify_plugin_fake import daemon_verify, make_wheel, plugin_files, zip_files
from local_server import LocalServer
from oci_world import World
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llmflow_airgap.cli import main
from llmflow_airgap.difyplugin import (
    generate_plugin_keypair,
    load_plugin_private_key,
    read_package,
    write_signed,
)
from llmflow_airgap.difyplugin_bundle import marketplace_download_url
from llmflow_airgap.lockfile import load_lockfile
from llmflow_airgap.platform import load_platform

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI missing")

MARKETPLACE = "https://marketplace.dify.ai"
DOWNLOAD = f"{MARKETPLACE}/api/v1/plugins/llmflow/echo_tool/0.0.1/download"
CACHED = "llmflow-echo_tool_0.0.1.difypkg"
DER = ("-outform", "DER")


class Marketplace(LocalServer):
    """Dify's marketplace download route, `GET /api/v1/plugins/{org}/{name}/{version}/download`
    (langgenius/dify api/core/helper/marketplace.py `get_plugin_pkg_url`), serving whatever
    package the test puts under an identity, and recording the paths it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.packages: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.app = Starlette(
            routes=[Route("/api/v1/plugins/{org}/{name}/{version}/download", self._download)]
        )

    async def _download(self, request: Request) -> Response:
        params = request.path_params
        self.requests.append(request.url.path)
        body = self.packages.get(f"{params['org']}/{params['name']}:{params['version']}")
        if body is None:
            return Response(b'{"code": "not_found"}', status_code=404)
        return Response(body, media_type="application/octet-stream")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plugin-keys")
    generate_plugin_keypair(root / "official.key", root / "official.pub")
    generate_plugin_keypair(root / "other.key", root / "other.pub")
    generate_plugin_keypair(root / "ours.key", root / "ours.pub")
    return {p.stem + p.suffix.replace(".", "_"): p for p in root.iterdir()}


def _signed(key: Path) -> bytes:
    entries = read_package(zip_files(plugin_files())).entries
    return write_signed(entries, load_plugin_private_key(key), "community", created_at=1767225600)


@pytest.fixture
def market() -> Iterator[Marketplace]:
    server = Marketplace()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def plugin_dirs(tmp_path: Path) -> dict[str, Path]:
    wheels = tmp_path / "plugin-wheels"
    make_wheel(wheels / "llmflow__echo_tool-0.0.1", "llmflow-echo-dep", "0.1.0", "ECHO = 1\n")
    sources = tmp_path / "plugins"
    sources.mkdir()
    return {"wheels": wheels, "sources": sources}


def _platform(world: World, tmp_path: Path, **extra: Any) -> Path:
    document = yaml.safe_load(world.platform_file.read_text())
    # the way platform.yaml names a marketplace plugin: no hash, `source` left at its default
    document["difyPlugins"] = [
        {"id": "llmflow/echo_tool", "version": "0.0.1", "purpose": "test tool plugin", **extra}
    ]
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _lock(
    world: World,
    platform: Path,
    out: Path,
    dirs: dict[str, Path],
    market: Marketplace,
    *source_keys: Path,
) -> int:
    args = ["lock", "--platform", str(platform), "-o", str(out), "--skip-models"]
    args += [*world.cli_sources(), "--dify-plugins-dir", str(dirs["sources"])]
    args += ["--dify-plugin-wheels", str(dirs["wheels"])]
    args += ["--dify-plugin-mirror", f"{MARKETPLACE}={market.url}"]
    for key in source_keys:
        args += ["--dify-plugin-source-key", str(key)]
    return main(args)


def _openssl_fingerprint(public_pem: Path) -> str:
    """The key's SubjectPublicKeyInfo digest as openssl computes it (independent of us)."""
    der = subprocess.run(
        ["openssl", "rsa", "-RSAPublicKey_in", "-in", str(public_pem), "-pubout", *DER],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    return "sha256:" + hashlib.sha256(der).hexdigest()


def test_download_url_is_the_one_dify_builds() -> None:
    assert marketplace_download_url("langgenius/openai_api_compatible", "0.0.63") == (
        "https://marketplace.dify.ai/api/v1/plugins/langgenius/openai_api_compatible/0.0.63/download"
    )
    assert marketplace_download_url("a/b", "1.0.0", "http://mirror/dify/") == (
        "http://mirror/dify/api/v1/plugins/a/b/1.0.0/download"
    )


def test_lock_downloads_verifies_and_records_the_signer_and_build_keeps_to_it(
    oci_world: World,
    keys: dict[str, Path],
    market: Marketplace,
    plugin_dirs: dict[str, Path],
    tmp_path: Path,
) -> None:
    package = _signed(keys["official_key"])
    market.packages["llmflow/echo_tool:0.0.1"] = package
    lock_path = tmp_path / "platform.lock.yaml"
    platform = _platform(oci_world, tmp_path)
    assert _lock(oci_world, platform, lock_path, plugin_dirs, market, keys["official_pub"]) == 0

    (plugin,) = load_lockfile(lock_path).dify_plugins
    assert (plugin.source, plugin.url) == ("marketplace", DOWNLOAD)
    assert plugin.sha256 == "sha256:" + hashlib.sha256(package).hexdigest()
    assert plugin.size == len(package)
    assert plugin.source_verified is True
    assert plugin.source_signer == _openssl_fingerprint(keys["official_pub"])
    assert plugin.source_signed_at == 1767225600
    assert market.requests == ["/api/v1/plugins/llmflow/echo_tool/0.0.1/download"]
    # kept for build under the marketplace's own file name
    assert (plugin_dirs["sources"] / CACHED).read_bytes() == package

    # build reads the kept copy (the marketplace is gone) and re-signs it with our key
    market.stop()
    bundle = tmp_path / "bundle"
    args = ["build", "--lock", str(lock_path), "-o", str(bundle)]
    args += ["--key", str(oci_world.private_key), "--dify-plugin-key", str(keys["ours_key"])]
    args += [*oci_world.cli_sources(), "--dify-plugins-dir", str(plugin_dirs["sources"])]
    args += ["--dify-plugin-wheels", str(plugin_dirs["wheels"])]
    assert main(args) == 0
    shipped = (bundle / "dify-plugins/llmflow-echo_tool-0.0.1.difypkg").read_bytes()
    assert daemon_verify(shipped, [keys["ours_pub"]]) == (True, "")
    assert main(["verify", str(bundle), "--public-key", str(oci_world.public_key)]) == 0

    # a kept copy that changed after lock is refused by build: the lockfile's sha256 rules
    tampered = bytearray(package)
    tampered[len(tampered) // 2] ^= 0x01
    (plugin_dirs["sources"] / CACHED).write_bytes(bytes(tampered))
    args[args.index(str(bundle))] = str(tmp_path / "bundle2")
    assert main(args) == 2
    assert not (tmp_path / "bundle2" / "dify-plugins").exists()


def test_lock_refuses_a_package_signed_with_another_key(
    oci_world: World,
    keys: dict[str, Path],
    market: Marketplace,
    plugin_dirs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    market.packages["llmflow/echo_tool:0.0.1"] = _signed(keys["other_key"])
    out = tmp_path / "lock.yaml"
    platform = _platform(oci_world, tmp_path)
    assert _lock(oci_world, platform, out, plugin_dirs, market, keys["official_pub"]) == 2
    assert "signature does not verify" in capsys.readouterr().err
    assert not out.exists()
    assert not (plugin_dirs["sources"] / CACHED).exists()  # nothing refused is kept


def test_lock_refuses_an_unsigned_or_tampered_package(
    oci_world: World,
    keys: dict[str, Path],
    market: Marketplace,
    plugin_dirs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    platform = _platform(oci_world, tmp_path)
    official = keys["official_pub"]
    market.packages["llmflow/echo_tool:0.0.1"] = zip_files(plugin_files())
    assert _lock(oci_world, platform, tmp_path / "a.yaml", plugin_dirs, market, official) == 2
    assert "holds no signature" in capsys.readouterr().err

    # one file of a genuinely signed package changed, its signature comment kept
    signed = read_package(_signed(keys["official_key"]))
    files = {e.name: e.data for e in signed.entries}
    files["main.py"] = files["main.py"].replace(b"plugin.run()", b"plugin.run( )")
    market.packages["llmflow/echo_tool:0.0.1"] = zip_files(files, signed.comment)
    assert _lock(oci_world, platform, tmp_path / "b.yaml", plugin_dirs, market, official) == 2
    assert "signature does not verify" in capsys.readouterr().err
    assert not (tmp_path / "a.yaml").exists() and not (tmp_path / "b.yaml").exists()


def test_a_sha256_in_platform_yaml_must_match_too(
    oci_world: World,
    keys: dict[str, Path],
    market: Marketplace,
    plugin_dirs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    package = _signed(keys["official_key"])
    market.packages["llmflow/echo_tool:0.0.1"] = package
    digest = "sha256:" + hashlib.sha256(package).hexdigest()
    # validly signed, but not the bytes platform.yaml pins: refused
    wrong = _platform(oci_world, tmp_path, sha256="sha256:" + "0" * 64)
    out = tmp_path / "wrong.lock.yaml"
    assert _lock(oci_world, wrong, out, plugin_dirs, market, keys["official_pub"]) == 2
    assert f"hashes to {digest}, platform.yaml says sha256:000" in capsys.readouterr().err
    assert not out.exists()
    # the right one with the key: accepted
    right = _platform(oci_world, tmp_path, sha256=digest)
    good = tmp_path / "good.lock.yaml"
    assert _lock(oci_world, right, good, plugin_dirs, market, keys["official_pub"]) == 0
    assert load_lockfile(good).dify_plugins[0].sha256 == digest


def test_without_a_key_only_a_pinned_sha256_vouches_for_a_package(
    oci_world: World,
    keys: dict[str, Path],
    market: Marketplace,
    plugin_dirs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    package = _signed(keys["other_key"])
    market.packages["llmflow/echo_tool:0.0.1"] = package
    out = tmp_path / "a.lock.yaml"
    assert _lock(oci_world, _platform(oci_world, tmp_path), out, plugin_dirs, market) == 2
    assert "nothing vouches for" in capsys.readouterr().err
    assert not out.exists()
    pinned = _platform(oci_world, tmp_path, sha256="sha256:" + hashlib.sha256(package).hexdigest())
    assert _lock(oci_world, pinned, out, plugin_dirs, market) == 0
    (plugin,) = load_lockfile(out).dify_plugins
    assert plugin.source_verified is False and plugin.source_signer is None


def test_shipped_platform_names_the_gateway_provider_plugin(repo_root: Path) -> None:
    platform = load_platform(repo_root / "platform" / "platform.yaml")
    plugins = {p.id: p for p in platform.dify_plugins}
    provider = yaml.safe_load((repo_root / "platform/dify/model-providers.yaml").read_text())
    plugin = plugins["langgenius/openai_api_compatible"]
    # the version model-providers.yaml and docs/dify.md were checked against
    assert plugin.version == str(provider["plugin_version"]) == "0.0.63"
    assert plugin.source == "marketplace" and plugin.sha256 is None


def test_offline_commands_never_fetch_the_shipped_plugins(
    repo_root: Path, charts_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """validate and plan (no lockfile) read the shipped platform.yaml without any HTTP."""

    def no_network(*args: object, **kwargs: object) -> httpx.Response:
        raise AssertionError(f"offline command made an HTTP request: {args[1:]}")

    monkeypatch.setattr(httpx.Client, "send", no_network)
    platform = repo_root / "platform" / "platform.yaml"
    assert main(["validate", "--platform", str(platform), "--charts-dir", str(charts_dir)]) == 0
    assert main(["plan", "--platform", str(platform), "--work-dir", str(tmp_path / "w")]) == 0


def test_committed_lock_schema_matches_the_model(repo_root: Path) -> None:
    from llmflow_airgap.lockfile import lockfile_json_schema

    committed = json.loads((repo_root / "platform" / "platform.lock.schema.json").read_text())
    assert committed == lockfile_json_schema(), (
        "run: llmflow-airgap schema --lock -o platform/platform.lock.schema.json"
    )
    plugin = committed["$defs"]["LockedDifyPlugin"]["properties"]
    assert {"url", "sourceSigner", "sourceSignedAt"} <= set(plugin)
