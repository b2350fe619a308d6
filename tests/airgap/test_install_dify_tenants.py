"""`install --tenant-values`: one Dify release per tenant overlay rendered by the glue's
`llmflow tenant apply` code, with its CNPG databases and admin-key Secret created first.

Real: the bundle (lock + build of `install_world` with a `dify` chart), the overlays (rendered by
`llmflow.tenancy.dify.DifyReconciler` itself), the site registry, Helm rendering through
helm-python-sdk. Doubles: the Kubernetes API (`fake_kube`, with the CNPG operator's
`status.applied` replayed on the Database objects) and the cluster side of Helm.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_kube import FakeKubeAPI, healthy_cluster
from install_world import InstallWorld, build_install_world
from oci_world import LocalRegistry, World

from llmflow.tenancy.dify import DifyReconciler, DifyTenancyState
from llmflow.tenancy.dify_settings import DifySettings
from llmflow.tenancy.spec import TenantSpec
from llmflow_airgap.cli import main
from llmflow_airgap.dify_cluster import ADMIN_KEY, CREDENTIALS_SECRET, DifyCredentials
from llmflow_airgap.dify_tenants import TenantOverlayError, chart_schema_errors, read_overlay
from llmflow_airgap.helm.base import ReleaseInfo, ReleaseSpec
from llmflow_airgap.helm.sdk import SdkHelmDriver
from llmflow_airgap.install import STATE_NAME, PlanRequest, build_plan, run_install
from llmflow_airgap.kube import KubeClient, load_kubeconfig
from llmflow_airgap.platform import Profile

REPO = Path(__file__).resolve().parents[2]
TENANTS = ("dept-hr", "project-ai")
PREFIX = "t-"
CNPG = "/apis/postgresql.cnpg.io/v1"


def render_overlays(directory: Path, tenants: tuple[str, ...] = TENANTS) -> None:
    """What `llmflow tenant apply` writes in instance-per-tenant mode (the glue's own code)."""
    reconciler = DifyReconciler(DifySettings(), directory, namespace_prefix=PREFIX)
    specs = [TenantSpec(name=t, display_name=t) for t in tenants]
    changes = reconciler.plan(specs, DifyTenancyState())
    asyncio.run(reconciler.apply(changes))


@pytest.fixture(scope="module")
def dify_world(oci_world: World, tmp_path_factory: pytest.TempPathFactory) -> InstallWorld:
    return build_install_world(oci_world, tmp_path_factory.mktemp("dify-world"), with_dify=True)


@pytest.fixture
def overlays(tmp_path: Path) -> Path:
    directory = tmp_path / "tenants" / "dify"
    render_overlays(directory)
    return directory


@pytest.fixture
def site_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    registry = LocalRegistry(tmp_path / "site").start()
    try:
        yield registry
    finally:
        registry.stop()


def _cnpg_operator(api: FakeKubeAPI, path: str) -> Callable[[], tuple[int, dict[str, Any]]]:
    """The CNPG operator's answer: the applied Database with `status.applied: true`."""

    def answer() -> tuple[int, dict[str, Any]]:
        if path not in api.objects:
            return 404, {"kind": "Status", "code": 404}
        return 200, {**api.objects[path], "status": {"applied": True, "observedGeneration": 1}}

    return answer


@pytest.fixture
def kube_api(tmp_path: Path) -> Iterator[FakeKubeAPI]:
    api = FakeKubeAPI(tmp_path / "kube", routes=healthy_cluster()).start()
    api.served[(CNPG, "databases")] = True
    # namespaces `llmflow tenant apply` and the CNPG cluster's install created before
    for ns in ("llmflow-data", *(PREFIX + t for t in TENANTS)):
        api.objects[f"/api/v1/namespaces/{ns}"] = {"metadata": {"name": ns}}
    for ns, name, port in (
        ("llmflow-system", "store", 8080),
        ("llmflow-system", "front", 3000),
    ):
        from fake_kube import deployment

        api.routes[f"/apis/apps/v1/namespaces/{ns}/deployments/{name}"] = deployment(name, ns, 1, 1)
        api.routes[f"/api/v1/namespaces/{ns}/services/{name}:{port}/proxy/healthz"] = {}
    for tenant in TENANTS:
        ns = PREFIX + tenant
        api.routes[f"/api/v1/namespaces/{ns}/services/dify-api:5001/proxy/health"] = {}
        for database in (f"dify_{tenant}", f"dify_plugin_{tenant}"):
            name = "llmflow-pg-" + database.replace("_", "-")
            path = f"{CNPG}/namespaces/llmflow-data/databases/{name}"
            api.routes[path] = _cnpg_operator(api, path)
    try:
        yield api
    finally:
        api.stop()


class RecordingDriver:
    """Helm driver double: records releases, renders them with the real helm-python-sdk."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[ReleaseSpec] = []
        self._sdk = SdkHelmDriver()

    def upgrade_install(self, spec: ReleaseSpec) -> ReleaseInfo:
        self.calls.append(spec)
        assert self._sdk.render(spec)  # Helm accepts the layered values
        return ReleaseInfo(spec.name, spec.namespace, 1, "deployed", spec.chart.name)

    def render(self, spec: ReleaseSpec) -> dict[str, str]:
        return self._sdk.render(spec)

    def release(self, name: str, namespace: str) -> ReleaseInfo | None:
        return None


def _plan(world: InstallWorld, registry: str, work: Path, overlays: Path | None) -> Any:
    return build_plan(
        PlanRequest(
            bundle=world.bundle,
            platform_file=world.platform_file,
            registry=registry,
            profile=Profile.MINIMAL,
            work_dir=work,
            min_free_bytes=1024,
            tenant_values=overlays,
        )
    )


def _secret(api: FakeKubeAPI, ns: str, key: str) -> str:
    data = api.objects[f"/api/v1/namespaces/{ns}/secrets/{CREDENTIALS_SECRET}"]["data"]
    return base64.b64decode(data[key]).decode()


def test_dry_run_plans_one_release_per_tenant_after_dify(
    dify_world: InstallWorld,
    overlays: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["install", str(dify_world.bundle), "--registry", "site.example:5000"]
    args += ["--profile", "minimal", "--work-dir", str(tmp_path / "work"), "--dry-run"]
    args += ["--tenant-values", str(overlays)]
    args += [
        "--dify-console",
        "t-dept-hr=https://dify-hr.example",
        "--dify-workspace",
        "t-dept-hr=w1",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "post/dify-plugins/t-dept-hr: 0 re-signed plugin(s)" in out
    assert "t-dept-hr/dify: dify 0.37.0" in out and "t-project-ai/dify: dify 0.37.0" in out
    assert out.index("llmflow-system/store") < out.index("t-dept-hr/dify")
    assert "gate: http t-dept-hr/service/dify-api:5001/health" in out
    assert "before: database/llmflow-data/llmflow-pg-dify-dept-hr: Database" in out
    assert "database dify_plugin_dept_hr owned by dify in cluster llmflow-pg" in out
    assert "secret/t-dept-hr/dify-credentials" in out
    assert f"{overlays / 'dept-hr.values.yaml'} + site digests" in out
    # the glue's namespace gets its admin key before the first release
    assert out.index("secret/llmflow-system/dify-credentials") < out.index("1. llmflow-system")
    assert not (tmp_path / "work" / STATE_NAME).exists()

    assert main([*args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    tenants = [r for r in plan["releases"] if r["tenant"]]
    assert [(r["step"], r["tenant"]) for r in tenants] == [
        ("release/t-dept-hr/dify", "dept-hr"),
        ("release/t-project-ai/dify", "project-ai"),
    ]
    assert [b["step"] for b in tenants[0]["before"]] == [
        "secret/t-dept-hr/dify-credentials",
        "database/llmflow-data/llmflow-pg-dify-dept-hr",
        "database/llmflow-data/llmflow-pg-dify-plugin-dept-hr",
    ]
    assert [p["step"] for p in plan["prepare"]] == ["secret/llmflow-system/dify-credentials"]
    assert plan["postInstall"] == ["dify-plugins/t-dept-hr"]
    assert "no dify-plugin-signing key" in " ".join(plan["notes"])


def test_install_creates_databases_secrets_and_tenant_releases_and_resumes(
    dify_world: InstallWorld,
    overlays: Path,
    site_registry: LocalRegistry,
    kube_api: FakeKubeAPI,
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    driver = RecordingDriver()
    access = load_kubeconfig(kube_api.kubeconfig(tmp_path / "kubeconfig"))
    plan = _plan(dify_world, site_registry.host, work, overlays)
    with KubeClient(access) as kube:
        run_install(plan, work_dir=work, driver=driver, kube=kube, sleep=lambda _: None)
    tenant_calls = [c for c in driver.calls if c.name == "dify"]
    assert [c.namespace for c in tenant_calls] == ["t-dept-hr", "t-project-ai"]
    hr = tenant_calls[0].values
    # the overlay is layered last, over the platform's dify values and the air-gap overlay
    assert hr["externalPostgres"]["database"] == {
        "api": "dify_dept_hr",
        "pluginDaemon": "dify_plugin_dept_hr",
    }
    assert hr["externalPostgres"]["address"] == "llmflow-pg-rw.llmflow-data.svc"
    assert hr["externalRedis"]["db"] == {"app": 2, "celery": 3}
    assert hr["image"]["repository"].startswith(site_registry.host)
    assert tenant_calls[1].values["externalRedis"]["db"] == {"app": 4, "celery": 5}

    database = kube_api.objects[f"{CNPG}/namespaces/llmflow-data/databases/llmflow-pg-dify-dept-hr"]
    assert database["spec"] == {
        "name": "dify_dept_hr",
        "owner": "dify",
        "cluster": {"name": "llmflow-pg"},
        "ensure": "present",
        "databaseReclaimPolicy": "retain",
    }
    # databases exist before the release that uses them
    order = kube_api.requests
    db_apply = next(i for i, r in enumerate(order) if "llmflow-pg-dify-project-ai" in r)
    hr_gate = next(i for i, r in enumerate(order) if "t-project-ai/services/dify-api" in r)
    assert db_apply < hr_gate

    # one admin key for every Dify (the glue holds one), 48 random bytes URL-safe
    shared = _secret(kube_api, "llmflow-system", ADMIN_KEY)
    assert len(base64.urlsafe_b64decode(shared + "==")) == 48
    for tenant in TENANTS:
        assert _secret(kube_api, PREFIX + tenant, ADMIN_KEY) == shared
        assert _secret(kube_api, PREFIX + tenant, "ADMIN_API_KEY_ENABLE") == "true"
    state_text = (work / STATE_NAME).read_text()
    assert shared not in state_text
    steps = json.loads(state_text)["steps"]
    assert steps["secret/t-dept-hr/dify-credentials"]["adminKey"] == "created"

    # resume: nothing changed, nothing runs
    driver.calls.clear()
    with KubeClient(access) as kube:
        result = run_install(
            plan, work_dir=work, driver=driver, kube=kube, sleep=lambda _: None, resume=True
        )
    assert driver.calls == [] and result.ran == []

    # one tenant's overlay changes: only that tenant's release (and its gate) runs again
    path = overlays / "project-ai.values.yaml"
    path.write_text(path.read_text().replace("llmflow-project-ai", "llmflow-project-ai-2"))
    changed = _plan(dify_world, site_registry.host, work, overlays)
    with KubeClient(access) as kube:
        result = run_install(
            changed, work_dir=work, driver=driver, kube=kube, sleep=lambda _: None, resume=True
        )
    assert [(c.namespace, c.name) for c in driver.calls] == [("t-project-ai", "dify")]
    assert result.ran == ["release/t-project-ai/dify", "gate/t-project-ai/dify/1"]

    # a fresh (non-resume) run never rotates an existing key
    with KubeClient(access) as kube:
        run_install(changed, work_dir=work, driver=driver, kube=kube, sleep=lambda _: None)
    assert _secret(kube_api, "t-dept-hr", ADMIN_KEY) == shared
    assert _secret(kube_api, "llmflow-system", ADMIN_KEY) == shared


def test_existing_credentials_keep_their_keys_and_gain_only_the_admin_key(
    kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    path = f"/api/v1/namespaces/t-dept-hr/secrets/{CREDENTIALS_SECRET}"
    kube_api.objects[path] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": CREDENTIALS_SECRET, "namespace": "t-dept-hr"},
        "data": {"DB_PASSWORD": base64.b64encode(b"pw").decode()},
    }
    access = load_kubeconfig(kube_api.kubeconfig(tmp_path / "kubeconfig"))
    with KubeClient(access) as kube:
        done = DifyCredentials("t-dept-hr", token=lambda n: "k" * n).run(kube, lambda _: None)
        assert done["adminKey"] == "created" and done["secretCreated"] is False
        applied = kube_api.applies[-1].body
        # only our two keys are sent: the operator's DB_PASSWORD stays theirs
        assert set(applied["data"]) == {"ADMIN_API_KEY_ENABLE", ADMIN_KEY}
        assert "k" * 48 not in json.dumps(done)
        kube_api.objects[path]["data"]["DB_PASSWORD"] = base64.b64encode(b"pw").decode()
        again = DifyCredentials("t-dept-hr", token=lambda n: "other").run(kube, lambda _: None)
    assert again["adminKey"] == "exists"
    assert _secret(kube_api, "t-dept-hr", ADMIN_KEY) == "k" * 48


def test_a_missing_tenant_namespace_is_a_clear_error(kube_api: FakeKubeAPI, tmp_path: Path) -> None:
    from llmflow_airgap.dify_cluster import DifyClusterError

    access = load_kubeconfig(kube_api.kubeconfig(tmp_path / "kubeconfig"))
    with KubeClient(access) as kube, pytest.raises(DifyClusterError, match="tenant apply"):
        DifyCredentials("t-nobody", "llmflow-system").run(kube, lambda _: None)


# ------------------------------------------------------------------ refused overlays


def _one(overlays: Path, tenant: str = "dept-hr") -> Path:
    return overlays / f"{tenant}.values.yaml"


def test_an_overlay_renamed_for_another_tenant_is_refused(overlays: Path) -> None:
    moved = overlays / "dept-finance.values.yaml"
    shutil.copy(_one(overlays), moved)
    with pytest.raises(TenantOverlayError, match="named for tenant 'dept-finance'"):
        read_overlay(moved, "dify-0.37.0.tgz")


def test_an_overlay_with_another_tenants_databases_is_refused(overlays: Path) -> None:
    path = _one(overlays)
    path.write_text(path.read_text().replace("dify_dept_hr", "dify_project_ai"))
    with pytest.raises(TenantOverlayError, match="belong to another tenant"):
        read_overlay(path, "dify-0.37.0.tgz")


def test_an_overlay_setting_other_keys_is_refused(overlays: Path) -> None:
    path = _one(overlays)
    path.write_text(path.read_text() + "api:\n  replicas: 9\nglobal: {appSecretKey: x}\n")
    with pytest.raises(TenantOverlayError, match=r"does not render: api\.replicas, global"):
        read_overlay(path, "dify-0.37.0.tgz")


def test_an_overlay_for_another_chart_version_is_refused(overlays: Path) -> None:
    with pytest.raises(TenantOverlayError, match=r"rendered for chart dify-0\.37\.0\.tgz"):
        read_overlay(_one(overlays), "dify-0.38.0.tgz")


def test_two_tenants_sharing_a_valkey_pair_are_refused(
    dify_world: InstallWorld, overlays: Path, tmp_path: Path
) -> None:
    path = _one(overlays, "project-ai")
    path.write_text(path.read_text().replace("app: 4", "app: 2").replace("celery: 5", "celery: 3"))
    with pytest.raises(TenantOverlayError, match="both use Valkey databases"):
        _plan(dify_world, "site.example:5000", tmp_path, overlays)


def test_an_overlay_for_a_tenant_given_with_tenant_too_is_refused(
    dify_world: InstallWorld, overlays: Path, tmp_path: Path
) -> None:
    request = PlanRequest(
        bundle=dify_world.bundle,
        platform_file=dify_world.platform_file,
        registry="site.example:5000",
        profile=Profile.MINIMAL,
        work_dir=tmp_path,
        tenants=("t-dept-hr",),
        tenant_values=overlays,
    )
    with pytest.raises(TenantOverlayError, match="t-dept-hr gets a dify release twice"):
        build_plan(request)


# ------------------------------------------------------------------ the real chart's schema


def _reference_chart(tmp_path: Path, charts_dir: Path) -> Path:
    """The reference copy of the dify chart's data files as a chart archive."""
    archive = tmp_path / "dify-0.37.0.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("Chart.yaml", "values.yaml", "values.schema.json"):
            tar.add(charts_dir / "dify" / name, arcname=f"dify/{name}")
    return archive


def test_tenant_values_validate_against_the_dify_charts_schema(
    charts_dir: Path, overlays: Path, tmp_path: Path
) -> None:
    from llmflow_airgap.values import coalesce, load_values

    chart = _reference_chart(tmp_path, charts_dir)
    merged = coalesce(
        load_values(REPO / "helm-values/dify/values.yaml"),
        load_values(REPO / "helm-values/dify/values-airgap.yaml"),
    )
    overlay = read_overlay(_one(overlays), "dify-0.37.0.tgz")
    assert chart_schema_errors(chart, "dify", coalesce(merged, overlay.values)) == []
    broken = coalesce(merged, {"externalRedis": {"db": {"app": "two"}}})
    errors = chart_schema_errors(chart, "dify", broken)
    assert errors and errors[0].startswith("externalRedis.db.app: 'two' is not of type")


def test_valkey_is_configured_with_the_databases_tenancy_allocates() -> None:
    from llmflow.tenancy.dify import REDIS_DATABASES
    from llmflow_airgap import dify_tenants

    values = yaml.safe_load((REPO / "helm-values/valkey/values.yaml").read_text())
    assert int(values["redis"]["config"]["databases"]) >= REDIS_DATABASES
    assert dify_tenants.REDIS_DATABASES == REDIS_DATABASES
