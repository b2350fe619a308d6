"""A small distribution to install: a chart packaged with helm-python-sdk, values with every
image spelling the air-gap overlay must handle, locked and built against `oci_world`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from oci_world import World

OVERLAY_HOST = "registry.site.internal"
CHART_NAME = "webapp"
CHART_VERSION = "0.3.0"

_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: 1
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      containers:
        - name: main
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
        {{- with .Values.sidecar }}
        - name: sidecar
          image: "{{ .image }}"
        {{- end }}
        {{- with .Values.exporter }}
        - name: exporter
          image: "{{ .registry }}/{{ .repository }}:{{ .tag }}"
        {{- end }}
"""


_FAKE_HELM = """#!/bin/sh
# Records its arguments and the values file it was given, answers like `helm ... -o json`.
printf '%s\\n' "$@" > "$HELM_RECORD/args"
while [ $# -gt 0 ]; do
  if [ "$1" = "-f" ]; then cp "$2" "$HELM_RECORD/values"; fi
  shift
done
if [ -n "$HELM_FAIL" ]; then echo "Error: UPGRADE FAILED: context deadline exceeded" >&2; exit 1; fi
echo '{"name":"web","namespace":"ns","version":3,"info":{"status":"deployed"},
"chart":{"metadata":{"name":"webapp","version":"0.3.0"}}}'
"""


# Our own manifests (platform.yaml `manifests:`), as the real distribution lays them out.
MANIFESTS: dict[str, str] = {
    "policies/k8s/namespaces.yaml": """\
# an empty first document: skipped
---
apiVersion: v1
kind: Namespace
metadata:
  name: llmflow-system
  labels:
    pod-security.kubernetes.io/enforce: restricted
""",
    "policies/k8s/networkpolicies/llmflow-system.yaml": """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: llmflow-system}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
---
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-dns, namespace: llmflow-system}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{ports: [{port: 53, protocol: UDP}]}]
""",
    "platform/manifests/routes.yaml": """\
apiVersion: v1
kind: ConfigMap
metadata: {name: routes, namespace: llmflow-system}
data: {routes.yaml: "routes: []"}
""",
    "platform/manifests/ha-autoscaling.yaml": """\
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: front, namespace: llmflow-system}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: front}
  minReplicas: 2
  maxReplicas: 4
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: front, namespace: llmflow-system}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: front}}
""",
}
# the manifests file of platform.yaml: a file, a glob, and one file for profile ha only
MANIFEST_ENTRIES: list[Any] = [
    "policies/k8s/namespaces.yaml",
    "policies/k8s/networkpolicies/*.yaml",
    "platform/manifests/routes.yaml",
    {"path": "platform/manifests/ha-autoscaling.yaml", "profiles": ["ha"]},
]


def write_fake_helm(path: Path) -> Path:
    """A stand-in `helm` executable (no helm binary exists on this machine): it records its
    arguments and values file under $HELM_RECORD and prints a release like `-o json` does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_FAKE_HELM, encoding="utf-8")
    path.chmod(0o755)
    return path


def package_chart(
    root: Path, charts_dir: Path, name: str = CHART_NAME, version: str = CHART_VERSION
) -> Path:
    """Write a chart directory and package it with helm-python-sdk (Helm's own packager)."""
    import helm_python as helm

    chart = root / name
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v2", "name": name, "version": version, "appVersion": "1"}),
        encoding="utf-8",
    )
    (chart / "values.yaml").write_text(
        "image:\n  repository: docker.io/llmflowtest/web\n  tag: '1.0'\n", encoding="utf-8"
    )
    (chart / "templates" / "deployment.yaml").write_text(_DEPLOYMENT, encoding="utf-8")
    charts_dir.mkdir(parents=True, exist_ok=True)
    return Path(helm.package(chart, destination=charts_dir))


def _component(name: str, images: list[str], depends: list[str], port: int) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"{name} test component",
        "layer": "application",
        "namespace": "llmflow-system",
        "chart": {
            "repository": "https://charts.example.com/stable",
            "name": CHART_NAME,
            "version": CHART_VERSION,
            "licence": "MIT",
        },
        "appVersion": "1.0",
        "appLicence": "MIT",
        "why": "test",
        "profiles": ["minimal", "standard", "ha"],
        "images": images,
        "dependsOn": depends,
        "values": {
            "base": f"helm-values/{name}/values.yaml",
            "airgap": f"helm-values/{name}/values-airgap.yaml",
        },
        "healthChecks": [
            {"kind": "rollout", "target": f"deployment/{name}", "timeoutSeconds": 30},
            {"kind": "http", "target": f"service/{name}", "port": port, "path": "/healthz"},
        ],
    }


@dataclass
class InstallWorld:
    """The distribution root, its platform.yaml, the lockfile and the built bundle."""

    root: Path
    platform_file: Path
    charts_dir: Path
    lockfile: Path
    bundle: Path
    web_digest: str
    worker_digest: str
    public_key: Path


# `with_dify`: a `dify` component (chart `dify` 0.37.0 as the glue's tenant overlays name it,
# scope tenant, instance-per-tenant) on the shared stores its values point at.
DIFY_CHART_VERSION = "0.37.0"
DIFY_VALUES: dict[str, Any] = {
    "replicaCount": 1,
    "externalPostgres": {
        "address": "llmflow-pg-rw.llmflow-data.svc",
        "database": {"api": "dify", "pluginDaemon": "dify_plugin"},
    },
    "externalRedis": {"host": "valkey-redis-ha-haproxy.llmflow-data.svc"},
    "externalS3": {"bucketName": {"api": "dify", "pluginDaemon": "dify-plugins"}},
}


def _dify_component() -> dict[str, Any]:
    dify = _component("dify", ["docker.io/llmflowtest/web:1.0"], ["store"], 5001)
    dify["scope"] = "tenant"
    dify["chart"] = {**dify["chart"], "name": "dify", "version": DIFY_CHART_VERSION}
    dify["healthChecks"] = [
        {"kind": "http", "target": "service/dify-api", "port": 5001, "path": "/health"}
    ]
    return dify


def build_install_world(world: World, root: Path, with_dify: bool = False) -> InstallWorld:
    """Write the distribution, then `lock` and `build` it through the CLI."""
    from llmflow_airgap.cli import main

    charts_dir = root / "charts"
    package_chart(root / "chart-src", charts_dir)
    if with_dify:
        package_chart(root / "dify-chart-src", charts_dir, "dify", DIFY_CHART_VERSION)
    profiles = {
        p: {
            "description": p,
            "nodes": 1,
            "gpus": 0,
            "replicasFrom": "test",
            "podDisruptionBudgets": False,
            "autoscaling": False,
        }
        for p in ("minimal", "standard", "ha")
    }
    store = _component("store", ["docker.io/llmflowtest/worker:1.0"], [], 8080)
    front = _component(
        "front", ["docker.io/llmflowtest/web:1.0", "ghcr.io/llmflowtest/api:2.0"], ["store"], 3000
    )
    document = {
        "apiVersion": "llmflow.io/v1alpha1",
        "kind": "Platform",
        "metadata": {"name": "llmflow-install-test", "version": "0.2.0"},
        "registry": {"host": OVERLAY_HOST, "pullSecret": "regcred"},
        "tenancy": {"difyMode": "shared"},
        "namespaces": [{"name": "llmflow-system", "purpose": "t", "podSecurity": "restricted"}],
        "profiles": profiles,
        # front first in the file: the install order must still put store before it
        "components": [front, store],
        "manifests": MANIFEST_ENTRIES,
        "monitoring": {"provisionedBy": "store", "ruleFiles": [], "dashboards": []},
    }
    if with_dify:
        document["tenancy"] = {"difyMode": "instance-per-tenant"}
        document["components"] = [front, store, _dify_component()]
    platform_file = root / "platform" / "platform.yaml"
    platform_file.parent.mkdir(parents=True)
    for rel, text in MANIFESTS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    platform_file.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    values = {
        "store": (
            {"replicaCount": 1},
            {"image": {"repository": f"{OVERLAY_HOST}/llmflowtest/worker", "tag": "1.0"}},
        ),
        "front": (
            {"replicaCount": 2},
            {
                "image": {"repository": f"{OVERLAY_HOST}/llmflowtest/web", "tag": "1.0"},
                # Already pinned by digest: the rewrite must keep the digest intact.
                "sidecar": {"image": f"{OVERLAY_HOST}/llmflowtest/web:1.0@{world.web.digest}"},
                # Split registry/repository spelling (Bitnami style).
                "exporter": {
                    "registry": OVERLAY_HOST,
                    "repository": "llmflowtest/api",
                    "tag": "2.0",
                },
            },
        ),
    }
    if with_dify:
        # the CNPG Cluster's databases (helm-values/postgresql): the owner of Dify's database
        values["store"] = (
            {**values["store"][0], "databases": [{"name": "dify", "owner": "dify"}]},
            values["store"][1],
        )
        values["dify"] = (
            DIFY_VALUES,
            {"image": {"repository": f"{OVERLAY_HOST}/llmflowtest/web", "tag": "1.0"}},
        )
    for name, (base, airgap) in values.items():
        folder = root / "helm-values" / name
        folder.mkdir(parents=True)
        (folder / "values.yaml").write_text(yaml.safe_dump(base), encoding="utf-8")
        (folder / "values-airgap.yaml").write_text(yaml.safe_dump(airgap), encoding="utf-8")
    lockfile = root / "platform.lock.yaml"
    sources = [
        *world.cli_sources()[: 2 * len(world.registry_mirrors)],
        "--charts-dir",
        str(charts_dir),
    ]
    assert main(["lock", "--platform", str(platform_file), "-o", str(lockfile), *sources]) == 0
    bundle = root / "bundle"
    args = ["build", "--lock", str(lockfile), "-o", str(bundle), "--key", str(world.private_key)]
    # the bundle carries the distribution files, so install needs nothing else
    assert main([*args, *sources, "--platform", str(platform_file)]) == 0
    return InstallWorld(
        root=root,
        platform_file=platform_file,
        charts_dir=charts_dir,
        lockfile=lockfile,
        bundle=bundle,
        web_digest=world.web.digest,
        worker_digest=world.worker.digest,
        public_key=world.public_key,
    )
