"""Kubernetes reconciler: tenant namespaces rendered to files always, applied when a cluster
is configured.

Without a cluster the rendered directory is the state: a second ``apply`` renders the same
files and plans nothing, a hand-edited file is drift. With a cluster the live objects are the
state (GET per object, label-selected lists for objects and namespaces this control plane
made that are no longer declared), and changes go through server-side apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llmflow.tenancy.k8s_api import NAMESPACED_KINDS, KubernetesApi
from llmflow.tenancy.k8s_manifests import (
    FIELD_MANAGER,
    MANAGED_BY,
    TENANT_LABEL,
    Manifest,
    ObjectRef,
    all_manifests,
    ref_of,
)
from llmflow.tenancy.reconciler import Operation, PlannedChange, Reconciler, drift, summary
from llmflow.tenancy.spec import TenantSpec

SYSTEM = "kubernetes"
_HEADER = (
    "# Rendered by `llmflow tenant apply` for tenant {tenant}: every apply rewrites this file.\n"
    "# Edit tenants.yaml instead; a hand edit here is reported as drift.\n"
)
_MANAGED_SELECTOR = f"{MANAGED_BY}={FIELD_MANAGER}"


@dataclass
class KubernetesState:
    """Rendered files per tenant, and (with a cluster) the live objects."""

    rendered: dict[str, list[Manifest]] = field(default_factory=dict)
    live: dict[ObjectRef, Manifest] | None = None
    # Namespaces carrying our labels: namespace -> tenant.
    managed_namespaces: dict[str, str] = field(default_factory=dict)


def read_rendered(directory: Path) -> dict[str, list[Manifest]]:
    """The manifests of each ``<tenant>.yaml`` this control plane rendered into ``directory``."""
    out: dict[str, list[Manifest]] = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        if not text.startswith("# Rendered by `llmflow tenant apply`"):
            continue  # not ours: never read as state, never deleted
        out[path.stem] = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    return out


class KubernetesReconciler(Reconciler[KubernetesState]):
    """Namespace, ResourceQuota, LimitRange, NetworkPolicies and RoleBindings per tenant."""

    system = SYSTEM

    def __init__(
        self,
        manifests_dir: Path,
        api: KubernetesApi | None = None,
        *,
        namespace_prefix: str = "",
        group_prefix: str = "oidc:",
    ) -> None:
        self.manifests_dir = manifests_dir
        self.api = api
        self.namespace_prefix = namespace_prefix
        self.group_prefix = group_prefix

    @property
    def target(self) -> str:
        if self.api is None:
            return f"{self.manifests_dir} (render only: no cluster configured)"
        return f"{self.api.base_url} (manifests also rendered to {self.manifests_dir})"

    def desired_manifests(self, desired: Sequence[TenantSpec]) -> dict[str, list[Manifest]]:
        """Every tenant's manifests under this reconciler's prefixes."""
        return all_manifests(
            desired, namespace_prefix=self.namespace_prefix, group_prefix=self.group_prefix
        )

    async def observe(self, desired: Sequence[TenantSpec]) -> KubernetesState:
        state = KubernetesState(rendered=read_rendered(self.manifests_dir))
        if self.api is None:
            return state
        state.live = {}
        for ns in await self.api.list(
            "Namespace", label_selector=f"{_MANAGED_SELECTOR},{TENANT_LABEL}"
        ):
            labels = (ns.get("metadata") or {}).get("labels") or {}
            state.managed_namespaces[ns["metadata"]["name"]] = str(labels.get(TENANT_LABEL))
        for manifests in self.desired_manifests(desired).values():
            namespace_exists = False
            for manifest in manifests:
                ref = ref_of(manifest)
                if ref.kind == "Namespace":
                    live = await self.api.get(ref)
                    namespace_exists = live is not None
                elif namespace_exists:
                    live = await self.api.get(ref)
                else:
                    live = None  # nothing lives in a namespace that does not exist
                if live is not None:
                    state.live[ref] = live
            if namespace_exists:
                ns_name = ref_of(manifests[0]).name
                for kind in NAMESPACED_KINDS:
                    for item in await self.api.list(kind, ns_name, _MANAGED_SELECTOR):
                        state.live.setdefault(ref_of(item), item)
        return state

    def plan(self, desired: Sequence[TenantSpec], actual: KubernetesState) -> list[PlannedChange]:
        wanted = self.desired_manifests(desired)
        changes: list[PlannedChange] = []
        if actual.live is None:
            for tenant, manifests in wanted.items():
                rendered = {ref_of(m): m for m in actual.rendered.get(tenant, [])}
                for manifest in manifests:
                    changes.append(self._compare(tenant, manifest, rendered.get(ref_of(manifest))))
            for tenant in sorted(set(actual.rendered) - set(wanted)):
                for manifest in actual.rendered[tenant]:
                    changes.append(self._delete(tenant, ref_of(manifest), "tenant removed"))
            return changes
        live = actual.live
        wanted_refs = {ref_of(m) for ms in wanted.values() for m in ms}
        for tenant, manifests in wanted.items():
            for manifest in manifests:
                changes.append(self._compare(tenant, manifest, live.get(ref_of(manifest))))
            namespace = ref_of(manifests[0]).name
            for ref in sorted(live, key=str):
                if ref.namespace == namespace and ref not in wanted_refs:
                    changes.append(self._delete(tenant, ref, "no longer declared"))
        declared_namespaces = {ref_of(ms[0]).name for ms in wanted.values()}
        for namespace, tenant in sorted(actual.managed_namespaces.items()):
            if namespace not in declared_namespaces:
                changes.append(
                    self._delete(
                        tenant,
                        ObjectRef("Namespace", "", namespace),
                        "tenant removed: deletes every object in the namespace",
                    )
                )
        return changes

    def _compare(self, tenant: str, manifest: Manifest, current: Manifest | None) -> PlannedChange:
        ref = ref_of(manifest)
        if current is None:
            operation, detail = Operation.CREATE, ""
        elif paths := drift(manifest, current):
            operation, detail = Operation.UPDATE, summary(paths)
        else:
            operation, detail = Operation.UNCHANGED, ""
        return PlannedChange(
            SYSTEM, ref.kind, str(ref), operation, tenant, detail, payload=manifest
        )

    def _delete(self, tenant: str, ref: ObjectRef, detail: str) -> PlannedChange:
        return PlannedChange(SYSTEM, ref.kind, str(ref), Operation.DELETE, tenant, detail, ref)

    async def apply(self, changes: Sequence[PlannedChange]) -> list[PlannedChange]:
        done: list[PlannedChange] = []
        for change in changes:
            if not change.pending:
                continue
            if self.api is not None:
                if change.operation is Operation.DELETE:
                    await self.api.delete(change.payload)
                else:
                    await self.api.apply(change.payload)
            done.append(change)
        self._render(changes)
        return done

    def _render(self, changes: Sequence[PlannedChange]) -> None:
        """Rewrite the files of the tenants ``changes`` keep; remove those of removed ones."""
        keep: dict[str, list[Manifest]] = {}
        removed: set[str] = set()
        for change in changes:
            if change.tenant is None:
                continue
            if change.operation is Operation.DELETE:
                removed.add(change.tenant)
            else:
                keep.setdefault(change.tenant, []).append(change.payload)
        self.manifests_dir.mkdir(parents=True, exist_ok=True)
        for tenant, manifests in keep.items():
            text = _HEADER.format(tenant=tenant) + yaml.safe_dump_all(
                manifests, sort_keys=False, allow_unicode=True
            )
            path = self.manifests_dir / f"{tenant}.yaml"
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")
        for tenant in removed - set(keep):
            path = self.manifests_dir / f"{tenant}.yaml"
            if path.exists() and tenant in read_rendered(self.manifests_dir):
                path.unlink()

    async def aclose(self) -> None:
        if self.api is not None:
            await self.api.aclose()
