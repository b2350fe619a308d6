"""`llmflow dify plugins install` against a replay of Dify 1.14.2's plugin console endpoints
(`dify_plugin_fake`): upload → install → task polling (pending/running/success/failed) →
confirmation, idempotence, refused signatures, timeouts, and the CLI."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from dify_plugin_fake import (
    DifyPluginFake,
    daemon_unique_identifier,
    make_wheel,
    plugin_files,
    zip_files,
)
from typer.testing import CliRunner

from llmflow.commands_dify_plugins import register
from llmflow.dify.client import DifyConsole
from llmflow.dify.plugins import PluginInstaller, PluginInstallError, read_plugin_dir
from llmflow_airgap.difyplugin import (
    generate_plugin_keypair,
    load_plugin_private_key,
    package_file_name,
    repackage,
)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI missing")

ADMIN_KEY = "admin-key-for-tests"
WORKSPACE = "0b5c1f3e-6a0f-4f0e-9d51-3d1c4b8c2a10"
BASE = "/console/api/workspaces/current/plugin"


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plugin-install")
    generate_plugin_keypair(root / "ours.key", root / "ours.pub")
    generate_plugin_keypair(root / "other.key", root / "other.pub")
    wheel = make_wheel(root / "wheels", "llmflow-echo-dep", "0.1.0", "ECHO = 1\n")
    key = load_plugin_private_key(root / "ours.key")
    plugins = root / "dify-plugins"
    plugins.mkdir()
    index = []
    for name in ("echo_tool", "second_tool"):
        source = zip_files(plugin_files(name=name))
        result = repackage(source, [(wheel.name, wheel.read_bytes())], key)
        file = package_file_name(result.plugin_id, result.version)
        (plugins / file).write_bytes(result.data)
        index.append(
            {
                "id": result.plugin_id,
                "version": result.version,
                "file": file,
                "uniqueIdentifier": result.unique_identifier,
            }
        )
    (plugins / "index.json").write_text(json.dumps({"plugins": index}))
    return {"dir": plugins, "public": root / "ours.pub", "other_public": root / "other.pub"}


@pytest.fixture
def fake(material: dict[str, Path]) -> Iterator[DifyPluginFake]:
    server = DifyPluginFake(ADMIN_KEY, WORKSPACE, [material["public"]])
    server.start()
    yield server
    server.stop()


def _installer(url: str, key: str = ADMIN_KEY, **kwargs: float) -> PluginInstaller:
    console = DifyConsole.with_admin_key(url, key, WORKSPACE)
    return PluginInstaller(console, poll_interval_s=0.01, **kwargs)


async def test_install_polls_the_task_and_confirms(
    fake: DifyPluginFake, material: dict[str, Path]
) -> None:
    installer = _installer(fake.url)
    report = await installer.install_directory(material["dir"])
    await installer.console.aclose()
    expected = {p.unique_identifier for p in read_plugin_dir(material["dir"])}
    assert {o.unique_identifier for o in report.outcomes} == expected
    assert all(o.action == "installed" for o in report.outcomes)
    assert set(fake.installed) == expected
    assert report.polls == 3  # pending, running, success
    paths = [path for _, path in fake.calls]
    assert paths[0] == f"{BASE}/list"
    assert paths[1:3] == [f"{BASE}/upload/pkg"] * 2
    assert paths[3] == f"{BASE}/install/pkg"
    assert paths[4:7] == [f"{BASE}/tasks/{report.task_id}"] * 3
    assert paths[7] == f"{BASE}/list"


async def test_second_run_is_idempotent(fake: DifyPluginFake, material: dict[str, Path]) -> None:
    first = _installer(fake.url)
    await first.install_directory(material["dir"])
    await first.console.aclose()
    fake.calls.clear()
    second = _installer(fake.url)
    report = await second.install_directory(material["dir"])
    await second.console.aclose()
    assert [o.action for o in report.outcomes] == ["already-installed"] * 2
    assert [path for _, path in fake.calls] == [f"{BASE}/list"]


async def test_failed_task_is_reported(material: dict[str, Path]) -> None:
    fake = DifyPluginFake(
        ADMIN_KEY, WORKSPACE, [material["public"]], fail_plugins={"llmflow/second_tool"}
    )
    fake.start()
    try:
        installer = _installer(fake.url)
        with pytest.raises(PluginInstallError, match=r"second_tool.*failed to init environment"):
            await installer.install_directory(material["dir"])
        await installer.console.aclose()
        assert not fake.installed
    finally:
        fake.stop()


async def test_task_that_never_ends_times_out(material: dict[str, Path]) -> None:
    fake = DifyPluginFake(ADMIN_KEY, WORKSPACE, [material["public"]], task_script=["pending"])
    fake.start()
    try:
        installer = _installer(fake.url, timeout_s=0.2)
        with pytest.raises(PluginInstallError, match="still pending after"):
            await installer.install_directory(material["dir"])
        await installer.console.aclose()
    finally:
        fake.stop()


async def test_untrusted_signature_is_refused_at_upload(material: dict[str, Path]) -> None:
    fake = DifyPluginFake(ADMIN_KEY, WORKSPACE, [material["other_public"]])
    fake.start()
    try:
        installer = _installer(fake.url)
        with pytest.raises(PluginInstallError, match=r"400 plugin_error.*bad signature"):
            await installer.install_directory(material["dir"])
        await installer.console.aclose()
        assert not fake.uploaded and not fake.installed
    finally:
        fake.stop()


async def test_package_that_is_not_the_indexed_one_is_refused(
    fake: DifyPluginFake, material: dict[str, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "dify-plugins"
    shutil.copytree(material["dir"], copy)
    index = json.loads((copy / "index.json").read_text())
    first = index["plugins"][0]
    # swap in the other (also validly signed) package under the first one's name
    (copy / first["file"]).write_bytes((copy / index["plugins"][1]["file"]).read_bytes())
    installer = _installer(fake.url)
    with pytest.raises(PluginInstallError, match="bundle index says"):
        await installer.install_directory(copy)
    await installer.console.aclose()
    assert (
        daemon_unique_identifier((copy / first["file"]).read_bytes()) != first["uniqueIdentifier"]
    )


async def test_wrong_admin_key_is_unauthorized(
    fake: DifyPluginFake, material: dict[str, Path]
) -> None:
    installer = _installer(fake.url, key="not-the-key")
    with pytest.raises(PluginInstallError, match="401 unauthorized"):
        await installer.install_directory(material["dir"])
    await installer.console.aclose()


def test_cli_installs_and_prints_json(
    fake: DifyPluginFake, material: dict[str, Path], tmp_path: Path
) -> None:
    key_file = tmp_path / "admin-key"
    key_file.write_text(ADMIN_KEY + "\n")
    dify = typer.Typer()
    dify.command("sync")(lambda: None)  # the group another command module owns
    register(dify)

    def invoke(directory: Path) -> tuple[int, str]:
        args = ["plugins", "install", str(directory), "--console-url", fake.url]
        args += ["--admin-key-file", str(key_file), "--workspace-id", WORKSPACE]
        result = CliRunner().invoke(dify, [*args, "--poll-interval", "0.01", "--json"])
        return result.exit_code, result.stdout

    code, out = invoke(material["dir"])
    assert code == 0, out
    document = json.loads(out)
    assert document["ok"] is True
    assert {p["action"] for p in document["plugins"]} == {"installed"}
    code, out = invoke(material["dir"])
    assert code == 0 and {p["action"] for p in json.loads(out)["plugins"]} == {"already-installed"}
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.difypkg").write_bytes(b"not a zip")
    code, out = invoke(bad)
    assert code == 1 and json.loads(out)["ok"] is False
