"""The tenant control plane: every configured system's reconciler, planned and applied together.

``plan`` observes each system and lists its changes (systems that are not configured appear
as skipped); ``apply`` performs a plan system by system in a fixed order — identity first
(Keycloak), then where workloads run (Kubernetes), what policies read (OPA data), storage,
then the LLMOps tools. ``plan_delete`` is the plan of ``tenant delete``: the same
reconcilers with the tenant left out of the declared list, keeping only that tenant's
entries (so nothing of another tenant is touched, declared or drifted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llmflow.settings import Settings
from llmflow.tenancy.reconciler import Operation, PlannedChange, Reconciler
from llmflow.tenancy.spec import TenantSpec

SYSTEM_ORDER = ("keycloak", "kubernetes", "opa", "object-store", "mlflow", "langfuse")


@dataclass
class SystemPlan:
    """The changes of one system, or why it was skipped."""

    system: str
    target: str = ""
    changes: list[PlannedChange] = field(default_factory=list)
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``--json``."""
        return {
            "system": self.system,
            "target": self.target,
            "skipped": self.skipped,
            "changes": [c.to_dict() for c in self.changes],
        }


@dataclass
class TenantPlan:
    """A plan over every system."""

    systems: list[SystemPlan] = field(default_factory=list)

    @property
    def changes(self) -> list[PlannedChange]:
        """Every entry of every system, in apply order."""
        return [c for s in self.systems for c in s.changes]

    @property
    def pending(self) -> list[PlannedChange]:
        """Entries that do something."""
        return [c for c in self.changes if c.pending]

    def counts(self) -> dict[str, int]:
        """How many entries per operation (all four keys present)."""
        counted = Counter(c.operation.value for c in self.changes)
        return {op.value: counted.get(op.value, 0) for op in Operation}

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``--json``."""
        return {"systems": [s.to_dict() for s in self.systems], "summary": self.counts()}


class ControlPlane:
    """Reconcilers by system name plus the systems skipped (name → reason)."""

    def __init__(
        self,
        reconcilers: Sequence[Reconciler[Any]],
        skipped: dict[str, str] | None = None,
    ) -> None:
        self.reconcilers = {r.system: r for r in reconcilers}
        self.skipped = dict(skipped or {})

    @classmethod
    def from_settings(cls, settings: Settings) -> ControlPlane:
        """Reconcilers for every system ``settings`` configures."""
        from llmflow.tenancy.buckets import ObjectStoreReconciler
        from llmflow.tenancy.k8s_api import KubernetesApi
        from llmflow.tenancy.kubernetes import KubernetesReconciler
        from llmflow.tenancy.opa_data import OpaDataReconciler

        t = settings.tenancy
        reconcilers: list[Reconciler[Any]] = []
        skipped: dict[str, str] = {}
        kc = settings.keycloak
        if kc.client_secret is not None or (kc.username and kc.password):
            from llmflow.tenancy.keycloak_reconciler import KeycloakReconciler

            reconcilers.append(KeycloakReconciler(kc))
        else:
            skipped["keycloak"] = (
                "keycloak not configured (LLMFLOW_KEYCLOAK__USERNAME/PASSWORD or CLIENT_SECRET)"
            )
        tenants_dir = settings.data_dir / "tenants"
        reconcilers.append(
            KubernetesReconciler(
                t.manifests_dir or tenants_dir / "manifests",
                KubernetesApi.from_settings(t),
                namespace_prefix=t.namespace_prefix,
                group_prefix=t.kubernetes_group_prefix,
            )
        )
        reconcilers.append(
            OpaDataReconciler(
                t.opa_data_file or settings.policy.data_file or tenants_dir / "opa-data.json",
                settings.policies_dir / "opa" / "data.json",
                opa_url=settings.policy.opa_url if settings.policy.mode == "http" else None,
                timeout_s=t.timeout_s,
            )
        )
        reconcilers.append(
            ObjectStoreReconciler(
                settings.object_store, settings.object_root, principals=t.s3_bucket_principals
            )
        )
        if t.mlflow_url:
            from llmflow.tenancy.mlflow import MlflowReconciler

            reconcilers.append(
                MlflowReconciler(
                    t.mlflow_url,
                    token=t.mlflow_token.get_secret_value() if t.mlflow_token else None,
                    oidc_auth=t.mlflow_oidc_auth,
                    experiment_format=t.mlflow_experiment_format,
                    permission=t.mlflow_permission,
                    timeout_s=t.timeout_s,
                )
            )
        else:
            skipped["mlflow"] = "mlflow not configured (LLMFLOW_TENANCY__MLFLOW_URL)"
        if t.langfuse_url and t.langfuse_public_key and t.langfuse_secret_key:
            from llmflow.tenancy.langfuse import LangfuseReconciler

            reconcilers.append(
                LangfuseReconciler(
                    t.langfuse_url,
                    t.langfuse_public_key,
                    t.langfuse_secret_key.get_secret_value(),
                    project_format=t.langfuse_project_format,
                    timeout_s=t.timeout_s,
                )
            )
        else:
            skipped["langfuse"] = (
                "langfuse not configured (LLMFLOW_TENANCY__LANGFUSE_URL, "
                "LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY)"
            )
        if settings.dify.managed:
            from llmflow.tenancy.dify import DifyReconciler

            reconcilers.append(DifyReconciler.from_settings(settings))
        return cls(reconcilers, skipped)

    def _ordered(self) -> list[str]:
        names = set(self.reconcilers) | set(self.skipped)
        known = [n for n in SYSTEM_ORDER if n in names]
        return known + sorted(names - set(SYSTEM_ORDER))

    async def plan(self, desired: Sequence[TenantSpec]) -> TenantPlan:
        """Observe every system and list what ``apply`` would do."""
        plan = TenantPlan()
        for name in self._ordered():
            reconciler = self.reconcilers.get(name)
            if reconciler is None:
                plan.systems.append(SystemPlan(name, skipped=self.skipped[name]))
                continue
            actual = await reconciler.observe(desired)
            plan.systems.append(
                SystemPlan(name, reconciler.target, reconciler.plan(desired, actual))
            )
        return plan

    async def plan_delete(self, tenant: str, declared: Sequence[TenantSpec]) -> TenantPlan:
        """The entries that remove ``tenant`` from every system, and nothing else."""
        from llmflow.tenancy.buckets import ObjectStoreReconciler

        remaining = [t for t in declared if t.name != tenant]
        plan = TenantPlan()
        for name in self._ordered():
            reconciler = self.reconcilers.get(name)
            if reconciler is None:
                plan.systems.append(SystemPlan(name, skipped=self.skipped[name]))
                continue
            actual = await reconciler.observe(remaining)
            if isinstance(reconciler, ObjectStoreReconciler):
                # A removed tenant's non-empty bucket is kept by apply; delete purges it.
                changes = reconciler.purge_changes(tenant, actual)
            else:
                changes = [
                    c
                    for c in reconciler.plan(remaining, actual)
                    if c.tenant == tenant and c.pending
                ]
            plan.systems.append(SystemPlan(name, reconciler.target, changes))
        return plan

    async def apply(self, plan: TenantPlan) -> list[PlannedChange]:
        """Perform ``plan``; returns the entries performed.

        A failure stops at the failing system with an error naming it; the systems before it
        stay applied and a new plan continues from there.
        """
        done: list[PlannedChange] = []
        for system in plan.systems:
            reconciler = self.reconcilers.get(system.system)
            if reconciler is None or system.skipped:
                continue
            done += await reconciler.apply(system.changes)
        return done

    async def aclose(self) -> None:
        """Close every reconciler's connections."""
        for reconciler in self.reconcilers.values():
            await reconciler.aclose()
