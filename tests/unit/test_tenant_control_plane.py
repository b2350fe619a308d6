"""The tenant control plane against fakes that replay each system's contract over HTTP.

Keycloak: tests/unit/keycloak_fixtures/fake_keycloak.py; Kubernetes, MLflow (+
mlflow-oidc-auth), Langfuse and OPA: tests/tenant_fakes.py. The object store is the
filesystem backend here (S3 buckets run against moto in tests/integration).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from keycloak_fixtures.fake_keycloak import ADMIN_PASSWORD, ADMIN_USER, FakeKeycloak
from tenant_fakes import FakeKubernetes, FakeLangfuse, FakeMlflow, FakeOpa

from llmflow.settings import PolicySettings, Settings, TenancySettings
from llmflow.tenancy import KeycloakAdminSettings, TenantSpec, load_tenants
from llmflow.tenancy.control_plane import ControlPlane, TenantPlan
from llmflow.tenancy.reconciler import Operation, drift

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "platform" / "tenants.example.yaml"
K8S_VERSION = "1.31.0"


@dataclasses.dataclass
class World:
    kc: FakeKeycloak
    k8s: FakeKubernetes
    mlflow: FakeMlflow
    langfuse: FakeLangfuse
    opa: FakeOpa
    settings: Settings


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    kc, k8s, mlflow, langfuse, opa = (
        FakeKeycloak(),
        FakeKubernetes(),
        FakeMlflow(),
        FakeLangfuse(),
        FakeOpa(),
    )
    for server in (kc, k8s, mlflow, langfuse, opa):
        server.start()
    settings = Settings(
        data_dir=tmp_path / "data",
        keycloak=KeycloakAdminSettings(
            server_url=kc.url, username=ADMIN_USER, password=ADMIN_PASSWORD
        ),
        policy=PolicySettings(mode="http", opa_url=opa.url),
        tenancy=TenancySettings(
            kubernetes_api_url=k8s.url,
            kubernetes_token=k8s.token,  # type: ignore[arg-type]
            mlflow_url=mlflow.url,
            mlflow_token=mlflow.token,  # type: ignore[arg-type]
            langfuse_url=langfuse.url,
            langfuse_public_key="pk-lf-org",
            langfuse_secret_key="sk-lf-org",  # type: ignore[arg-type]
        ),
        _env_file=None,  # type: ignore[call-arg]
    )
    yield World(kc, k8s, mlflow, langfuse, opa, settings)
    for server in (kc, k8s, mlflow, langfuse, opa):
        server.stop()


async def _plan(settings: Settings, tenants: list[TenantSpec]) -> TenantPlan:
    plane = ControlPlane.from_settings(settings)
    try:
        return await plane.plan(tenants)
    finally:
        await plane.aclose()


async def _apply(settings: Settings, tenants: list[TenantSpec]) -> TenantPlan:
    plane = ControlPlane.from_settings(settings)
    try:
        plan = await plane.plan(tenants)
        await plane.apply(plan)
        return plan
    finally:
        await plane.aclose()


def _ops(plan: TenantPlan, system: str) -> dict[tuple[str, str], Operation]:
    (sp,) = [s for s in plan.systems if s.system == system]
    return {(c.kind, c.name): c.operation for c in sp.changes}


def _pending(plan: TenantPlan) -> list[str]:
    return [f"{c.system} {c.operation} {c.kind} {c.name} {c.detail}" for c in plan.pending]


# ---------------------------------------------------------------------------- spec


def test_example_declares_limits_for_every_system() -> None:
    tenants = {t.name: t for t in load_tenants(EXAMPLE)}
    assert list(tenants) == ["dept-finance", "dept-hr", "project-ai"]
    hr = tenants["dept-hr"]
    assert hr.quotas.cpu == "16" and hr.quotas.memory == "64Gi" and hr.quotas.gpus == 1
    assert hr.allowed_models == ("qwen2.5-7b-instruct", "gpt-4o-mini")
    assert hr.classification_ceiling == "confidential"
    assert hr.rate_limits.requests_per_minute == 300
    assert tenants["project-ai"].role_bindings[0].cluster_role == "edit"
    assert not any(t.extra for t in tenants.values())


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"quotas": {"cpu": "lots"}}, "not a Kubernetes quantity"),
        ({"quotas": {"gpu": 1}}, "unknown quotas"),
        ({"quotas": {"nvidia.com/gpu": -1}}, "non-negative"),
        ({"classificationCeiling": "top-secret"}, "classificationCeiling"),
        ({"rateLimits": {"tokensPerDay": "many"}}, "must be an integer"),
        ({"allowedModels": "gpt"}, "list of model ids"),
    ],
)
def test_invalid_limits_are_rejected_before_any_system_is_touched(
    entry: dict[str, Any], message: str
) -> None:
    from llmflow.tenancy import TenantSpecError, parse_tenants

    with pytest.raises(TenantSpecError, match=message):
        parse_tenants({"tenants": [{"name": "dept-a", **entry}]})


def test_drift_compares_quantities_as_numbers() -> None:
    assert drift({"cpu": "1"}, {"cpu": "1000m"}) == []
    assert drift({"memory": "1Gi"}, {"memory": "1073741824"}) == []
    assert drift({"cpu": "2"}, {"cpu": "1"}) == ["cpu"]
    assert drift({"a": [1, 2]}, {"a": [1]}) == ["a"]


# ---------------------------------------------------------------------------- apply


async def test_first_apply_creates_everything_and_a_second_plans_nothing(world: World) -> None:
    tenants = load_tenants(EXAMPLE)
    first = await _apply(world.settings, tenants)
    systems = {s.system: s for s in first.systems}
    assert not any(s.skipped for s in systems.values())
    for name in ("kubernetes", "opa", "object-store", "mlflow", "langfuse"):
        assert {c.operation for c in systems[name].changes} == {Operation.CREATE}, name
    assert ("group", "/tenants/dept-hr") in {
        (c.kind, c.name) for c in systems["keycloak"].changes if c.operation is Operation.CREATE
    }

    # Kubernetes: server-side apply, as field manager llmflow, for every object.
    patches = [e for e in world.k8s.writes() if e["method"] == "PATCH"]
    assert len(patches) == 3 * 9
    assert {e["content_type"] for e in patches} == {"application/apply-patch+yaml"}
    assert {e["query"]["fieldManager"] for e in patches} == {"llmflow"}
    quota = world.k8s.get("resourcequotas", "dept-hr", "tenant-quota")
    assert quota is not None
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "1"
    assert quota["spec"]["hard"]["limits.memory"] == "64Gi"
    ns = world.k8s.get("namespaces", "", "project-ai")
    assert ns is not None and ns["metadata"]["labels"]["llmflow.io/tenant"] == "project-ai"
    # OPA: the running OPA and the written document agree.
    assert world.opa.tenants is not None
    assert world.opa.tenants["dept-hr"] == {
        "allowed_models": ["qwen2.5-7b-instruct", "gpt-4o-mini"],
        "classification_ceiling": "confidential",
        "quotas": {"gpus": 1, "requests_per_minute": 300, "tokens_per_day": 2000000},
    }
    written = json.loads((world.settings.data_dir / "tenants" / "opa-data.json").read_text())
    assert written["llmflow"]["tenants"] == world.opa.tenants
    assert written["llmflow"]["gateway"]["tenant_header"] == "X-Tenant-Id"
    # MLflow: experiment + group permission; Langfuse: project with the tenant in metadata.
    experiment = world.mlflow.by_name("tenants/dept-finance")
    assert experiment is not None
    assert (
        world.mlflow.permissions[("/tenants/dept-finance", experiment["experiment_id"])] == "EDIT"
    )
    assert world.langfuse.live()["dept-hr"]["metadata"] == {"llmflow.tenant": "dept-hr"}
    assert (world.settings.object_root / "dept-hr").is_dir()

    writes_before = {
        name: len(s.writes()) for name, s in (("k8s", world.k8s), ("mlflow", world.mlflow))
    }
    second = await _apply(world.settings, tenants)
    assert _pending(second) == []
    assert second.counts()["unchanged"] == len(second.changes) > 0
    assert len(world.k8s.writes()) == writes_before["k8s"]
    assert len(world.mlflow.writes()) == writes_before["mlflow"]


async def test_changed_quota_and_hand_edits_are_updates(world: World) -> None:
    tenants = load_tenants(EXAMPLE)
    await _apply(world.settings, tenants)

    def more_gpus(t: TenantSpec) -> TenantSpec:
        if t.name != "dept-hr":
            return t
        return dataclasses.replace(t, quotas=dataclasses.replace(t.quotas, gpus=4, cpu="24"))

    changed = [more_gpus(t) for t in tenants]
    plan = await _plan(world.settings, changed)
    assert _ops(plan, "kubernetes")[("ResourceQuota", "dept-hr/tenant-quota")] is Operation.UPDATE
    assert _ops(plan, "opa")[("tenant-data", "data.llmflow.tenants.dept-hr")] is Operation.UPDATE
    assert {c.tenant for c in plan.pending} == {"dept-hr"}
    await _apply(world.settings, changed)
    quota = world.k8s.get("resourcequotas", "dept-hr", "tenant-quota")
    assert quota is not None and quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "4"
    assert world.opa.tenants is not None and world.opa.tenants["dept-hr"]["quotas"]["gpus"] == 4

    # Drift: someone edits the live objects; the plan reports updates and apply repairs them.
    def widen(obj: dict[str, Any]) -> None:
        obj["spec"]["hard"]["requests.nvidia.com/gpu"] = "16"

    world.k8s.edit("resourcequotas", "dept-hr", "tenant-quota", widen)
    world.k8s.edit(
        "networkpolicies",
        "dept-finance",
        "default-deny",
        lambda o: o["spec"].update(policyTypes=["Ingress"]),
    )
    world.opa.tenants["project-ai"]["classification_ceiling"] = "secret"
    experiment = world.mlflow.by_name("tenants/dept-hr")
    assert experiment is not None
    world.mlflow.permissions[("/tenants/dept-hr", experiment["experiment_id"])] = "READ"
    drifted = await _plan(world.settings, changed)
    assert sorted(_pending(drifted)) == sorted(
        [
            "kubernetes update ResourceQuota dept-hr/tenant-quota "
            "spec.hard.requests.nvidia.com/gpu",
            "kubernetes update NetworkPolicy dept-finance/default-deny spec.policyTypes",
            "opa update tenant-data data.llmflow.tenants.project-ai classification_ceiling",
            "mlflow update group-permission /tenants/dept-hr on tenants/dept-hr READ -> EDIT",
        ]
    )
    await _apply(world.settings, changed)
    assert _pending(await _plan(world.settings, changed)) == []


async def test_removed_tenant_is_a_delete_in_every_system(world: World) -> None:
    tenants = load_tenants(EXAMPLE)
    await _apply(world.settings, tenants)
    remaining = [t for t in tenants if t.name != "project-ai"]
    plan = await _plan(world.settings, remaining)
    deletes = {(c.system, c.kind, c.name) for c in plan.pending if c.operation is Operation.DELETE}
    assert {
        ("keycloak", "group", "/tenants/project-ai"),
        ("kubernetes", "Namespace", "project-ai"),
        ("opa", "tenant-data", "data.llmflow.tenants.project-ai"),
        ("object-store", "directory", str(world.settings.object_root / "project-ai")),
        ("mlflow", "experiment", "tenants/project-ai"),
        ("langfuse", "project", "project-ai"),
    } <= deletes
    assert all(c.tenant == "project-ai" for c in plan.pending if c.system != "keycloak")
    await _apply(world.settings, remaining)
    assert world.k8s.get("namespaces", "", "project-ai") is None
    assert world.k8s.get("resourcequotas", "project-ai", "tenant-quota") is None
    assert world.k8s.get("namespaces", "", "dept-hr") is not None
    assert world.opa.tenants is not None and "project-ai" not in world.opa.tenants
    assert "project-ai" not in world.langfuse.live()
    experiment = world.mlflow.by_name("tenants/project-ai")
    assert experiment is not None and experiment["lifecycle_stage"] == "deleted"
    assert _pending(await _plan(world.settings, remaining)) == []
    # Declaring it again restores the soft-deleted experiment instead of failing on its name.
    again = await _plan(world.settings, tenants)
    assert ("experiment", "tenants/project-ai") in {
        (c.kind, c.name) for c in again.pending if c.operation is Operation.UPDATE
    }
    await _apply(world.settings, tenants)
    assert _pending(await _plan(world.settings, tenants)) == []


async def test_plan_delete_touches_only_that_tenant(world: World) -> None:
    tenants = load_tenants(EXAMPLE)
    await _apply(world.settings, tenants)
    # Another tenant drifts: tenant delete must not repair (or touch) it.
    world.k8s.edit(
        "resourcequotas",
        "dept-finance",
        "tenant-quota",
        lambda o: o["spec"]["hard"].update(pods="1"),
    )
    plane = ControlPlane.from_settings(world.settings)
    try:
        plan = await plane.plan_delete("dept-hr", tenants)
        assert plan.pending and {c.tenant for c in plan.changes} == {"dept-hr"}
        await plane.apply(plan)
    finally:
        await plane.aclose()
    assert world.k8s.get("namespaces", "", "dept-hr") is None
    quota = world.k8s.get("resourcequotas", "dept-finance", "tenant-quota")
    assert quota is not None and quota["spec"]["hard"]["pods"] == "1"
    assert world.opa.tenants is not None and set(world.opa.tenants) == {
        "dept-finance",
        "project-ai",
    }
    assert set(world.langfuse.live()) == {"dept-finance", "project-ai"}
    assert not (world.settings.object_root / "dept-hr").exists()
    realm = world.kc.realms["llmflow"]
    paths = {g["path"] for g in realm.groups.values()}
    assert "/tenants/dept-hr" not in paths and "/tenants/dept-finance" in paths
    users = {u["username"]: u for u in realm.users.values()}
    assert "tenant" not in users["park.minjun"]["attributes"]  # released, not deleted
    assert users["kim.jiwoo"]["attributes"]["tenant"] == ["dept-finance"]


# ---------------------------------------------------------------------------- manifests


def test_rendered_manifests_validate_against_the_kubernetes_schemas(tmp_path: Path) -> None:
    from llmflow.tenancy.k8s_manifests import all_manifests

    rendered = all_manifests(load_tenants(EXAMPLE))
    kinds = set()
    for manifests in rendered.values():
        for doc in manifests:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            kinds.add(doc["kind"])
    assert kinds == {"Namespace", "ResourceQuota", "LimitRange", "NetworkPolicy", "RoleBinding"}


def test_network_policies_are_default_deny_plus_the_seed_allowances() -> None:
    from llmflow.tenancy.k8s_manifests import tenant_manifests

    (hr,) = [t for t in load_tenants(EXAMPLE) if t.name == "dept-hr"]
    policies = {
        m["metadata"]["name"]: m["spec"]
        for m in tenant_manifests(hr)
        if m["kind"] == "NetworkPolicy"
    }
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}

    def peers(spec: dict[str, Any], direction: str, key: str) -> set[str]:
        return {
            p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for rule in spec.get(direction, [])
            for p in rule[key]
            if "namespaceSelector" in p
        }

    ingress = set().union(*(peers(s, "ingress", "from") for s in policies.values()))
    egress = set().union(*(peers(s, "egress", "to") for s in policies.values()))
    assert ingress == {"llmflow-system"}  # + the namespace itself (podSelector {})
    assert egress == {"llmflow-data", "llmflow-inference", "kube-system"}
    assert policies["allow-same-namespace"]["ingress"] == [{"from": [{"podSelector": {}}]}]


async def test_without_a_cluster_manifests_are_rendered_and_are_the_state(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", _env_file=None)  # type: ignore[call-arg]
    tenants = load_tenants(EXAMPLE)
    plan = await _apply(settings, tenants)
    assert {s.system: s.skipped is not None for s in plan.systems} == {
        "keycloak": True,
        "kubernetes": False,
        "opa": False,
        "object-store": False,
        "mlflow": True,
        "langfuse": True,
    }
    out = settings.data_dir / "tenants" / "manifests"
    assert sorted(p.name for p in out.glob("*.yaml")) == [
        "dept-finance.yaml",
        "dept-hr.yaml",
        "project-ai.yaml",
    ]
    for path in out.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert _pending(await _plan(settings, tenants)) == []
    # A hand edit of a rendered file is drift; a removed tenant's file is deleted.
    path = out / "dept-hr.yaml"
    path.write_text(path.read_text().replace("64Gi", "640Gi"))
    drifted = await _plan(settings, tenants)
    assert [c.name for c in drifted.pending] == ["dept-hr/tenant-quota"]
    await _apply(settings, [t for t in tenants if t.name != "dept-hr"])
    assert not path.exists()
    assert "64Gi" not in (out / "dept-finance.yaml").read_text()


async def test_langfuse_without_the_admin_api_entitlement_says_why(world: World) -> None:
    from llmflow.tenancy.errors import TenantReconcileError

    world.langfuse.plan = "oss"
    with pytest.raises(TenantReconcileError, match="admin-api entitlement"):
        await _plan(world.settings, load_tenants(EXAMPLE))


async def test_kubernetes_refuses_a_wrong_token(world: World) -> None:
    from llmflow.tenancy.errors import TenantReconcileError

    settings = world.settings.model_copy(
        update={"tenancy": world.settings.tenancy.model_copy(update={"kubernetes_token": None})}
    )
    with pytest.raises(TenantReconcileError, match="HTTP 401"):
        await _plan(settings, load_tenants(EXAMPLE))


async def test_kubernetes_token_can_come_from_a_mounted_file(world: World, tmp_path: Path) -> None:
    from llmflow.tenancy.k8s_api import KubernetesApi

    token_file = tmp_path / "token"
    token_file.write_text(world.k8s.token + "\n")
    api = KubernetesApi.from_settings(
        TenancySettings(kubernetes_api_url=world.k8s.url, kubernetes_token_file=token_file)
    )
    assert api is not None
    try:
        assert await api.list("Namespace") == []
    finally:
        await api.aclose()
    assert KubernetesApi.from_settings(TenancySettings()) is None
