"""The Kubernetes objects of one tenant, as plain manifests (no I/O).

Per tenant: a Namespace, a ResourceQuota (CPU, memory, ``requests.nvidia.com/gpu``), a
LimitRange giving every container defaults (a quota on ``limits.*`` refuses pods without
limits otherwise), NetworkPolicies and RoleBindings for the tenant's groups.

NetworkPolicies follow seed 004 §3.2 — deny everything, then allow ingress from the tenant's
own namespace and ``llmflow-system``, egress to the tenant's own namespace, ``llmflow-data``
and ``llmflow-inference`` — split into one default-deny policy plus one policy per allowance
(the pattern of policies/k8s/networkpolicies/). DNS egress to kube-dns is added: without it a
default-deny namespace cannot resolve the service names the seed's allowances point at.
Namespaces are selected by ``kubernetes.io/metadata.name``, which the API server sets and
tenants cannot forge, rather than the seed's hand-set ``name`` label (kept on the namespace
for compatibility).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmflow.tenancy.spec import GroupBinding, TenantSpec

MANAGED_BY = "app.kubernetes.io/managed-by"
TENANT_LABEL = "llmflow.io/tenant"
FIELD_MANAGER = "llmflow"
PLATFORM_INGRESS = ("llmflow-system",)
PLATFORM_EGRESS = ("llmflow-data", "llmflow-inference")
# Every container of a tenant gets these unless it says otherwise (LimitRange).
CONTAINER_DEFAULTS = {"cpu": "1", "memory": "2Gi"}
CONTAINER_DEFAULT_REQUESTS = {"cpu": "250m", "memory": "512Mi"}

Manifest = dict[str, Any]


@dataclass(frozen=True)
class ObjectRef:
    """Identity of a Kubernetes object: kind, namespace (``""`` if cluster-scoped), name."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


def ref_of(manifest: Manifest) -> ObjectRef:
    """The identity of ``manifest``."""
    meta = manifest.get("metadata") or {}
    return ObjectRef(str(manifest["kind"]), str(meta.get("namespace") or ""), str(meta["name"]))


def namespace_of(tenant: str, prefix: str = "") -> str:
    """The tenant's namespace name."""
    return f"{prefix}{tenant}"


def _labels(tenant: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/part-of": "llmflow",
        MANAGED_BY: FIELD_MANAGER,
        TENANT_LABEL: tenant,
    }


def _meta(name: str, namespace: str, tenant: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": _labels(tenant)}


def _ns_peer(namespace: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}


def _network_policies(ns: str, tenant: str) -> list[Manifest]:
    api = "networking.k8s.io/v1"
    everything: dict[str, Any] = {}
    return [
        {
            "apiVersion": api,
            "kind": "NetworkPolicy",
            "metadata": _meta("default-deny", ns, tenant),
            "spec": {"podSelector": everything, "policyTypes": ["Ingress", "Egress"]},
        },
        {
            "apiVersion": api,
            "kind": "NetworkPolicy",
            "metadata": _meta("allow-same-namespace", ns, tenant),
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": {}}]}],
                "egress": [{"to": [{"podSelector": {}}]}],
            },
        },
        {
            "apiVersion": api,
            "kind": "NetworkPolicy",
            "metadata": _meta("allow-from-platform", ns, tenant),
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [_ns_peer(n) for n in PLATFORM_INGRESS]}],
            },
        },
        {
            "apiVersion": api,
            "kind": "NetworkPolicy",
            "metadata": _meta("allow-to-platform", ns, tenant),
            "spec": {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"to": [_ns_peer(n) for n in PLATFORM_EGRESS]}],
            },
        },
        {
            "apiVersion": api,
            "kind": "NetworkPolicy",
            "metadata": _meta("allow-dns", ns, tenant),
            "spec": {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                **_ns_peer("kube-system"),
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                            }
                        ],
                        "ports": [
                            {"protocol": "UDP", "port": 53},
                            {"protocol": "TCP", "port": 53},
                        ],
                    }
                ],
            },
        },
    ]


def _quota(ns: str, tenant: TenantSpec) -> Manifest:
    hard: dict[str, Any] = {}
    q = tenant.quotas
    if q.cpu is not None:
        hard["requests.cpu"] = q.cpu
        hard["limits.cpu"] = q.cpu
    if q.memory is not None:
        hard["requests.memory"] = q.memory
        hard["limits.memory"] = q.memory
    # Extended resources are quota'd on requests only (they cannot be overcommitted); a zero
    # quota is written too, so that a tenant without GPUs cannot schedule one.
    hard["requests.nvidia.com/gpu"] = str(q.gpus)
    if q.pods is not None:
        hard["pods"] = str(q.pods)
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _meta("tenant-quota", ns, tenant.name),
        "spec": {"hard": hard},
    }


def _limit_range(ns: str, tenant: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": _meta("tenant-defaults", ns, tenant),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": dict(CONTAINER_DEFAULTS),
                    "defaultRequest": dict(CONTAINER_DEFAULT_REQUESTS),
                }
            ]
        },
    }


def default_bindings(tenant: str) -> tuple[GroupBinding, ...]:
    """The tenant's Keycloak group (full path, as the ``groups`` claim carries it) → view."""
    return (GroupBinding(group=f"/tenants/{tenant}", cluster_role="view"),)


def _binding_name(binding: GroupBinding) -> str:
    role = re.sub(r"[^a-z0-9-]+", "-", binding.cluster_role.lower()).strip("-")
    digest = hashlib.sha256(binding.group.encode()).hexdigest()[:8]
    return f"tenant-{role}-{digest}"[:63]


def _role_bindings(ns: str, tenant: TenantSpec, group_prefix: str) -> list[Manifest]:
    bindings = tenant.role_bindings or default_bindings(tenant.name)
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(_binding_name(b), ns, tenant.name),
            "subjects": [
                {
                    "kind": "Group",
                    "apiGroup": "rbac.authorization.k8s.io",
                    "name": f"{group_prefix}{b.group}",
                }
            ],
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": b.cluster_role,
            },
        }
        for b in bindings
    ]


def tenant_manifests(
    tenant: TenantSpec, *, namespace_prefix: str = "", group_prefix: str = "oidc:"
) -> list[Manifest]:
    """Every object of ``tenant``, Namespace first (the order they must be applied in)."""
    ns = namespace_of(tenant.name, namespace_prefix)
    namespace: Manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": ns,
            "labels": {
                "name": ns,
                **_labels(tenant.name),
                # Training and notebook images often run as root: enforce baseline, warn on
                # restricted, like the platform's own data/inference namespaces.
                "pod-security.kubernetes.io/enforce": "baseline",
                "pod-security.kubernetes.io/warn": "restricted",
            },
            "annotations": {"llmflow.io/display-name": tenant.display_name},
        },
    }
    return [
        namespace,
        _quota(ns, tenant),
        _limit_range(ns, tenant.name),
        *_network_policies(ns, tenant.name),
        *_role_bindings(ns, tenant, group_prefix),
    ]


def all_manifests(
    tenants: Sequence[TenantSpec], *, namespace_prefix: str = "", group_prefix: str = "oidc:"
) -> dict[str, list[Manifest]]:
    """Manifests per tenant name."""
    return {
        t.name: tenant_manifests(t, namespace_prefix=namespace_prefix, group_prefix=group_prefix)
        for t in tenants
    }
