"""`install`: plan, preflight, pushes, releases in order with pinned images, gates, resume.

Real: the source and site registries (docker-registry), the chart (packaged and rendered by
helm-python-sdk), the bundle (lock + build of `install_world`). Doubles: the Kubernetes API
(`fake_kube`, replaying documented responses over HTTPS) and the Helm driver's cluster side
(`RecordingDriver` records releases; it renders with the real SDK so the values are checked
by Helm itself).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fake_kube import FakeKubeAPI, deployment, healthy_cluster, node, node_list, version_info
from install_world import CHART_NAME, CHART_VERSION, InstallWorld, build_install_world
from oci_world import LocalRegistry, World

from llmflow_airgap.cli import main
from llmflow_airgap.errors import AirgapError
from llmflow_airgap.events import Reporter
from llmflow_airgap.helm.base import HelmError, ReleaseInfo, ReleaseSpec
from llmflow_airgap.helm.sdk import SdkHelmDriver
from llmflow_airgap.install import (
    STATE_NAME,
    PlanRequest,
    PreflightFailed,
    build_plan,
    history_locks,
    run_install,
)
from llmflow_airgap.kube import KubeClient, KubernetesError, load_kubeconfig
from llmflow_airgap.lockfile import load_lockfile
from llmflow_airgap.manifests import ManifestError
from llmflow_airgap.platform import Profile
from llmflow_airgap.registry import RegistryClient


@pytest.fixture(scope="module")
def install_world(oci_world: World, tmp_path_factory: pytest.TempPathFactory) -> InstallWorld:
    return build_install_world(oci_world, tmp_path_factory.mktemp("install-world"))


@pytest.fixture
def site_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    registry = LocalRegistry(tmp_path / "site").start()
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture
def kube_api(tmp_path: Path) -> Iterator[FakeKubeAPI]:
    api = FakeKubeAPI(tmp_path / "kube", routes=healthy_cluster()).start()
    # Both components' workloads ready and health URLs answering (service proxy).
    for name, port in (("store", 8080), ("front", 3000)):
        api.routes[f"/apis/apps/v1/namespaces/llmflow-system/deployments/{name}"] = deployment(
            name, "llmflow-system", 1, 1
        )
        proxy = f"/api/v1/namespaces/llmflow-system/services/{name}:{port}/proxy/healthz"
        api.routes[proxy] = {"status": "ok"}
    try:
        yield api
    finally:
        api.stop()


class RecordingDriver:
    """Helm driver double: records every release; renders with the real helm-python-sdk."""

    name = "recording"

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[ReleaseSpec] = []
        self.rendered: dict[str, dict[str, str]] = {}
        self.fail_on = fail_on
        self._sdk = SdkHelmDriver()

    def upgrade_install(self, spec: ReleaseSpec) -> ReleaseInfo:
        self.calls.append(spec)
        if spec.name == self.fail_on:
            raise HelmError(f"helm upgrade --install {spec.name}: timed out waiting (test)")
        self.rendered[spec.name] = self._sdk.render(spec)
        return ReleaseInfo(
            spec.name, spec.namespace, 1, "deployed", f"{CHART_NAME}-{CHART_VERSION}"
        )

    def render(self, spec: ReleaseSpec) -> dict[str, str]:
        return self._sdk.render(spec)

    def release(self, name: str, namespace: str) -> ReleaseInfo | None:
        for spec in self.calls:
            if spec.name == name and spec.namespace == namespace:
                return ReleaseInfo(name, namespace, 1, "deployed", f"{CHART_NAME}-{CHART_VERSION}")
        return None


def _plan(world: InstallWorld, registry: str, work: Path) -> Any:
    return build_plan(
        PlanRequest(
            bundle=world.bundle,
            platform_file=world.platform_file,
            registry=registry,
            profile=Profile.MINIMAL,
            work_dir=work,
            min_free_bytes=1024,
        )
    )


def _images(manifests: dict[str, str]) -> list[str]:
    found = []
    for text in manifests.values():
        for document in yaml.safe_load_all(text):
            if not document:
                continue
            for container in document["spec"]["template"]["spec"]["containers"]:
                found.append(container["image"])
    return found


def _catalog(registry: LocalRegistry) -> list[str]:
    repositories: list[str] = httpx.get(f"{registry.url}/v2/_catalog").json()["repositories"]
    return repositories


def test_dry_run_prints_the_whole_plan_and_touches_nothing(
    install_world: InstallWorld,
    site_registry: LocalRegistry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # no --platform: the bundle's own distribution/ copy is used
    args = ["install", str(install_world.bundle), "--registry", site_registry.host]
    args += ["--profile", "minimal", "--work-dir", str(tmp_path / "work"), "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for check in ("kubernetes-version", "nodes-ready", "storage-class", "registry-writable"):
        assert f"  - {check}:" in out
    assert "gpu-allocatable" not in out  # the profile needs no GPU
    assert f"-> {site_registry.host}/llmflowtest/worker:1.0 (6 blobs, 3.0 MiB" in out
    assert f"chart/{CHART_NAME}-{CHART_VERSION} -> charts/{CHART_NAME}:{CHART_VERSION}" in out
    # dependency order although platform.yaml lists front first
    assert out.index("1. llmflow-system/store") < out.index("2. llmflow-system/front")
    assert "gate: http llmflow-system/service/front:3000/healthz" in out
    # namespaces before the releases, the other manifests after them; no ha-only file
    before = out.index("Namespaces, before the releases (server-side apply")
    after = out.index("Manifests, after every release (server-side apply")
    assert before < out.index("1. llmflow-system/store") < after
    assert (
        "      Namespace llmflow-system -> PATCH /api/v1/namespaces/llmflow-system"
        in out[before:after]
    )
    assert (
        "      NetworkPolicy llmflow-system/allow-dns -> PATCH /apis/networking.k8s.io/v1/"
        "namespaces/llmflow-system/networkpolicies/allow-dns" in out[after:]
    )
    assert "  manifests/platform/manifests/routes.yaml" in out[after:]
    assert "ha-autoscaling" not in out
    assert _catalog(site_registry) == []
    assert not (tmp_path / "work" / STATE_NAME).exists()
    assert (
        main(["verify", str(install_world.bundle), "--public-key", str(install_world.public_key)])
        == 0
    )
    capsys.readouterr()

    assert main([*args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [r["step"] for r in plan["releases"]] == [
        "release/llmflow-system/store",
        "release/llmflow-system/front",
    ]
    assert sum(i["bytes"] for i in plan["images"]) > 3 * 1024 * 1024
    assert [(m["step"], m["phase"], len(m["objects"])) for m in plan["manifests"]] == [
        ("manifests/policies/k8s/namespaces.yaml", "before-releases", 1),
        ("manifests/policies/k8s/networkpolicies/llmflow-system.yaml", "after-releases", 2),
        ("manifests/platform/manifests/routes.yaml", "after-releases", 1),
    ]


def test_rendered_charts_pull_every_image_from_the_site_by_digest(
    install_world: InstallWorld, site_registry: LocalRegistry, tmp_path: Path
) -> None:
    plan = _plan(install_world, site_registry.host, tmp_path)
    lock = load_lockfile(install_world.lockfile)
    locked = {i.repository.split("/", 1)[1]: i for i in lock.images}
    driver = SdkHelmDriver()
    seen = []
    for release in plan.releases:
        images = _images(driver.render(release.spec()))
        assert images, release.name
        for image in images:
            match = re.fullmatch(
                re.escape(site_registry.host) + r"/([a-z/]+):([\w.]+)@(sha256:[0-9a-f]{64})", image
            )
            assert match, f"{release.name}: {image} is not <site>/<path>:<tag>@<digest>"
            path, tag, digest = match.groups()
            assert locked[path].tag == tag and locked[path].digest == digest
            seen.append(image)
    # the pre-pinned sidecar kept its digest, the split registry/repository form was pinned
    assert f"{site_registry.host}/llmflowtest/web:1.0@{install_world.web_digest}" in seen
    assert any("/llmflowtest/api:2.0@sha256:" in image for image in seen)


def test_install_pushes_releases_in_order_and_gates(
    install_world: InstallWorld,
    site_registry: LocalRegistry,
    kube_api: FakeKubeAPI,
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    plan = _plan(install_world, site_registry.host, work)
    driver = RecordingDriver()
    access = load_kubeconfig(kube_api.kubeconfig(tmp_path / "kubeconfig"))
    with KubeClient(access) as kube:
        result = run_install(plan, work_dir=work, driver=driver, kube=kube, sleep=lambda _: None)
    assert all(c.ok for c in result.preflight)
    assert [c.name for c in driver.calls] == ["store", "front"]
    assert driver.calls[1].values["sidecar"]["image"].endswith(install_world.web_digest)
    # every rendered image exists at the site under exactly that digest
    with RegistryClient({site_registry.host: site_registry.url}) as client:
        for manifests in driver.rendered.values():
            for image in _images(manifests):
                name, _, digest = image.partition("@")
                repo = name.split("/", 1)[1].rsplit(":", 1)[0]
                assert client.manifest_exists(site_registry.host, repo, digest), image
    # the chart is an OCI artifact Helm itself can pull
    import helm_python as helm

    pulled = tmp_path / "pulled"
    pulled.mkdir()
    helm.pull(
        f"oci://{site_registry.host}/charts/{CHART_NAME}",
        version=CHART_VERSION,
        destination=pulled,
        plain_http=True,
    )
    archive = pulled / f"{CHART_NAME}-{CHART_VERSION}.tgz"
    assert archive.read_bytes() == (install_world.charts_dir / archive.name).read_bytes()
    state = json.loads((work / STATE_NAME).read_text())
    assert state["completedAt"] and state["profile"] == "minimal"
    assert list(state["steps"]) == [
        "push-images",
        f"chart/{CHART_NAME}-{CHART_VERSION}",
        "manifests/policies/k8s/namespaces.yaml",
        "release/llmflow-system/store",
        "gate/llmflow-system/store/1",
        "gate/llmflow-system/store/2",
        "release/llmflow-system/front",
        "gate/llmflow-system/front/1",
        "gate/llmflow-system/front/2",
        "manifests/policies/k8s/networkpolicies/llmflow-system.yaml",
        "manifests/platform/manifests/routes.yaml",
    ]
    assert "llmflow-airgap/preflight" not in json.dumps(state)
    assert len(history_locks(work)) == 1
    # the gates asked the API server for the workload and through the service proxy
    assert "/apis/apps/v1/namespaces/llmflow-system/deployments/front" in kube_api.requests
    assert "/api/v1/namespaces/llmflow-system/services/front:3000/proxy/healthz" in (
        kube_api.requests
    )


def test_resume_skips_finished_steps_and_redoes_the_failed_release(
    install_world: InstallWorld,
    site_registry: LocalRegistry,
    kube_api: FakeKubeAPI,
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    plan = _plan(install_world, site_registry.host, work)
    access = load_kubeconfig(kube_api.kubeconfig(tmp_path / "kubeconfig"))
    failing = RecordingDriver(fail_on="front")
    with KubeClient(access) as kube, pytest.raises(HelmError, match="front"):
        run_install(plan, work_dir=work, driver=failing, kube=kube, sleep=lambda _: None)
    steps = json.loads((work / STATE_NAME).read_text())["steps"]
    assert "release/llmflow-system/store" in steps
    assert "release/llmflow-system/front" not in steps

    driver = RecordingDriver()
    events: list[dict[str, Any]] = []

    class Capture:
        def write(self, text: str) -> None:
            events.extend(json.loads(line) for line in text.splitlines() if line)

        def flush(self) -> None:
            return

    reporter = Reporter(json_lines=True, out=Capture())  # type: ignore[arg-type]
    with KubeClient(access) as kube:
        result = run_install(
            plan,
            work_dir=work,
            driver=driver,
            kube=kube,
            resume=True,
            reporter=reporter,
            sleep=lambda _: None,
        )
    assert [c.name for c in driver.calls] == ["front"]
    assert "release/llmflow-system/store" in result.skipped
    assert "push-images" in result.skipped
    assert not any(e["event"] == "push.blob" for e in events)  # nothing pushed again
    assert json.loads((work / STATE_NAME).read_text())["completedAt"]


def test_preflight_failures_block_before_anything_is_pushed(
    install_world: InstallWorld,
    site_registry: LocalRegistry,
    kube_api: FakeKubeAPI,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kube_api.routes["/version"] = version_info(minor=27)
    kube_api.routes["/api/v1/nodes"] = node_list(node("node-0", ready=False))
    kube_api.routes["/apis/storage.k8s.io/v1/storageclasses"] = {
        "kind": "StorageClassList",
        "items": [],
    }
    args = ["install", str(install_world.bundle), "--registry", site_registry.host, "--json"]
    args += ["--platform", str(install_world.platform_file), "--profile", "minimal"]
    args += ["--work-dir", str(tmp_path / "work"), "--public-key", str(install_world.public_key)]
    args += ["--kubeconfig", str(kube_api.kubeconfig(tmp_path / "kubeconfig"))]
    assert main(args) == 1
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    failed = {e["check"] for e in events if e["event"] == "preflight.check" and not e["ok"]}
    assert failed == {"kubernetes-version", "nodes-ready", "storage-class"}
    assert not any(r.startswith("llmflowtest/") for r in _catalog(site_registry))
    assert not (tmp_path / "work" / STATE_NAME).exists()


def test_gpu_profile_needs_allocatable_gpus(
    install_world: InstallWorld, site_registry: LocalRegistry, kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    from llmflow_airgap.preflight import check_gpus

    access = load_kubeconfig(kube_api.kubeconfig(tmp_path / "kubeconfig"))
    with KubeClient(access) as kube:
        kube_api.routes["/api/v1/nodes"] = node_list(node("a", gpus=2), node("b", gpus=0))
        short = check_gpus(kube, 4, operator_in_plan=False)
        assert short.fails and "2 nvidia.com/gpu allocatable" in short.message
        deferred = check_gpus(kube, 4, operator_in_plan=True)
        assert deferred.deferred and not deferred.fails
        kube_api.routes["/api/v1/nodes"] = node_list(node("a", gpus=2), node("b", gpus=2))
        assert check_gpus(kube, 4, operator_in_plan=False).ok


def test_kubeconfig_with_a_wrong_token_or_no_token_is_refused(
    kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    access = load_kubeconfig(kube_api.kubeconfig(tmp_path / "bad", token="not-the-token"))
    with KubeClient(access) as kube, pytest.raises(KubernetesError, match="refused"):
        kube.version()
    document = yaml.safe_load((tmp_path / "bad").read_text())
    document["users"][0]["user"] = {"client-certificate-data": "AAAA"}
    (tmp_path / "cert-only").write_text(yaml.safe_dump(document))
    with pytest.raises(KubernetesError, match="no bearer token"):
        load_kubeconfig(tmp_path / "cert-only")


def test_platform_file_must_be_the_locked_one(install_world: InstallWorld, tmp_path: Path) -> None:
    changed = tmp_path / "platform" / "platform.yaml"
    changed.parent.mkdir()
    changed.write_text(install_world.platform_file.read_text() + "\n# edited\n")
    with pytest.raises(AirgapError, match=r"not the platform\.yaml the bundle was locked from"):
        build_plan(
            PlanRequest(
                bundle=install_world.bundle,
                platform_file=changed,
                registry="127.0.0.1:1",
                profile=Profile.MINIMAL,
                work_dir=tmp_path,
            )
        )


def test_preflight_failed_is_raised_by_run_install(
    install_world: InstallWorld, site_registry: LocalRegistry, kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    kube_api.routes["/apis/storage.k8s.io/v1/storageclasses"] = {
        "kind": "StorageClassList",
        "items": [{"metadata": {"name": "slow", "annotations": {}}}],
    }
    plan = _plan(install_world, site_registry.host, tmp_path / "work")
    access = load_kubeconfig(kube_api.kubeconfig(tmp_path / "kubeconfig"))
    with KubeClient(access) as kube, pytest.raises(PreflightFailed, match="no default"):
        run_install(plan, work_dir=tmp_path / "work", driver=RecordingDriver(), kube=kube)


def test_status_compares_the_site_with_the_bundle(
    install_world: InstallWorld,
    site_registry: LocalRegistry,
    kube_api: FakeKubeAPI,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from llmflow_airgap.status import bundle_status

    work = tmp_path / "work"
    args = ["status", str(install_world.bundle), "--work-dir", str(work)]
    assert main([*args, "--registry", site_registry.host]) == 1
    out = capsys.readouterr().out
    assert "Install state: none" in out and "0/3 images present" in out
    plan = _plan(install_world, site_registry.host, work)
    driver = RecordingDriver()
    access = load_kubeconfig(kube_api.kubeconfig(tmp_path / "kubeconfig"))
    with KubeClient(access) as kube:
        run_install(plan, work_dir=work, driver=driver, kube=kube, sleep=lambda _: None)
    report = bundle_status(install_world.bundle, work, site_registry.host, driver)
    assert report.up_to_date, report.lines
    assert [r["release"] for r in report.document["releases"]] == [
        "llmflow-system/front",
        "llmflow-system/store",
    ]
    assert all(r["cluster"]["status"] == "deployed" for r in report.document["releases"])
    assert main([*args, "--registry", site_registry.host, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["upToDate"] is True
    # the same state against a registry that lost the images
    empty = LocalRegistry(tmp_path / "empty").start()
    try:
        stale = bundle_status(install_world.bundle, work, empty.host)
    finally:
        empty.stop()
    assert not stale.up_to_date
    assert any("MISSING" in line for line in stale.lines)


def test_cli_install_with_a_token_the_ca_and_the_helm_binary_driver(
    install_world: InstallWorld,
    site_registry: LocalRegistry,
    kube_api: FakeKubeAPI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fake_kube import TOKEN
    from install_world import write_fake_helm

    record = tmp_path / "record"
    record.mkdir()
    monkeypatch.setenv("HELM_RECORD", str(record))
    helm = write_fake_helm(tmp_path / "bin" / "helm")
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "ca.pem").write_text(kube_api.ca_pem)
    work = tmp_path / "work"
    args = ["install", str(install_world.bundle), "--registry", site_registry.host]
    args += ["--profile", "minimal", "--work-dir", str(work), "--json"]
    args += ["--public-key", str(install_world.public_key)]
    args += ["--kube-server", kube_api.url, "--kube-token-file", str(tmp_path / "token")]
    args += ["--kube-ca-file", str(tmp_path / "ca.pem")]
    args += ["--helm-driver", "binary", "--helm-binary", str(helm)]
    assert main(args) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "install.done"
    done = [e["step"] for e in events if e["event"] == "step.done"]
    assert done.index("release/llmflow-system/store") < done.index("release/llmflow-system/front")
    # the last release run was front; Helm got the pinned values through a file
    values = json.loads((record / "values").read_text())
    assert values["sidecar"]["image"].endswith("@" + install_world.web_digest)
    argv = (record / "args").read_text().split("\n")
    kubeconfig = Path(argv[argv.index("--kubeconfig") + 1])
    assert kubeconfig.parent == work and kubeconfig.stat().st_mode & 0o077 == 0
    assert TOKEN not in " ".join(argv)
    # a second run with --resume does nothing but preflight
    assert main([*args, "--resume"]) == 0
    again = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert not [e for e in again if e["event"] == "step.done"]


# ---------------------------------------------------------------------- manifests


def _plan_for(world: InstallWorld, registry: str, work: Path, profile: Profile) -> Any:
    return build_plan(
        PlanRequest(
            bundle=world.bundle,
            platform_file=world.bundle / "distribution" / "platform" / "platform.yaml",
            registry=registry,
            profile=profile,
            work_dir=work,
            min_free_bytes=1024,
        )
    )


class TimelineDriver(RecordingDriver):
    """Records, for every release, which objects the API server held when Helm ran."""

    def __init__(self, api: FakeKubeAPI) -> None:
        super().__init__()
        self.api = api
        self.seen: dict[str, list[str]] = {}

    def upgrade_install(self, spec: ReleaseSpec) -> ReleaseInfo:
        self.seen[spec.name] = [a.path for a in self.api.applies]
        return super().upgrade_install(spec)


def test_namespaces_are_applied_before_the_releases_and_the_rest_after(
    install_world: InstallWorld,
    site_registry: LocalRegistry,
    kube_api: FakeKubeAPI,
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    plan = _plan_for(install_world, site_registry.host, work, Profile.MINIMAL)
    driver = TimelineDriver(kube_api)
    access = load_kubeconfig(kube_api.kubeconfig(tmp_path / "kubeconfig"))
    with KubeClient(access) as kube:
        run_install(plan, work_dir=work, driver=driver, kube=kube, sleep=lambda _: None)
    namespace = "/api/v1/namespaces/llmflow-system"
    policies = "/apis/networking.k8s.io/v1/namespaces/llmflow-system/networkpolicies"
    # when Helm ran, only the namespace had been applied (with its pod-security label)
    assert driver.seen == {"store": [namespace], "front": [namespace]}
    assert [a.path for a in kube_api.applies] == [
        namespace,
        f"{policies}/default-deny",
        f"{policies}/allow-dns",
        "/api/v1/namespaces/llmflow-system/configmaps/routes",
    ]
    for applied in kube_api.applies:
        assert applied.status == 201
        assert applied.content_type == "application/apply-patch+yaml"
        assert applied.query == {"fieldManager": ["llmflow-airgap"], "force": ["true"]}
    labels = kube_api.objects[namespace]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert kube_api.objects[f"{policies}/allow-dns"]["spec"]["egress"][0]["ports"][0]["port"] == 53
    steps = json.loads((work / STATE_NAME).read_text())["steps"]
    entry = steps["manifests/policies/k8s/networkpolicies/llmflow-system.yaml"]
    assert entry["fingerprint"].startswith("sha256:")
    assert entry["created"] == [
        "NetworkPolicy llmflow-system/default-deny",
        "NetworkPolicy llmflow-system/allow-dns",
    ]


def test_ha_only_manifests_follow_the_profile(
    install_world: InstallWorld,
    site_registry: LocalRegistry,
    kube_api: FakeKubeAPI,
    tmp_path: Path,
) -> None:
    minimal = _plan_for(install_world, site_registry.host, tmp_path / "m", Profile.MINIMAL)
    standard = _plan_for(install_world, site_registry.host, tmp_path / "s", Profile.STANDARD)
    ha = _plan_for(install_world, site_registry.host, tmp_path / "h", Profile.HA)
    autoscaling = "manifests/platform/manifests/ha-autoscaling.yaml"
    assert autoscaling not in [m.step_id for m in minimal.manifests]
    assert autoscaling not in [m.step_id for m in standard.manifests]
    assert [m.step_id for m in ha.manifests][-1] == autoscaling
    access = load_kubeconfig(kube_api.kubeconfig(tmp_path / "kubeconfig"))
    with KubeClient(access) as kube:
        run_install(ha, work_dir=tmp_path / "h", driver=RecordingDriver(), kube=kube)
    applied = [a.path for a in kube_api.applies]
    assert applied[-2:] == [
        "/apis/autoscaling/v2/namespaces/llmflow-system/horizontalpodautoscalers/front",
        "/apis/policy/v1/namespaces/llmflow-system/poddisruptionbudgets/front",
    ]


def test_resume_skips_unchanged_manifests_and_reapplies_a_changed_one(
    install_world: InstallWorld,
    site_registry: LocalRegistry,
    kube_api: FakeKubeAPI,
    tmp_path: Path,
) -> None:
    # a copy of the bundle's distribution files (charts stay in the bundle): same platform.yaml
    root = tmp_path / "distribution"
    shutil.copytree(install_world.bundle / "distribution", root)
    request = PlanRequest(
        bundle=install_world.bundle,
        platform_file=root / "platform" / "platform.yaml",
        registry=site_registry.host,
        profile=Profile.MINIMAL,
        work_dir=tmp_path / "work",
        min_free_bytes=1024,
    )
    access = load_kubeconfig(kube_api.kubeconfig(tmp_path / "kubeconfig"))
    work = tmp_path / "work"
    with KubeClient(access) as kube:
        run_install(build_plan(request), work_dir=work, driver=RecordingDriver(), kube=kube)
        first = len(kube_api.applies)
        again = run_install(
            build_plan(request), work_dir=work, driver=RecordingDriver(), kube=kube, resume=True
        )
        assert len(kube_api.applies) == first  # nothing applied twice
        assert {
            "manifests/policies/k8s/namespaces.yaml",
            "manifests/platform/manifests/routes.yaml",
        } <= set(again.skipped)
        routes = root / "platform" / "manifests" / "routes.yaml"
        routes.write_text(routes.read_text().replace("routes: []", "routes: [a]"))
        changed = run_install(
            build_plan(request), work_dir=work, driver=RecordingDriver(), kube=kube, resume=True
        )
    assert [m for m in changed.ran if m.startswith("manifests/")] == [
        "manifests/platform/manifests/routes.yaml"
    ]
    last = kube_api.applies[-1]
    assert last.path == "/api/v1/namespaces/llmflow-system/configmaps/routes"
    assert last.status == 200  # updated in place
    assert kube_api.objects[last.path]["data"]["routes.yaml"] == "routes: [a]"


def test_an_unknown_kind_is_refused_naming_the_file_and_kind(
    install_world: InstallWorld, tmp_path: Path
) -> None:
    root = tmp_path / "distribution"
    shutil.copytree(install_world.bundle / "distribution", root)
    (root / "platform" / "manifests" / "routes.yaml").write_text(
        "apiVersion: apisix.apache.org/v2\nkind: ApisixRoute\n"
        "metadata: {name: gateway, namespace: llmflow-system}\n"
    )
    request = PlanRequest(
        bundle=install_world.bundle,
        platform_file=root / "platform" / "platform.yaml",
        registry="127.0.0.1:1",
        profile=Profile.MINIMAL,
        work_dir=tmp_path,
    )
    with pytest.raises(ManifestError) as raised:
        build_plan(request)
    message = str(raised.value)
    assert "platform/manifests/routes.yaml (document 1)" in message
    assert "kind ApisixRoute of API group apisix.apache.org" in message
    # a namespaced object without a namespace is not given a default either
    (root / "platform" / "manifests" / "routes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: routes}\n"
    )
    with pytest.raises(ManifestError, match=r"namespaced but sets no metadata\.namespace"):
        build_plan(request)
    # a file mixing Namespaces with other kinds cannot honour both phases
    (root / "policies" / "k8s" / "namespaces.yaml").write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: a}\n"
    )
    with pytest.raises(ManifestError, match="mixes Namespace objects with other kinds"):
        build_plan(request)


def test_server_side_apply_errors_are_clear(kube_api: FakeKubeAPI, tmp_path: Path) -> None:
    access = load_kubeconfig(kube_api.kubeconfig(tmp_path / "kubeconfig"))
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny", "namespace": "missing"},
        "spec": {"podSelector": {}},
    }
    path = "/apis/networking.k8s.io/v1/namespaces/missing/networkpolicies/deny"
    with KubeClient(access) as kube:
        with pytest.raises(KubernetesError, match=r'HTTP 404.*namespaces "missing" not found'):
            kube.apply(path, policy, field_manager="llmflow-airgap")
        unserved = "/apis/example.com/v1/namespaces/missing/widgets/w"
        with pytest.raises(KubernetesError, match="does not serve this kind"):
            kube.apply(unserved, policy, field_manager="llmflow-airgap")
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "missing"}}
        assert kube.apply("/api/v1/namespaces/missing", namespace, field_manager="m") == 201
        assert kube.apply(path, policy, field_manager="m") == 201
        assert kube.apply(path, policy, field_manager="m") == 200
        assert kube.get(path) == kube_api.objects[path]
