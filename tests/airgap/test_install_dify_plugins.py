"""The install's Dify plugin steps: the plugin-signing Secret the daemon trusts, and
`post/dify-plugins/<ns>` installing the bundle's re-signed plugins through the console API.

The Dify side is the replay of Dify 1.14.2's plugin console endpoints shared with the glue's
tests (`tests/dify_plugin_fake.py`, which checks signatures with `openssl`, independently of
`llmflow_airgap.difyplugin`); the admin key comes from the `dify-credentials` Secret of the
Kubernetes API double (`fake_kube`).
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from dify_plugin_fake import DifyPluginFake, make_wheel, plugin_files, zip_files
from fake_kube import FakeKubeAPI, healthy_cluster

from llmflow_airgap.cli import main
from llmflow_airgap.dify_cluster import CREDENTIALS_SECRET, SIGNING_SECRET, PluginSigningKey
from llmflow_airgap.dify_plugin_install import DifyPluginInstallError, DifyPluginsStep
from llmflow_airgap.difyplugin import (
    generate_plugin_keypair,
    load_plugin_private_key,
    package_file_name,
    public_pem_of,
    repackage,
)
from llmflow_airgap.events import Reporter
from llmflow_airgap.install import PostInstallContext
from llmflow_airgap.kube import KubeClient, load_kubeconfig

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI missing")

ADMIN_KEY = "admin-key-from-the-secret"
WORKSPACE = "0b5c1f3e-6a0f-4f0e-9d51-3d1c4b8c2a10"
NS = "t-dept-hr"


@pytest.fixture(scope="module")
def bundle_plugins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A bundle's `dify-plugins/` as `build` lays it out: packages, index.json, public.pem."""
    root = tmp_path_factory.mktemp("bundle-plugins")
    generate_plugin_keypair(root / "ours.key", root / "ours.pub")
    key = load_plugin_private_key(root / "ours.key")
    wheel = make_wheel(root / "wheels", "llmflow-echo-dep", "0.1.0", "ECHO = 1\n")
    plugins = root / "bundle" / "dify-plugins"
    plugins.mkdir(parents=True)
    index = []
    for name in ("echo_tool", "second_tool"):
        result = repackage(
            zip_files(plugin_files(name=name)), [(wheel.name, wheel.read_bytes())], key
        )
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
    (plugins / "public.pem").write_bytes(public_pem_of(key))
    return {"dir": plugins, "public": root / "ours.pub"}


@pytest.fixture
def kube_api(tmp_path: Path) -> Iterator[FakeKubeAPI]:
    api = FakeKubeAPI(tmp_path / "kube", routes=healthy_cluster()).start()
    api.objects[f"/api/v1/namespaces/{NS}"] = {"metadata": {"name": NS}}
    api.objects[f"/api/v1/namespaces/{NS}/secrets/{CREDENTIALS_SECRET}"] = {
        "metadata": {"name": CREDENTIALS_SECRET, "namespace": NS},
        "data": {"ADMIN_API_KEY": base64.b64encode(ADMIN_KEY.encode()).decode()},
    }
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture
def dify(bundle_plugins: dict[str, Path]) -> Iterator[DifyPluginFake]:
    server = DifyPluginFake(ADMIN_KEY, WORKSPACE, [bundle_plugins["public"]])
    server.start()
    yield server
    server.stop()


def _context(kube: KubeClient, out: io.StringIO) -> PostInstallContext:
    # the step reads nothing from the plan
    return PostInstallContext(plan=cast(Any, None), kube=kube, reporter=Reporter(True, out=out))


def _step(url: str, plugins: Path) -> DifyPluginsStep:
    return DifyPluginsStep(NS, url, WORKSPACE, plugins, poll_interval_s=0, sleep=lambda _: None)


def test_plugins_install_through_the_console_and_a_rerun_skips_them(
    bundle_plugins: dict[str, Path], kube_api: FakeKubeAPI, dify: DifyPluginFake, tmp_path: Path
) -> None:
    access = load_kubeconfig(kube_api.kubeconfig(tmp_path / "kubeconfig"))
    index = json.loads((bundle_plugins["dir"] / "index.json").read_text())
    expected = {p["uniqueIdentifier"] for p in index["plugins"]}
    out = io.StringIO()
    step = _step(dify.url, bundle_plugins["dir"])
    assert step.name == f"dify-plugins/{NS}"
    assert "2 re-signed plugin(s)" in step.describe()
    with KubeClient(access) as kube:
        step.run(_context(kube, out))
        assert set(dify.installed) == expected
        installed = [json.loads(line) for line in out.getvalue().splitlines()]
        assert {e["uniqueIdentifier"] for e in installed} == expected
        assert all(e["event"] == "dify-plugin.installed" for e in installed)
        assert ADMIN_KEY not in out.getvalue()

        dify.calls.clear()
        step.run(_context(kube, io.StringIO()))
    # idempotent: only the list is read, nothing uploaded or installed again
    assert {path for _, path in dify.calls} == {"/console/api/workspaces/current/plugin/list"}


def test_a_wrong_admin_key_or_a_failed_plugin_stops_the_install(
    bundle_plugins: dict[str, Path], kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    access = load_kubeconfig(kube_api.kubeconfig(tmp_path / "kubeconfig"))
    other = DifyPluginFake("another-key", WORKSPACE, [bundle_plugins["public"]])
    other.start()
    try:
        with KubeClient(access) as kube, pytest.raises(DifyPluginInstallError, match="401"):
            _step(other.url, bundle_plugins["dir"]).run(_context(kube, io.StringIO()))
    finally:
        other.stop()
    failing = DifyPluginFake(
        ADMIN_KEY, WORKSPACE, [bundle_plugins["public"]], fail_plugins={"llmflow/second_tool"}
    )
    failing.start()
    try:
        with KubeClient(access) as kube, pytest.raises(DifyPluginInstallError, match="failed"):
            _step(failing.url, bundle_plugins["dir"]).run(_context(kube, io.StringIO()))
    finally:
        failing.stop()


def test_a_daemon_that_does_not_trust_our_key_refuses_the_upload(
    bundle_plugins: dict[str, Path], kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    generate_plugin_keypair(tmp_path / "x.key", tmp_path / "x.pub")
    untrusting = DifyPluginFake(ADMIN_KEY, WORKSPACE, [tmp_path / "x.pub"])
    untrusting.start()
    access = load_kubeconfig(kube_api.kubeconfig(tmp_path / "kubeconfig"))
    try:
        with KubeClient(access) as kube, pytest.raises(DifyPluginInstallError, match="signature"):
            _step(untrusting.url, bundle_plugins["dir"]).run(_context(kube, io.StringIO()))
    finally:
        untrusting.stop()
    assert untrusting.installed == {}


def test_the_signing_secret_carries_the_bundles_public_key(
    bundle_plugins: dict[str, Path], kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    pem = (bundle_plugins["dir"] / "public.pem").read_bytes()
    access = load_kubeconfig(kube_api.kubeconfig(tmp_path / "kubeconfig"))
    step = PluginSigningKey(NS, pem)
    with KubeClient(access) as kube:
        assert step.run(kube, lambda _: None)["created"] is True
    secret = kube_api.objects[f"/api/v1/namespaces/{NS}/secrets/{SIGNING_SECRET}"]
    # helm-values/dify mounts it at /app/keys and trusts /app/keys/public.pem
    assert base64.b64decode(secret["data"]["public.pem"]) == pem
    assert step.fingerprint() != PluginSigningKey(NS, pem + b"\n").fingerprint()


def test_cli_refuses_a_console_without_a_workspace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["install", str(tmp_path), "--registry", "site.example:5000", "--dry-run"]
    assert main([*args, "--dify-console", f"{NS}=http://dify.example"]) == 2
    assert "without a workspace id: t-dept-hr" in capsys.readouterr().err
