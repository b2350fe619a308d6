"""The pieces of `install` on their own: the air-gap overlay rewrite, health gates, the Helm
binary driver's command line."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_kube import FakeKubeAPI, deployment, endpoints, healthy_cluster
from install_world import write_fake_helm

from llmflow_airgap.gates import GateFailed, GateSpec, wait_for
from llmflow_airgap.helm.base import HelmError, ReleaseSpec
from llmflow_airgap.helm.binary import BinaryHelmDriver
from llmflow_airgap.kube import KubeClient, load_kubeconfig
from llmflow_airgap.lockfile import LockedImage
from llmflow_airgap.overlay import OverlayError, pin_images
from llmflow_airgap.platform import HealthCheck

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
SITE = "10.0.0.5:5000"
HOLDER = "registry.llmflow.internal"


def _locked(reference: str, digest: str) -> LockedImage:
    repository, tag = reference.rsplit(":", 1)
    return LockedImage(
        reference=reference,
        repository=repository,
        tag=tag,
        digest=digest,
        mediaType="application/vnd.oci.image.index.v1+json",
        size=100,
        components=["x"],
    )


LOCK = [
    _locked("docker.io/langgenius/dify-api:1.14.2", D1),
    _locked("nvcr.io/nvidia/k8s-device-plugin:v0.18.1", D2),
]


def test_overlay_moves_every_spelling_to_the_site_and_pins_the_digest() -> None:
    values: dict[str, Any] = {
        "api": {"image": {"repository": f"{HOLDER}/langgenius/dify-api", "tag": "1.14.2"}},
        "split": {
            "image": {"registry": HOLDER, "repository": "langgenius/dify-api", "tag": "1.14.2"}
        },
        "withDigestField": {
            "image": {"repository": f"{HOLDER}/langgenius/dify-api", "tag": "1.14.2", "digest": ""}
        },
        "plain": {"image": f"{HOLDER}/langgenius/dify-api:1.14.2"},
        "pinned": {"image": f"{HOLDER}/langgenius/dify-api:1.14.2@{D1}"},
        "nvidia": {
            "repository": f"{HOLDER}/nvidia",
            "image": "k8s-device-plugin",
            "version": "v0.18.1",
        },
        "list": [{"image": f"{HOLDER}/langgenius/dify-api:1.14.2"}],
        "upstream": {"image": "docker.io/library/busybox:1.38.0"},
        "untagged": {"image": {"repository": f"{HOLDER}/langgenius/dify-api", "pullPolicy": "X"}},
    }
    out, rewrites = pin_images(values, LOCK, HOLDER, SITE)
    assert out["api"]["image"] == {
        "repository": f"{SITE}/langgenius/dify-api",
        "tag": f"1.14.2@{D1}",
    }
    assert out["split"]["image"] == {
        "registry": SITE,
        "repository": "langgenius/dify-api",
        "tag": f"1.14.2@{D1}",
    }
    assert out["withDigestField"]["image"]["digest"] == D1
    assert out["withDigestField"]["image"]["tag"] == "1.14.2"
    assert out["plain"]["image"] == f"{SITE}/langgenius/dify-api:1.14.2@{D1}"
    assert out["pinned"]["image"] == f"{SITE}/langgenius/dify-api:1.14.2@{D1}"
    assert out["nvidia"] == {
        "repository": f"{SITE}/nvidia",
        "image": "k8s-device-plugin",
        "version": f"v0.18.1@{D2}",
    }
    assert out["list"][0]["image"] == f"{SITE}/langgenius/dify-api:1.14.2@{D1}"
    assert out["upstream"] == values["upstream"]  # other registries: validate's business
    assert values["api"]["image"]["repository"].startswith(HOLDER)  # input not mutated
    assert len(rewrites) == 7


def test_overlay_refuses_a_stale_digest_and_an_unlocked_image() -> None:
    stale = {"image": f"{HOLDER}/langgenius/dify-api:1.14.2@{D2}"}
    with pytest.raises(OverlayError, match="stale"):
        pin_images(stale, LOCK, HOLDER, SITE)
    unknown = {"image": {"repository": f"{HOLDER}/langgenius/dify-web", "tag": "1.14.2"}}
    with pytest.raises(OverlayError, match="not in the lockfile"):
        pin_images(unknown, LOCK, HOLDER, SITE)


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[tuple[FakeKubeAPI, KubeClient]]:
    api = FakeKubeAPI(tmp_path / "kube", routes=healthy_cluster()).start()
    client = KubeClient(load_kubeconfig(api.kubeconfig(tmp_path / "kubeconfig")))
    try:
        yield api, client
    finally:
        client.close()
        api.stop()


def _gate(kind: str, target: str, **extra: Any) -> GateSpec:
    check = HealthCheck.model_validate({"kind": kind, "target": target, **extra})
    return GateSpec("c", "ns", check)


def test_rollout_gate_waits_for_every_replica(kube: tuple[FakeKubeAPI, KubeClient]) -> None:
    api, client = kube
    states = iter([deployment("web", "ns", 3, 1), deployment("web", "ns", 3, 2)])
    path = "/apis/apps/v1/namespaces/ns/deployments/web"

    def progress() -> tuple[int, dict[str, Any]]:
        return 200, next(states, deployment("web", "ns", 3, 3))

    api.routes[path] = progress
    waits: list[str] = []
    seen = wait_for(
        client, _gate("rollout", "deployment/web"), sleep=lambda _: None, on_wait=waits.append
    )
    assert seen.startswith("3/3 available")
    assert waits == ["1/3 available, 1 updated, 3 total", "2/3 available, 2 updated, 3 total"]


def test_gates_time_out_with_what_they_last_saw(kube: tuple[FakeKubeAPI, KubeClient]) -> None:
    api, client = kube
    clock = iter(float(t) for t in range(0, 1000, 7))
    with pytest.raises(GateFailed, match="does not exist"):
        wait_for(
            client,
            _gate("rollout", "statefulset/db", timeoutSeconds=20),
            sleep=lambda _: None,
            clock=lambda: next(clock),
        )
    api.routes["/api/v1/namespaces/ns/endpoints/db"] = endpoints("db", "ns", 5432, 0)
    with pytest.raises(GateFailed, match="0 ready endpoint"):
        wait_for(
            client,
            _gate("tcp", "service/db", port=5432, timeoutSeconds=10),
            sleep=lambda _: None,
            clock=lambda: next(clock),
        )
    api.routes["/api/v1/namespaces/ns/endpoints/db"] = endpoints("db", "ns", 5432, 2)
    assert "2 ready endpoint" in wait_for(client, _gate("tcp", "service/db", port=5432))


def test_http_gate_goes_through_the_service_proxy(kube: tuple[FakeKubeAPI, KubeClient]) -> None:
    api, client = kube
    proxy = "/api/v1/namespaces/ns/services/api:5001/proxy/health"
    api.routes[proxy] = {"status": "ok"}
    gate = _gate("http", "service/api", port=5001, path="/health")
    assert "HTTP 200" in wait_for(client, gate, sleep=lambda _: None)
    assert proxy in api.requests


def test_binary_driver_runs_helm_upgrade_install_atomic_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helm = write_fake_helm(tmp_path / "tools" / "helm")
    record = tmp_path / "record"
    record.mkdir()
    monkeypatch.setenv("HELM_RECORD", str(record))
    driver = BinaryHelmDriver(helm, tmp_path / "work", tmp_path / "kubeconfig", "site")
    values = {"image": {"repository": f"{SITE}/llmflowtest/web", "tag": f"1.0@{D1}"}}
    spec = ReleaseSpec("web", "ns", tmp_path / "webapp-0.3.0.tgz", values, timeout_s=900)
    info = driver.upgrade_install(spec)
    assert (info.revision, info.status, info.chart) == (3, "deployed", "webapp-0.3.0")
    args = (record / "args").read_text().split("\n")
    assert args[:4] == ["upgrade", "--install", "web", str(tmp_path / "webapp-0.3.0.tgz")]
    for flag in ("--atomic", "--wait", "--create-namespace"):
        assert flag in args
    assert args[args.index("--timeout") + 1] == "900s"
    assert args[args.index("--kubeconfig") + 1] == str(tmp_path / "kubeconfig")
    assert json.loads((record / "values").read_text()) == values
    assert not any("token" in a for a in args)
    monkeypatch.setenv("HELM_FAIL", "1")
    with pytest.raises(HelmError, match="context deadline exceeded"):
        driver.upgrade_install(spec)
    assert os.environ["HELM_RECORD"] == str(record)


def test_every_real_overlay_pins_every_image(repo_root: Path) -> None:
    """The checked-in values of every component and profile pass through the rewrite: each
    image at the stand-in host ends up at the site by digest, none is unknown."""
    import hashlib

    from llmflow_airgap.images import images_in_values
    from llmflow_airgap.platform import Profile, load_platform
    from llmflow_airgap.values import coalesce, load_values

    platform = load_platform(repo_root / "platform" / "platform.yaml")
    lock: dict[str, LockedImage] = {}
    for component in platform.components:
        for ref in component.image_refs():
            digest = "sha256:" + hashlib.sha256(str(ref).encode()).hexdigest()
            lock.setdefault(str(ref), _locked(str(ref), digest))
    for profile in Profile:
        for component in platform.install_order():
            if profile not in component.profiles:
                continue
            merged: dict[str, Any] = {}
            for rel in component.values.layered(profile):
                merged = coalesce(merged, load_values(repo_root / rel))
            out, rewrites = pin_images(merged, lock.values(), platform.registry.host, SITE)
            assert rewrites, f"{profile} {component.name}: no image pinned"
            for path, ref in images_in_values(out):
                where = f"{profile} {component.name} {path}"
                assert platform.registry.host not in ref, where
                if ref.startswith(SITE):
                    assert "@sha256:" in ref, where
