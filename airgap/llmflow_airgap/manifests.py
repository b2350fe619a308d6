"""Our own Kubernetes manifests (`platform.yaml` `manifests:`), applied by `install`.

Every entry is a repo-relative glob (or `{path, profiles}`); `build --platform` ships the files
under `distribution/`, so the install host reads them from the bundle. Each file becomes one
install step `manifests/<file>` whose documents are sent with **server-side apply**
(`PATCH <object path>?fieldManager=llmflow-airgap&force=true`,
`Content-Type: application/apply-patch+yaml`), creating or updating the object; applying
again is harmless, and the API server, not the installer, merges the fields.

Order, fixed and shown by `install --dry-run`:

1. files that hold only `Namespace` objects, before the first Helm release, so the
   namespaces carry their pod-security labels before any chart creates a pod in them
   (`--create-namespace` would otherwise create them bare);
2. every other file after the last release (and its gates): NetworkPolicies, ConfigMaps read
   by the gateway, HPAs and PodDisruptionBudgets of workloads the charts created.

Within a phase, files keep the order of `platform.yaml`, a glob's matches sorted by path; a
file matched by two entries is applied once. A file that mixes `Namespace` objects with
other kinds is refused (the phases could not both be honoured).

Kinds map to REST paths through the static `KINDS` table (API group and kind -> resource
plural and scope; the version is the document's own). A kind outside the table is refused
with the file and the kind named: the installer has no discovery client and does not guess
plurals. Namespaced objects must name their namespace (there is no default to fall back on).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from llmflow_airgap.errors import AirgapError
from llmflow_airgap.kube import KubeClient, KubernetesError
from llmflow_airgap.platform import Platform, Profile

FIELD_MANAGER = "llmflow-airgap"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"


class ManifestError(AirgapError):
    """A manifest cannot be read, mapped to an API path, or applied."""


@dataclass(frozen=True)
class ResourceKind:
    """Where a kind lives in the API: its resource plural and whether it is namespaced."""

    plural: str
    namespaced: bool


# (API group, kind) -> resource. The core group is "". Only kinds the platform ships or is
# likely to ship; extend it deliberately, never by guessing a plural.
KINDS: dict[tuple[str, str], ResourceKind] = {
    ("", "Namespace"): ResourceKind("namespaces", namespaced=False),
    ("", "ConfigMap"): ResourceKind("configmaps", namespaced=True),
    ("", "Secret"): ResourceKind("secrets", namespaced=True),
    ("", "Service"): ResourceKind("services", namespaced=True),
    ("", "ServiceAccount"): ResourceKind("serviceaccounts", namespaced=True),
    ("", "LimitRange"): ResourceKind("limitranges", namespaced=True),
    ("", "ResourceQuota"): ResourceKind("resourcequotas", namespaced=True),
    ("apps", "Deployment"): ResourceKind("deployments", namespaced=True),
    ("apps", "StatefulSet"): ResourceKind("statefulsets", namespaced=True),
    ("apps", "DaemonSet"): ResourceKind("daemonsets", namespaced=True),
    ("batch", "Job"): ResourceKind("jobs", namespaced=True),
    ("batch", "CronJob"): ResourceKind("cronjobs", namespaced=True),
    ("autoscaling", "HorizontalPodAutoscaler"): ResourceKind(
        "horizontalpodautoscalers", namespaced=True
    ),
    ("policy", "PodDisruptionBudget"): ResourceKind("poddisruptionbudgets", namespaced=True),
    ("networking.k8s.io", "NetworkPolicy"): ResourceKind("networkpolicies", namespaced=True),
    ("networking.k8s.io", "Ingress"): ResourceKind("ingresses", namespaced=True),
    ("rbac.authorization.k8s.io", "Role"): ResourceKind("roles", namespaced=True),
    ("rbac.authorization.k8s.io", "RoleBinding"): ResourceKind("rolebindings", namespaced=True),
    ("rbac.authorization.k8s.io", "ClusterRole"): ResourceKind("clusterroles", namespaced=False),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): ResourceKind(
        "clusterrolebindings", namespaced=False
    ),
    ("scheduling.k8s.io", "PriorityClass"): ResourceKind("priorityclasses", namespaced=False),
    ("monitoring.coreos.com", "ServiceMonitor"): ResourceKind("servicemonitors", namespaced=True),
    ("monitoring.coreos.com", "PrometheusRule"): ResourceKind("prometheusrules", namespaced=True),
    # CloudNativePG >= 1.25 declarative databases (the tenants' Dify databases, dify_cluster).
    ("postgresql.cnpg.io", "Database"): ResourceKind("databases", namespaced=True),
}


class Phase(StrEnum):
    """When a manifest file is applied relative to the Helm releases."""

    BEFORE_RELEASES = "before-releases"
    AFTER_RELEASES = "after-releases"


@dataclass(frozen=True)
class ManifestObject:
    """One document of a manifest file with the API path it is applied at."""

    api_version: str
    kind: str
    name: str
    namespace: str | None
    path: str
    body: dict[str, Any]

    def label(self) -> str:
        """`Kind namespace/name` (or `Kind name` when cluster-scoped)."""
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


@dataclass
class ManifestApply:
    """One manifest file: one install step."""

    file: str
    phase: Phase
    objects: list[ManifestObject] = field(default_factory=list)

    @property
    def step_id(self) -> str:
        """State key of the file."""
        return f"manifests/{self.file}"

    def fingerprint(self) -> str:
        """sha256 of what is applied: a changed document re-applies the file on `--resume`."""
        text = json.dumps([[o.path, o.body] for o in self.objects], sort_keys=True, default=str)
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def resource_path(
    api_version: str, kind: str, name: str, namespace: str | None, source: str
) -> str:
    """The REST path of one object, from the static `KINDS` table."""
    group, _, version = api_version.rpartition("/")
    resource = KINDS.get((group, kind))
    if resource is None:
        known = ", ".join(sorted(f"{g or 'core'}/{k}" for g, k in KINDS))
        raise ManifestError(
            f"{source}: kind {kind} of API group {group or 'core'} ({api_version}) is not "
            f"one install knows how to apply (known: {known})"
        )
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    if resource.namespaced:
        if not namespace:
            raise ManifestError(
                f"{source}: {kind} {name} is namespaced but sets no metadata.namespace"
            )
        return f"{prefix}/namespaces/{namespace}/{resource.plural}/{name}"
    if namespace:
        raise ManifestError(
            f"{source}: {kind} {name} is cluster-scoped but sets metadata.namespace {namespace}"
        )
    return f"{prefix}/{resource.plural}/{name}"


def _object(document: Any, source: str) -> ManifestObject:
    if not isinstance(document, dict):
        raise ManifestError(f"{source}: not a Kubernetes object (a YAML mapping)")
    api_version = document.get("apiVersion")
    kind = document.get("kind")
    metadata = document.get("metadata")
    if not isinstance(api_version, str) or not api_version or not isinstance(kind, str):
        raise ManifestError(f"{source}: apiVersion and kind are required")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        raise ManifestError(f"{source}: {kind} has no metadata.name")
    name = str(metadata["name"])
    namespace = metadata.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise ManifestError(f"{source}: {kind} {name}: metadata.namespace is not a string")
    path = resource_path(api_version, kind, name, namespace, source)
    return ManifestObject(api_version, kind, name, namespace or None, path, document)


def load_manifest(root: Path, rel: str) -> ManifestApply:
    """Read one multi-document file (empty documents skipped) and choose its phase."""
    path = root / rel
    try:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"manifest {rel} cannot be read: {exc}") from exc
    objects = [
        _object(document, f"{rel} (document {index})")
        for index, document in enumerate(documents, start=1)
        if document is not None
    ]
    if not objects:
        raise ManifestError(f"manifest {rel} holds no Kubernetes object")
    namespaces = sum(1 for o in objects if o.kind == "Namespace")
    if namespaces and namespaces != len(objects):
        raise ManifestError(
            f"manifest {rel} mixes Namespace objects with other kinds: keep Namespaces in a file "
            "of their own (applied before the Helm releases; everything else after them)"
        )
    phase = Phase.BEFORE_RELEASES if namespaces else Phase.AFTER_RELEASES
    return ManifestApply(file=rel, phase=phase, objects=objects)


def _expand(root: Path, pattern: str) -> list[str]:
    pure = PurePosixPath(pattern)
    if pure.is_absolute() or ".." in pure.parts:
        raise ManifestError(f"manifests entry {pattern!r} must be a path inside the distribution")
    matches = sorted(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file())
    if not matches:
        raise ManifestError(
            f"manifests entry {pattern!r} of platform.yaml matches no file in {root}"
        )
    return matches


def plan_manifests(root: Path, platform: Platform, profile: Profile) -> list[ManifestApply]:
    """The manifest files of `profile`: namespaces first, then the rest (each in file order)."""
    files: dict[str, None] = {}
    for pattern in platform.manifests_for(profile):
        files.update(dict.fromkeys(_expand(root, pattern)))
    loaded = [load_manifest(root, rel) for rel in files]
    return [m for m in loaded if m.phase is Phase.BEFORE_RELEASES] + [
        m for m in loaded if m.phase is Phase.AFTER_RELEASES
    ]


def apply_manifest(kube: KubeClient, manifest: ManifestApply) -> dict[str, Any]:
    """Server-side apply every object of one file; what was created and updated."""
    created: list[str] = []
    updated: list[str] = []
    for obj in manifest.objects:
        try:
            code = kube.apply(obj.path, obj.body, field_manager=FIELD_MANAGER)
        except KubernetesError as exc:
            raise ManifestError(f"{manifest.file}: {obj.label()}: {exc}") from exc
        (created if code == 201 else updated).append(obj.label())
    return {"objects": len(manifest.objects), "created": created, "updated": updated}
